"""What keeps the series honest over time: the output lock (``lockfile``, ``check``), review
of a change against another commit (``gitsource``, ``review``, ``review_render``), the shape
matrix (``matrix``) and following upstream (``update``).

The top layer below the CLI: imports ``verify``, ``deploy``, ``series`` and ``upstream``.
"""
