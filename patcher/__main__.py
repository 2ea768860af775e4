"""``python -m patcher`` is the ``patcher`` console script."""

from patcher.console import entry

entry()
