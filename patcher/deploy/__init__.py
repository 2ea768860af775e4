"""Putting outputs where they are used: an output directory (``write``, through ``atomicdir``)
and a model checkpoint (``checkpoint``, and the ``patcher install`` command in ``install``).

Imports ``series`` and ``upstream``.
"""
