"""Releases and their upstream files: which releases exist (``versions``, ``pypi``), what their
files hash to (``pins``), getting those files checked and cached (``wheel``, ``cache``,
``fetch``), and turning a command line's SPEC into them (``resolve``).

The bottom layer above ``patcher.errors``: it knows nothing of codemods.
"""
