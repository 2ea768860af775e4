"""``python -m patcher`` is the ``patcher`` console script."""

from patcher.cli import entry

entry()
