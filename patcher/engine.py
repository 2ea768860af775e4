"""The series runner: parse upstream once, run the codemods of ``patches/series`` in order.

Each codemod returns a new module (libcst trees are immutable), so the series is a fold
over one parsed tree; the source is rendered once at the end.  A codemod that meets an
unknown shape raises ``Drift``; the runner keeps going with the next codemods so that one
run reports every drifting codemod, and then refuses to produce anything.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst
from libcst.codemod import CodemodContext
from libcst.metadata import MetadataWrapper, PositionProvider

import patches
from patcher.errors import DriftError, PatcherError, UsageError
from patcher.outputs import MODELING, PATCHES_DIR, Report
from patches import _shapes
from patches._base import Drift, VaccCodemod


# -- the series ------------------------------------------------------------------------------
def load_series(directory: Path = PATCHES_DIR) -> list[type[VaccCodemod]]:
    """The codemod classes named in ``series``, in order.

    Like quilt, the series file is the one list of what runs: a codemod module missing
    from it, or a name listed twice, is an error rather than a silent surprise.
    """
    lines = (directory / "series").read_text(encoding="utf-8").splitlines()
    order = [line.split("#", 1)[0].strip() for line in lines]
    order = [name for name in order if name]
    seen: set[str] = set()
    for name in order:
        if name in seen:
            raise PatcherError(f"patches/series lists {name!r} twice; keep one line per codemod")
        seen.add(name)
    modules = {p.stem.replace("_", "-") for p in directory.glob("*.py") if not p.stem.startswith("_")}
    missing = sorted(modules - seen)
    if missing:
        raise PatcherError(f"patches/{missing[0].replace('-', '_')}.py is not in patches/series; add it")
    return [_codemod_class(name, directory) for name in order]


def _codemod_class(name: str, directory: Path) -> type[VaccCodemod]:
    if not (directory / f"{name.replace('-', '_')}.py").exists():
        raise PatcherError(
            f"patches/series names {name!r} but patches/{name.replace('-', '_')}.py is missing"
        )
    module = importlib.import_module(f"{patches.__name__}.{name.replace('-', '_')}")
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, VaccCodemod) and obj.__module__ == module.__name__
    ]
    if len(found) != 1 or found[0].NAME != name:
        raise PatcherError(
            f"patches/{name.replace('-', '_')}.py must define exactly one codemod named {name!r}"
        )
    return found[0]


def select(series: list[type[VaccCodemod]], names: list[str] | None) -> list[type[VaccCodemod]]:
    """The sub-series named by ``--codemod`` options, kept in series order."""
    if not names:
        return series
    known = {c.NAME for c in series}
    for name in names:
        if name not in known:
            raise UsageError(f"unknown codemod {name!r}; `patcher list` shows the series")
    return [c for c in series if c.NAME in names]


# -- running ---------------------------------------------------------------------------------
@dataclass
class Result:
    """The transformed source of one file, with one report per codemod that ran on it."""

    code: str
    reports: list[Report] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)  # per-codemod sources, when asked for


def run(
    source: str,
    codemods: list[type[VaccCodemod]],
    *,
    file: str = MODELING,
    notice: str | None = None,
    keep_steps: bool = False,
) -> Result:
    """Apply the codemods meant for ``file`` to ``source``.

    Raises ``DriftError`` naming every drifting codemod, with file:line of the upstream
    unit where each one looked, and produces nothing in that case.
    """
    try:
        original = cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        raise PatcherError(f"{file} does not parse as Python: {exc.message} (line {exc.raw_line})") from None
    context = CodemodContext(filename=file, full_module_name=f"{_shapes.PACKAGE}.{Path(file).stem}")
    context.scratch["notice"] = notice
    module = original
    reports: list[Report] = []
    drifts: list[Drift] = []
    steps: list[str] = [source] if keep_steps else []
    for cls in codemods:
        if cls.FILE != file:
            continue
        codemod = cls(context)
        try:
            module = codemod.transform_module(module)
        except Drift as drift:
            drifts.append(drift)
            continue
        change = codemod.change
        assert change is not None
        reports.append(Report(cls.NAME, file, change.shapes, change.added, change.removed))
        if keep_steps:
            steps.append(module.code)
    if drifts:
        raise DriftError(_drift_message(drifts, original, file))
    return Result(module.code, reports, steps)


def _drift_message(drifts: list[Drift], upstream: cst.Module, file: str) -> str:
    lines = _anchor_lines(upstream, [name for d in drifts for name in (d.anchor, d.nearest)])
    parts = []
    for d in drifts:
        # where the target is, or else where its nearest match is
        line = lines.get(d.anchor) or lines.get(d.nearest)
        where = f"{file}:{line}" if line else file
        hint = f"; nearest: {d.nearest}" if d.nearest else ""
        parts.append(
            f"drift: codemod {d.codemod}, target {d.target} at {where}: {d.found}"
            f" (known shapes: {', '.join(d.known)}){hint}"
        )
    return "\n".join(parts)


def _anchor_lines(upstream: cst.Module, anchors: list[str | None]) -> dict[str | None, int]:
    """Line numbers of qualified names in the upstream file (computed only on drift)."""
    wrapper = MetadataWrapper(upstream, unsafe_skip_copy=True)
    positions = wrapper.resolve(PositionProvider)
    out: dict[str | None, int] = {}
    for anchor in anchors:
        if not anchor or not all(part.isidentifier() for part in anchor.split(".")):
            continue
        node: cst.CSTNode | None = None
        body: list = list(upstream.body)
        for part in anchor.split("."):
            i = _shapes.find(body, part)
            if i is None:
                break
            node = body[i]
            body = list(node.body.body) if isinstance(node, cst.ClassDef | cst.FunctionDef) else []
        else:
            if node is not None and node in positions:
                out[anchor] = positions[node].start.line
    return out
