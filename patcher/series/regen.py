"""Regenerating every pinned release, in this process or in a tree of another commit.

Two jobs share this module:

- :func:`regenerate` gives the output (or the ``DriftError``) of many releases for
  ``patcher check``/``lock``.  It uses ``patcher.series.batch.generate_many`` (one series run per
  distinct pair of upstream files) when that module exists, and otherwise a loop over
  ``generate_cached`` that still runs a drifting upstream only once.
  :func:`release_steps` runs the series of one release keeping the source after every
  codemod, for attributing lines to codemods (:mod:`patcher.series.attribution`).
- Run as a script, ``python regen.py ROOT REQUEST RESULT``, it does the same with the
  ``patcher`` and ``patches`` packages found in ROOT (a tree materialised from a git commit,
  or the working tree) and writes JSON.  ``patcher review`` runs one such process per side,
  so two versions of the codemods never share a process.  That is why this module imports
  patcher only inside functions (through :func:`_module`), and why it tolerates older trees
  (no ``batch``, no output cache, and the flat ``patcher/`` of before the subpackages): it is
  the newer side's code driving the older side's packages.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from patcher.errors import DriftError
    from patcher.series.contract import Output
    from patcher.upstream.fetch import Upstream

Progress = Callable[[str], None]
T = TypeVar("T")

#: Where each module this worker uses lives: in this tree's layout, then in the flat layout of
#: trees from before patcher's subpackages (a ``review --base`` of an older commit).
_WHERE = {
    "batch": ("patcher.series.batch", "patcher.batch"),
    "reuse": ("patcher.series.reuse", "patcher.outputs"),
    "engine": ("patcher.series.engine", "patcher.engine"),
    "generate": ("patcher.series.generate", "patcher.generate"),
    "notice": ("patcher.series.notice", "patcher.generate"),
    "contract": ("patcher.series.contract", "patcher.outputs"),
    "pins": ("patcher.upstream.pins", "patcher.pins"),
    "fetch": ("patcher.upstream.fetch", "patcher.upstream"),
}


def _module(role: str):
    """The module playing ``role`` in the tree imported; ImportError when the tree has none."""
    for name in _WHERE[role]:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise  # a module of the tree failed to import something else: a real error
    raise ImportError(f"no {role} module ({' or '.join(_WHERE[role])})")


def regenerate(
    versions: list[str],
    *,
    jobs: int = 2,
    reuse: bool | None = None,
    progress: Progress | None = None,
    model: str = "gemma",
) -> dict[str, Output | DriftError]:
    """The output, or the drift error, of each pinned release in ``versions`` (of the family
    ``model``: another family than gemma goes through the loop, one release after the other).

    ``reuse``: take outputs from the output cache when their key matches (None: unless
    ``PATCHER_OUTPUT_CACHE=0``).  An output cache key is a digest of every codemod source, the
    series, the runner and both upstream digests, so a hit is the output those inputs give.
    """
    if model != "gemma":
        return _regenerate_loop(versions, reuse=reuse, progress=progress, model=model)
    try:
        generate_many = _module("batch").generate_many
    except ImportError:
        return _regenerate_loop(versions, reuse=reuse, progress=progress)
    return generate_many(list(versions), jobs=jobs, progress=progress, reuse=reuse)


def _regenerate_loop(
    versions: list[str], *, reuse: bool | None, progress: Progress | None, model: str = "gemma"
) -> dict[str, Output | DriftError]:
    """The same without ``patcher.series.batch``: one release at a time, drift shared per upstream."""
    import os

    from patcher.errors import DriftError

    pins, fetch = _module("pins"), _module("fetch")
    family = {} if model == "gemma" else {"model": model}  # older trees know gemma only
    pinned = pins.load_pins(**family)
    generate = _generator(reuse if reuse is not None else os.environ.get("PATCHER_OUTPUT_CACHE", "1") != "0")
    drifted: dict[tuple[str, str | None], DriftError] = {}
    out: dict[str, Output | DriftError] = {}
    for i, version in enumerate(versions, 1):
        up = fetch.fetch(version, pinned, progress=progress, **family)
        key = (up.modeling_sha256, up.configuration_sha256)
        if key in drifted:  # drift depends on the upstream files only, not on the release
            out[version] = drifted[key]
            continue
        try:
            out[version] = generate(up)
        except DriftError as exc:
            out[version] = drifted[key] = exc
        if progress:
            progress(f"[{i}/{len(versions)}] {version}")
    return out


def _generator(reuse: bool) -> Callable[[Upstream], Output]:
    """``generate_cached`` when the tree has it and reuse is wanted, else the engine itself."""
    try:
        generate_cached = _module("reuse").generate_cached
    except (ImportError, AttributeError):
        generate_cached = None
    if reuse and generate_cached is not None:
        return generate_cached
    engine, generate = _module("engine"), _module("generate").generate
    series = engine.load_series()
    # another family's series is chosen by generate itself, from the upstream's family
    return lambda up: generate(up, series) if getattr(up, "model", "gemma") == "gemma" else generate(up)


def map_releases(task: Callable[[Upstream], T], items: list[Upstream], *, jobs: int = 2) -> list[T]:
    """``[task(up) for up in items]``, over ``jobs`` processes when ``patcher.series.batch`` offers them
    (``task`` must then be a module-level function)."""
    try:
        map_upstreams = _module("batch").map_upstreams
    except ImportError:
        return [task(up) for up in items]
    return map_upstreams(task, items, jobs=jobs)


def release_steps(up: Upstream) -> dict[str, tuple[list[str], list[str]]]:
    """Per upstream file: the codemods that ran on it and the source before the first and
    after each (``steps[0]`` is upstream, ``steps[-1]`` the output).  Raises on drift."""
    engine, notice = _module("engine"), _module("notice").notice
    contract = _module("contract")
    MODELING, CONFIGURATION = contract.MODELING, contract.CONFIGURATION
    family = getattr(up, "family", None)  # None in trees that know gemma only
    other = family is not None and up.model != "gemma"
    if other:
        MODELING, CONFIGURATION = family.modeling, family.configuration

    series = engine.load_series(model=family) if other else engine.load_series()
    out: dict[str, tuple[list[str], list[str]]] = {}
    for file, source, sha in (
        (MODELING, up.modeling, up.modeling_sha256),
        (CONFIGURATION, up.configuration, up.configuration_sha256),
    ):
        canonical = family.to_canonical(file) if other else file
        names = [c.NAME for c in series if c.FILE == canonical]
        kwargs = {"model": family} if other else {}
        result = engine.run(
            source, series, file=file, notice=notice(up, file, sha, names), keep_steps=True, **kwargs
        )
        out[file] = ([r.codemod for r in result.reports], result.steps)
    return out


# -- the worker: a script run against another tree -------------------------------------------------
def _digest(text: str, blobs: dict[str, str]) -> str:
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    blobs[sha] = text
    return sha


def _family(model: str) -> dict:
    """The keyword that selects another family than gemma (none for gemma, which every tree
    knows); a tree from before model families cannot regenerate another one."""
    if model == "gemma":
        return {}
    try:
        _module("pins").load_pins(model=model)
    except TypeError:
        raise RuntimeError(f"this tree has no model families: it cannot regenerate {model}") from None
    return {"model": model}


def _outputs_document(versions: list[str], jobs: int, model: str = "gemma") -> dict:
    from patcher.errors import DriftError

    blobs: dict[str, str] = {}
    releases: dict[str, dict] = {}
    family = _family(model)
    for version, result in regenerate(versions, jobs=jobs, progress=_stderr, **family).items():
        if isinstance(result, DriftError):
            releases[version] = {"drift": str(result)}
        else:
            releases[version] = {"files": {name: _digest(text, blobs) for name, text in result.files.items()}}
    return {"releases": releases, "blobs": blobs}


def _steps_document(versions: list[str], model: str = "gemma") -> dict:
    pins, fetch = _module("pins"), _module("fetch")
    family = _family(model)
    pinned = pins.load_pins(**family)
    blobs: dict[str, str] = {}
    releases: dict[str, dict] = {}
    for i, version in enumerate(versions, 1):
        steps = release_steps(fetch.fetch(version, pinned, **family))
        _stderr(f"[{i}/{len(versions)}] {version}")
        releases[version] = {
            file: {"names": names, "steps": [_digest(text, blobs) for text in texts]}
            for file, (names, texts) in steps.items()
        }
    return {"releases": releases, "blobs": blobs}


def _stderr(message: str) -> None:
    """A worker's progress line, for the parent (``gitsource.run_sides``) to show."""
    print(message, file=sys.stderr, flush=True)


def worker(root: Path, request: dict) -> dict:
    """Run ``request`` (``{"mode": "outputs"|"steps", "versions": [...]}``) with ROOT's packages."""
    import patcher
    import patches

    for package in (patcher, patches):
        where = Path(package.__file__).resolve()
        if root.resolve() not in where.parents:
            raise RuntimeError(f"{package.__name__} was imported from {where}, not from {root}")
    model = request.get("model", "gemma")
    if request["mode"] == "outputs":
        return _outputs_document(request["versions"], request.get("jobs", 1), model)
    if request["mode"] == "steps":
        return _steps_document(request["versions"], model)
    raise ValueError(f"unknown mode {request['mode']!r}")


def main(argv: list[str]) -> int:
    root, request, result = Path(argv[0]), Path(argv[1]), Path(argv[2])
    sys.path[:] = [str(root), *(p for p in sys.path[1:] if Path(p or ".").resolve() != root.resolve())]
    # an editable install's import hook would fill modules ROOT lacks from another tree
    sys.meta_path[:] = [
        f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")
    ]
    document = worker(root, json.loads(request.read_text(encoding="utf-8")))
    result.write_text(json.dumps(document), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
