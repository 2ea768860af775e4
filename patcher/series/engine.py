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
from patcher.series.contract import MODELING, PATCHES_DIR, Report, series_digest
from patcher.series.stack import roomy
from patcher.upstream.families import CANONICAL, Family, family
from patches import NOTICE_MARK, _shapes
from patches._base import Change, Drift, VaccCodemod
from patches.library_imports import with_notice


# -- the series ------------------------------------------------------------------------------
def load_series(directory: Path = PATCHES_DIR, model: Family | str | None = None) -> list[type[VaccCodemod]]:
    """The codemod classes named in the family's series file (``series`` for gemma,
    ``series-mistral``, ...), in order.

    Like quilt, the series file is the one list of what runs: a codemod module missing
    from it, or a name listed twice, is an error rather than a silent surprise (every codemod
    serves every family so far; a family-only codemod would relax this).
    """
    fam = family(model)
    order = _series_names(directory, fam.series)
    modules = {p.stem.replace("_", "-") for p in directory.glob("*.py") if not p.stem.startswith("_")}
    missing = sorted(modules - set(order))
    if missing:
        module = missing[0].replace("-", "_")
        raise PatcherError(f"patches/{module}.py is not in patches/{fam.series}; add it")
    series_digest(directory)  # the key of what is imported now, before it can change on disk
    return [_codemod_class(name, directory) for name in order]


def _series_names(directory: Path, file: str) -> list[str]:
    lines = (directory / file).read_text(encoding="utf-8").splitlines()
    order = [line.split("#", 1)[0].strip() for line in lines]
    order = [name for name in order if name]
    seen: set[str] = set()
    for name in order:
        if name in seen:
            raise PatcherError(f"patches/{file} lists {name!r} twice; keep one line per codemod")
        seen.add(name)
    return order


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
    model: Family | str | None = None,
    traits: object | None = None,
) -> Result:
    """Apply the codemods meant for ``file`` to ``source``.

    ``file`` is the family's name for it (``modeling_mistral.py`` with ``model="mistral"``);
    the codemods see another family's upstream under the canonical names (see
    :mod:`patcher.upstream.families`) and their output gets the family's names back.

    Raises ``DriftError`` naming every drifting codemod, with file:line of the upstream
    unit where each one looked, and produces nothing in that case.  A source whose lines all
    end in CRLF gives an output whose lines all end in CRLF; any other mix gives LF (the
    series itself runs on LF, the way Python reads any source).
    """
    fam = family(model)
    if fam is not CANONICAL:
        from patcher.series.aliasing import run_as_canonical

        return run_as_canonical(run, fam, source, codemods, file=file, notice=notice, keep_steps=keep_steps)
    source, newline = split_newlines(source)
    try:
        # in one frame chunk: libcst's recursion is then as fast at any depth (patcher.series.stack)
        result = roomy(_run, source, codemods, file=file, notice=notice, keep_steps=keep_steps, traits=traits)
    except RecursionError:
        raise UsageError(f"{file} is nested too deeply for the codemods; give a real upstream file") from None
    finally:
        _shapes.forget_code()  # the run's renders (see _shapes.code) die with its trees
    if newline != "\n":
        result.code = result.code.replace("\n", newline)
        result.steps = [step.replace("\n", newline) for step in result.steps]
    return result


def split_newlines(source: str) -> tuple[str, str]:
    """``source`` with every line ending made LF, and the line ending to give the output:
    CRLF when every line of the source ends so, else LF."""
    if "\r" not in source:
        return source, "\n"
    crlf = source.count("\r\n")
    uniform = crlf == source.count("\n") == source.count("\r")
    return source.replace("\r\n", "\n").replace("\r", "\n"), "\r\n" if uniform else "\n"


def _run(
    source: str,
    codemods: list[type[VaccCodemod]],
    *,
    file: str,
    notice: str | None,
    keep_steps: bool,
    traits: object | None = None,
) -> Result:
    try:
        original = cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        # the input's fault, not patcher's (Python itself may accept what libcst's parser cannot)
        raise UsageError(
            f"{file} does not parse as Python for the codemods (libcst): {exc.message} "
            f"(line {exc.raw_line}); give a real upstream file"
        ) from None
    done = fold(original, codemods, file=file, notice=notice, keep_steps=keep_steps, traits=traits)
    if done.drifts:
        raise DriftError(_drift_message(done.drifts, original, file))
    module, steps = done.module, [source, *done.steps] if keep_steps else []
    reports = [
        Report(name, file, c.shapes, c.added, c.removed)
        for name, c in done.outcomes.items()
        if isinstance(c, Change)
    ]
    if notice and not _has_notice(module):  # a --codemod selection without the header's owner
        module = with_notice(module, notice)
        if len(steps) > 1:
            steps[-1] = _shapes.module_code(module)
    return Result(_shapes.module_code(module), reports, steps)


@dataclass
class Fold:
    """The series folded over one parsed file, through drift: the module after the last codemod
    that did not drift, each codemod's outcome (its ``Change`` or its ``Drift``) in series
    order, the drifts alone, and (when asked) the source after each codemod that ran."""

    module: cst.Module
    outcomes: dict[str, Change | Drift]
    drifts: list[Drift]
    steps: list[str]


