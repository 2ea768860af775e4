"""Throwaway copies of this project's tree, for tests that change a codemod.

The working tree is never edited by a test: ``copy_tree`` copies ``patches/``, ``patcher/``
and a few pins into a temporary directory, and ``run_patcher`` runs ``python -m patcher``
there with that copy first on the path, as a user of that tree would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Releases of four distinct upstream files plus one sharing a file, and a late release (which
#: drifts or not depending on how far the series has come; tests ask, never assume).
SUBSET = ["4.38.0", "4.39.3", "4.40.0", "4.40.1", "4.40.2", "5.24.0"]
#: A change of the quantize codemod's template that changes every generating output.
QUANTIZE_EDIT = ("int8 weight-only linears (vacc).", "int8 weight-only linears for the vacc compiler.")


def copy_tree(dest: Path, versions: list[str] = SUBSET) -> Path:
    """``dest`` holding copies of patches/, patcher/ and the pins of ``versions``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for top in ("patches", "patcher"):
        shutil.copytree(ROOT / top, dest / top, ignore=ignore)
    (dest / "upstream_pins").mkdir()
    for version in versions:
        shutil.copy(ROOT / "upstream_pins" / f"{version}.json", dest / "upstream_pins")
    return dest


def edit(path: Path, old: str, new: str) -> None:
    """Replace ``old`` (which must occur) by ``new`` in ``path``."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def run_patcher(tree: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m patcher ARGS`` with ``tree``'s packages and pins (and ``env`` added)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PATCHER_PINS_DIR")}
    env = {**environ, **(env or {}), "PYTHONPATH": str(tree)}
    return subprocess.run(
        [sys.executable, "-m", "patcher", *args], cwd=tree, env=env, capture_output=True, text=True
    )
