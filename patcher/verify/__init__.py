"""Proving outputs right in each release's own environment (SPEC section 6).

``envs`` builds the environments, ``release`` verifies one output in one, ``command`` is
``patcher verify`` (one release, or all of them), and ``checks.py`` is the script that runs
inside an environment (no patcher imports: it is run by path).  Imports ``deploy``,
``series`` and ``upstream``.
"""