def fold(
    original: cst.Module,
    codemods: list[type[VaccCodemod]],
    *,
    file: str = MODELING,
    notice: str | None = None,
    keep_steps: bool = False,
    traits: object | None = None,
) -> Fold:
    """Run the codemods meant for ``file`` one after the other on ``original``.  A drifting
    codemod leaves the module as it was and the next one runs, so that one pass reports every
    drift: ``run`` then refuses, ``patcher matrix`` records it (the one loop of both)."""
    context = CodemodContext(filename=file, full_module_name=f"{_shapes.PACKAGE}.{Path(file).stem}")
    context.scratch["notice"] = notice
    context.scratch["traits"] = traits  # the family's (None: the canonical family's)
    module = original
    outcomes: dict[str, Change | Drift] = {}
    drifts: list[Drift] = []
    steps: list[str] = []
    for cls in codemods:
        if cls.FILE != file:
            continue
        codemod = cls(context)
        try:
            module = codemod.transform_module(module)
        except Drift as drift:
            drifts.append(drift)
            outcomes[cls.NAME] = drift
            continue
        assert codemod.change is not None
        outcomes[cls.NAME] = codemod.change
        if keep_steps:
            steps.append(_shapes.module_code(module))
    return Fold(module, outcomes, drifts, steps)


def _has_notice(module: cst.Module) -> bool:
    """Whether the module's header carries patcher's notice (how patcher knows its own files)."""
    return any(line.comment and line.comment.value.startswith(NOTICE_MARK) for line in module.header)


def _drift_message(drifts: list[Drift], upstream: cst.Module, file: str) -> str:
    """One line per drift: codemod, target, file:line in upstream, what was found, the shapes
    the codemod knows and, where the target is missing, the nearest match (a renamed class is
    found again by what it is made of, see ``_shapes.closest``)."""
    positions = MetadataWrapper(upstream, unsafe_skip_copy=True).resolve(PositionProvider)
    parts = []
    for d in drifts:
        line = _line(upstream, positions, d.anchor)
        if d.node is not None and d.node in positions:  # the very statement at fault
            line = positions[d.node].start.line
        nearest = d.nearest
        missing = _missing(upstream, d.target) or _missing(upstream, d.anchor)
        if missing:  # the target itself is gone: point at what most resembles it
            nearest = _closest(upstream, missing) or nearest
            line = (
                _line(upstream, positions, nearest) or line or _line_of_parent(upstream, positions, missing)
            )
        where = f"{file}:{line}" if line else f"{file} (no {_gone(upstream, missing or d.target)} in it)"
        hint = f"; nearest: {nearest}" if nearest else ""
        parts.append(
            f"drift: codemod {d.codemod}, target {d.target} at {where}: {d.found}"
            f" (known shapes: {', '.join(d.known)}){hint}"
        )
    return "\n".join(parts)


def _walk(upstream: cst.Module, qualname: str | None) -> tuple[list[cst.CSTNode], list]:
    """The units along ``qualname`` that exist in upstream, and the body where the walk stopped."""
    found: list[cst.CSTNode] = []
    body: list = list(upstream.body)
    if not qualname or not all(part.isidentifier() for part in qualname.split(".")):
        return found, []
    for part in qualname.split("."):
        i = _shapes.find(body, part)
        if i is None:
            break
        found.append(body[i])
        node = body[i]
        inner = node.body if isinstance(node, cst.ClassDef | cst.FunctionDef) else None
        body = list(inner.body) if isinstance(inner, cst.IndentedBlock) else []
    return found, body


def _line(upstream: cst.Module, positions, qualname: str | None) -> int | None:
    """The upstream line where ``qualname`` (``GemmaModel.forward``) is defined, if it is."""
    found, _ = _walk(upstream, qualname)
    if not qualname or len(found) != len(qualname.split(".")):
        return None
    node = found[-1]
    return positions[node].start.line if node in positions else None


def _missing(upstream: cst.Module, qualname: str | None) -> str | None:
    """``qualname`` if it names a unit (``GemmaModel.forward``) that upstream lacks, else None."""
    if not qualname or not all(part.isidentifier() for part in qualname.split(".")):
        return None
    found, _ = _walk(upstream, qualname)
    return qualname if len(found) < len(qualname.split(".")) else None


def _gone(upstream: cst.Module, qualname: str) -> str:
    """The first missing unit along ``qualname`` (``GemmaForSequenceClassification`` of its forward)."""
    found, _ = _walk(upstream, qualname)
    return ".".join(qualname.split(".")[: len(found) + 1])


def _line_of_parent(upstream: cst.Module, positions, qualname: str | None) -> int | None:
    """The line of the deepest unit along ``qualname`` that exists (the class of a missing method)."""
    found, _ = _walk(upstream, qualname)
    return positions[found[-1]].start.line if found and found[-1] in positions else None


def _closest(upstream: cst.Module, anchor: str | None) -> str | None:
    """The qualified name of the upstream unit most like the missing part of ``anchor``."""
    found, body = _walk(upstream, anchor)
    if not anchor:
        return None
    parts = anchor.split(".")
    if len(found) == len(parts) or not all(part.isidentifier() for part in parts):
        return None
    match = _shapes.closest(body, parts[len(found)])
    return ".".join([*parts[: len(found)], match]) if match else None
