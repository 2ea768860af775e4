"""patcher: regenerate and verify the vacc Gemma files for every transformers release.

The layers, bottom up: ``versions`` and ``pins`` (which releases exist and what their
files hash to), ``upstream`` (fetching and caching those files), ``engine`` (running the
codemod series of ``patches/``), then ``report``/``diffing``/``verify`` and the thin ``cli``.
"""

__version__ = "0.1.0"
