"""Running the codemod series of ``patches/``: from upstream files to an output.

``contract`` (names, reports, digests) is the bottom; ``engine`` runs the series on one
file, ``notice`` writes the generated-file notice, ``generate`` makes one release's output,
``reuse`` keeps outputs in the output cache, ``batch`` and ``regen`` make many at once (and
``regen`` with the codemods of another commit); ``attribution``, ``diffing`` and ``claims``
say which codemod wrote which line and prove nothing else changed.  Imports ``upstream``.
"""
