"""The codemods of another commit, read through GitPython, and generation with them.

``materialise`` writes a commit's ``patches/`` and ``patcher/`` into a temporary directory
(the working tree and the index are never touched); :func:`run_sides` then runs
``patcher/series/regen.py`` as a worker process per tree, in parallel, so that the codemods of two
commits never share a process.  Both sides read the working tree's pins: the question is
what the codemods do to the same upstream files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from patcher.errors import PatcherError, UsageError
from patcher.progress import Bars
from patcher.series.contract import RUNNER

#: What shapes an output besides patches/: the runner (``contract.RUNNER``, which the output
#: cache key covers), as paths in a tree.
GENERATOR_FILES = tuple(f"patcher/series/{name}" for name in RUNNER)
TREES = ("patches", "patcher")
REGEN = Path(__file__).resolve().parent.parent / "series" / "regen.py"


def open_repo(path: Path):
    """The git repository holding ``path``; UsageError when there is none."""
    import git

    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise UsageError(
            f"{path} is not inside a git repository; run review from a patcher checkout"
        ) from None


def _fetch_hint(repo) -> str:
    """How to get a missing commit into this clone."""
    if (Path(repo.git_dir) / "shallow").exists():
        return (
            "this clone is shallow: fetch the history with `git fetch --unshallow` "
            "(in GitHub Actions, check out with fetch-depth: 0)"
        )
    return "fetch it first (e.g. `git fetch origin`)"


def resolve(repo, ref: str):
    """The commit ``ref`` names, present in the clone with its series; UsageError for an
    unknown ref, a commit the clone lacks (a shallow clone names commits it does not hold),
    and a commit from before the codemod series existed."""
    import git
    from gitdb.exc import BadName, BadObject

    errors = (BadName, BadObject, ValueError, git.GitCommandError)
    try:
        commit = repo.commit(ref)
    except errors:
        raise UsageError(f"unknown git ref {ref!r}; {_fetch_hint(repo)}") from None
    try:
        tree = commit.tree  # reads the commit object itself
    except errors:
        raise UsageError(
            f"git ref {ref!r} names commit {commit.hexsha[:12]}, which is not present in this clone; "
            f"{_fetch_hint(repo)}"
        ) from None
    try:
        tree / "patches" / "series"
    except KeyError:
        raise UsageError(
            f"git ref {ref!r} ({commit.hexsha[:12]}) has no series (patches/series): it is from before "
            "the codemods existed; give a later ref"
        ) from None
    except errors:
        raise UsageError(
            f"the files of git ref {ref!r} ({commit.hexsha[:12]}) are not present in this clone; "
            f"{_fetch_hint(repo)}"
        ) from None
    return commit


def materialise(commit, dest: Path) -> None:
    """Write ``patches/`` and ``patcher/`` of ``commit`` under ``dest``."""
    for top in TREES:
        try:
            tree = commit.tree / top
        except KeyError:
            raise UsageError(f"commit {commit.hexsha[:12]} has no {top}/; is it a patcher commit?") from None
        for item in tree.traverse():
            if item.type != "blob":
                continue
            target = dest / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.data_stream.read())


def changed_sources(commit, root: Path) -> list[str]:
    """Files under ``patches/`` (and the runner's modules) that differ between ``commit`` and
    the working tree at ``root``: the first signal of which codemods a change concerns."""
    import hashlib

    def blob_sha(data: bytes) -> str:
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    old: dict[str, str] = {}
    try:
        for item in (commit.tree / "patches").traverse():
            if item.type == "blob":
                old[item.path] = item.hexsha
    except KeyError:
        pass
    for path in GENERATOR_FILES:
        try:
            old[path] = (commit.tree / path).hexsha
        except KeyError:
            pass
    new: dict[str, str] = {}
    for path in (root / "patches").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            new[path.relative_to(root).as_posix()] = blob_sha(path.read_bytes())
    for rel in GENERATOR_FILES:
        if (root / rel).is_file():
            new[rel] = blob_sha((root / rel).read_bytes())
    return sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p))


def codemod_of(path: str) -> str | None:
    """The codemod a changed file is, when it is one (``patches/mask_helpers.py``)."""
    p = Path(path)
    if p.parent.as_posix() == "patches" and p.suffix == ".py" and not p.stem.startswith("_"):
        return p.stem.replace("_", "-")
    return None


@dataclass(frozen=True)
class Side:
    """One tree to generate with: where its packages are and what to call it."""

    name: str
    root: Path


def run_sides(sides: list[Side], request: dict, pins: Path, bars: Bars | None = None) -> dict[str, dict]:
    """Run the regen worker on each side in parallel; the JSON document of each, by name.

    Each worker prints ``[i/n] release`` lines on stderr as it goes; ``bars`` shows them."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATCHER_PINS_DIR"] = str(pins.resolve())
    with tempfile.TemporaryDirectory(prefix="patcher-sides-") as tmp:
        request_file = Path(tmp) / "request.json"
        request_file.write_text(json.dumps(request), encoding="utf-8")
        procs = {}
        try:
            for i, side in enumerate(sides):
                result, errors = Path(tmp) / f"result-{i}.json", Path(tmp) / f"stderr-{i}.txt"
                cmd = [sys.executable, str(REGEN), str(side.root.resolve()), str(request_file), str(result)]
                with open(errors, "w") as stderr:
                    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
                procs[side.name] = (proc, result, errors)
            _wait(procs, bars)
        except BaseException:  # Ctrl-C or an error: the workers stop with this process
            for proc, _, _ in procs.values():
                proc.kill()
                proc.wait()
            raise
        out = {}
        for name, (proc, result, errors) in procs.items():
            if proc.returncode != 0 or not result.is_file():
                lines = [ln for ln in errors.read_text(errors="replace").splitlines() if ln.strip()]
                last = lines[-1] if lines else f"exit code {proc.returncode}"
                raise PatcherError(f"generating with the codemods of {name} failed: {last}")
            out[name] = json.loads(result.read_text(encoding="utf-8"))
    return out


def _wait(procs: dict[str, tuple[subprocess.Popen, Path, Path]], bars: Bars | None) -> None:
    """Wait for every worker, feeding the last progress line of each to ``bars``."""
    while True:
        running = any(proc.poll() is None for proc, _, _ in procs.values())
        if bars is not None:
            for name, (_proc, _result, errors) in procs.items():
                lines = errors.read_text(errors="replace").splitlines()
                if lines:
                    bars.step(name, lines[-1])
        if not running:
            return
        time.sleep(0.2)
