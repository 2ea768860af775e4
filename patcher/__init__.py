"""patcher: regenerate and verify the vacc Gemma files for every transformers release.

The layers, bottom up, each importing only the ones below it (``tests/test_layout.py``):
``errors`` and ``progress`` (shared by all); ``upstream`` (releases, pins, fetching and
caching their files); ``series`` (running the codemods of ``patches/``: one output, many,
the output cache, attribution); ``deploy`` (writing outputs to a directory or a checkpoint);
``verify`` (proving outputs in each release's environment); ``ci`` (lock, check, review,
matrix, update); then the thin ``cli`` and ``console`` (the process entry point).
"""

__version__ = "0.1.0"
