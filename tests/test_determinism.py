"""Determinism (SPEC §9, issue 5): the same inputs give byte-identical outputs across runs,
processes and hash seeds, and the digests the lock recorded on another machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from releases import fetch

from patcher.series import lockfile

pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parent.parent
#: Three shape families far apart: three classes (4.38), the eager function (4.48), 5.x.
RELEASES = ["4.38.0", "4.48.0", "5.24.0"]
SEEDS = ("0", "4242")


def apply(argv: list[str], out: Path, seed: str, cwd: Path) -> dict:
    """``python -m patcher apply ... --json`` in a fresh process with the series forced to run."""
    env = {
        **os.environ,
        "PYTHONHASHSEED": seed,
        "PATCHER_OUTPUT_CACHE": "0",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "patcher", "apply", *argv, "--out", str(out), "--json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("version", RELEASES)
def test_byte_identical_across_processes_and_hash_seeds(version: str, tmp_path: Path) -> None:
    fetch(version)  # in the cache before the processes start
    reports = [apply(["--transformers", version], tmp_path / seed, seed, tmp_path) for seed in SEEDS]
    assert reports[0]["files"] == reports[1]["files"]
    assert reports[0]["codemods"] == reports[1]["codemods"]
    assert files(tmp_path / SEEDS[0]) == files(tmp_path / SEEDS[1])
    # and the digests recorded in the committed lock, on whichever machine wrote it
    assert lockfile.read_lock(lockfile.lock_path()).releases[version].outputs == reports[0]["files"]


def test_local_upstream_is_deterministic_too(tmp_path: Path) -> None:
    up = fetch("4.40.2")
    (tmp_path / "modeling_gemma.py").write_text(up.modeling)
    (tmp_path / "configuration_gemma.py").write_text(up.configuration)
    argv = ["--upstream", "modeling_gemma.py"]
    reports = [apply(argv, tmp_path / seed, seed, tmp_path) for seed in SEEDS]
    assert reports[0]["files"] == reports[1]["files"]
    assert files(tmp_path / SEEDS[0]) == files(tmp_path / SEEDS[1])
