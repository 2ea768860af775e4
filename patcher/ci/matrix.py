"""``patcher matrix``: which shape each codemod met in each pinned release, or where it drifted.

It is the maintainers' map of upstream history.  The series runs once per distinct pair of
upstream files (over worker processes, see :mod:`patcher.series.batch`), and unlike ``apply`` it
keeps going through drift: every codemod reports its shapes or its drift line, so a release
where one codemod drifts still shows what all the others met.  Releases that follow each
other with the same upstream files share one row of the table.
"""

from __future__ import annotations

import argparse
import json
import re
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from patcher.series import batch
from patcher.series.contract import CONFIGURATION, MODELING
from patcher.series.reuse import OutputCache, output_key
from patcher.upstream import fetch, pins
from patcher.upstream.families import CANONICAL, family

if TYPE_CHECKING:
    from patches._base import VaccCodemod

Upstream = fetch.Upstream
#: One codemod's outcome on one release: ``{"shapes": [...]}`` or ``{"drift": "line"}``.
Cell = dict[str, "list[str] | str"]

__all__ = ["Matrix", "build_matrix", "register", "render_text", "survey", "survey_file"]


# -- running the codemods through drift ------------------------------------------------------
def survey_file(
    source: str, codemods: list[type[VaccCodemod]], *, file: str = MODELING, traits: object | None = None
) -> dict[str, Cell]:
    """Each codemod of ``file``: the shapes it met, or its drift line (as ``apply`` prints it).

    ``engine.fold``, the loop of ``engine.run``, which records a drift and goes on.
    """
    import libcst as cst

    from patcher.series import engine
    from patcher.series.stack import roomy
    from patches import _shapes
    from patches._base import Change

    original = cst.parse_module(source)
    try:
        done = roomy(engine.fold, original, codemods, file=file, traits=traits)
    finally:
        _shapes.forget_code()  # the renders of this file's trees (see _shapes.code)
    cells: dict[str, Cell] = {
        name: {"shapes": list(outcome.shapes)} if isinstance(outcome, Change) else {}
        for name, outcome in done.outcomes.items()
    }
    if done.drifts:  # one message line per drift, in order (anchors resolved in one pass)
        message = engine._drift_message(done.drifts, original, file)
        lines = re.split(r"\n(?=drift: codemod )", message)
        for drift, line in zip(done.drifts, lines, strict=True):
            cells[drift.codemod] = {"drift": " ".join(line.split("\n"))}
    return cells


def survey(up: Upstream) -> dict[str, Cell]:
    """Both upstream files of a release surveyed, codemods in series order (a worker task).
    Another family's files are surveyed in the codemods' names, and its drift lines given
    back its own (as ``engine.run`` does)."""
    fam = up.family
    if fam is CANONICAL:
        codemods = batch.series()
        cells = survey_file(up.modeling, codemods, file=MODELING)
        if up.configuration is not None:
            cells.update(survey_file(up.configuration, codemods, file=CONFIGURATION))
        return {c.NAME: cells[c.NAME] for c in codemods if c.NAME in cells}
    from patcher.series import aliasing, engine

    codemods = engine.load_series(model=fam)
    aliasing.check(fam, up.modeling, fam.modeling)
    cells = survey_file(fam.to_canonical(up.modeling), codemods, file=MODELING, traits=fam.traits)
    if up.configuration is not None:
        aliasing.check(fam, up.configuration, fam.configuration)
        cells.update(
            survey_file(fam.to_canonical(up.configuration), codemods, file=CONFIGURATION, traits=fam.traits)
        )
    for cell in cells.values():
        if "drift" in cell:
            cell["drift"] = fam.from_canonical(cell["drift"])
    return {c.NAME: cells[c.NAME] for c in codemods if c.NAME in cells}


# -- the matrix ------------------------------------------------------------------------------
@dataclass
class Release:
    """One pinned release's row: its upstream digests and each codemod's cell."""

    version: str
    modeling_sha256: str
    configuration_sha256: str | None
    codemods: dict[str, Cell]


@dataclass
class Matrix:
    """The release × codemod table, with what the series declares (files, known shapes)."""

    releases: list[Release]
    files: dict[str, str]  # codemod -> upstream file, in series order
    known: dict[str, list[str]]  # codemod -> the shapes it knows, in declaration order
    seconds: float = 0.0
    distinct: int = 0
    model: str = "gemma"  # the family surveyed

    def rows(self) -> list[list[Release]]:
        """Runs of consecutive releases with the same upstream files."""
        rows: list[list[Release]] = []
        for rel in self.releases:
            key = (rel.modeling_sha256, rel.configuration_sha256)
            if rows and (rows[-1][0].modeling_sha256, rows[-1][0].configuration_sha256) == key:
                rows[-1].append(rel)
            else:
                rows.append([rel])
        return rows

    def where(self, codemod: str) -> tuple[dict[str, list[str]], list[str]]:
        """For one codemod: each known shape with the releases that met it, and the drifting ones."""
        shapes: dict[str, list[str]] = {shape: [] for shape in self.known[codemod]}
        drift: list[str] = []
        for rel in self.releases:
            cell = rel.codemods.get(codemod, {})
            if "drift" in cell:
                drift.append(rel.version)
            for shape in cell.get("shapes", []):
                shapes.setdefault(shape, []).append(rel.version)
        return shapes, drift

    def as_dict(self) -> dict:
        """The ``--json`` document (stable for tools; ``format`` changes if its meaning does)."""
        summary = {}
        for name, file in self.files.items():
            shapes, drift = self.where(name)
            summary[name] = {"file": file, "known_shapes": self.known[name], "shapes": shapes, "drift": drift}
        return {
            "format": 1,
            "series": list(self.files),
            "releases": [
                {
                    "version": rel.version,
                    "modeling_sha256": rel.modeling_sha256,
                    "configuration_sha256": rel.configuration_sha256,
                    "codemods": rel.codemods,
                }
                for rel in self.releases
            ],
            "codemods": summary,
            "toolchains": toolchains_dict(),
            # the toolchain table was measured on Gemma; another family's is not measured yet
            **({"model": self.model, "toolchains_measured_for": "gemma"} if self.model != "gemma" else {}),
        }


def _from_reports(output) -> dict[str, Cell]:
    return {r.codemod: {"shapes": list(r.shapes)} for r in output.reports}


def build_matrix(
    versions: list[str] | None = None,
    *,
    jobs: int = 2,
    progress: Callable[[str], None] | None = None,
    reuse: bool | None = None,
    model: str = "gemma",
) -> Matrix:
    """Survey ``versions`` (default: every pinned release), once per distinct upstream pair.

    With ``reuse`` (default: unless ``PATCHER_OUTPUT_CACHE=0``) a group with a cached output
    takes its shapes from that output's reports instead of running (drift is never cached).
    """
    started = time.monotonic()
    fam = family(model)
    pinned = pins.load_pins(model=fam)
    versions = list(pinned) if versions is None else list(dict.fromkeys(versions))
    ups = [fetch.fetch(v, pinned, progress=progress, model=fam) for v in versions]
    groups = batch.group_releases(ups)
    codemods = batch.series()
    reuse = batch._reuse_default() if reuse is None else reuse
    cells: dict[batch.Key, dict[str, Cell]] = {}
    if reuse:
        cache = OutputCache()
        for group in groups:
            for up in group:
                hit = cache.get(output_key(up, None), up)
                if hit is not None and {r.codemod for r in hit.reports} == {c.NAME for c in codemods}:
                    cells[batch.group_key(up)] = _from_reports(hit)
                    break
    todo = [g for g in groups if batch.group_key(g[0]) not in cells]
    if progress:
        workers = f" on {min(jobs, len(todo))} processes" if len(todo) > 1 and jobs > 1 else ""
        progress(
            f"matrix: {len(ups)} releases, {len(groups)} distinct upstream files, "
            f"{len(todo)} to survey{workers}"
        )
    count = [0]

    def done(i: int, result: dict[str, Cell]) -> None:
        count[0] += 1
        if progress:
            drifting = [name for name, cell in result.items() if "drift" in cell]
            state = f"drift in {', '.join(drifting)}" if drifting else "ok"
            progress(f"[{count[0]}/{len(todo)}] {batch.describe(todo[i])}: {state}")

    results = batch.map_upstreams(survey, [g[0] for g in todo], jobs=jobs, done=done)
    for group, result in zip(todo, results, strict=True):
        cells[batch.group_key(group[0])] = result
    releases = [
        Release(up.version, up.modeling_sha256, up.configuration_sha256, cells[batch.group_key(up)])
        for up in ups
    ]
    return Matrix(
        releases,
        files={c.NAME: fam.from_canonical(c.FILE) for c in codemods},
        known={c.NAME: list(c.SHAPES) for c in codemods},
        seconds=time.monotonic() - started,
        distinct=len(groups),
        model=fam.name,
    )


# -- text ------------------------------------------------------------------------------------
def _label(group: list) -> str:
    first, last = group[0].version, group[-1].version
    return first if first == last else f"{first}–{last}"


def ranges(versions: list[str], order: list[str]) -> str:
    """``versions`` as runs of consecutive releases of ``order``: "4.38.0–4.40.2, 4.45.0"."""
    index = {v: i for i, v in enumerate(order)}
    runs: list[list[str]] = []
    for v in sorted(versions, key=index.__getitem__):
        if runs and index[runs[-1][-1]] + 1 == index[v]:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ", ".join(run[0] if len(run) == 1 else f"{run[0]}–{run[-1]}" for run in runs)


def _letters(known: list[str]) -> dict[str, str]:
    """A short stable code per shape: its place in the codemod's declared SHAPES."""
    alphabet = string.ascii_lowercase + string.ascii_uppercase
    return {shape: alphabet[i] if i < len(alphabet) else str(i) for i, shape in enumerate(known)}


def _cell_text(cell: Cell, letters: dict[str, str]) -> str:
    if "drift" in cell:
        return "DRIFT"
    shapes = cell.get("shapes", [])
    return "+".join(letters.get(s, "?") for s in shapes) or "-"


def render_text(matrix: Matrix) -> str:
    """The table (a row per run of releases sharing upstream files, a column per codemod,
    shapes as letters) followed by the per-codemod key: each shape and its releases."""
    names = list(matrix.files)
    letters = {name: _letters(matrix.known[name]) for name in names}
    header = ["release", "modeling", *[str(i) for i in range(1, len(names) + 1)]]
    table = [header]
    for group in matrix.rows():
        rel = group[0]
        cells = [_cell_text(rel.codemods.get(n, {}), letters[n]) for n in names]
        table.append([_label(group), rel.modeling_sha256[:8], *cells])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]

    order = [rel.version for rel in matrix.releases]
    lines += ["", "Per codemod: the shapes it knows and the releases that have each (DRIFT: none fits)."]
    for i, name in enumerate(names, 1):
        shapes, drift = matrix.where(name)
        lines.append(f"{i:>2} {name} ({matrix.files[name]})")
        width = max([len(s) for s in shapes] + [5])
        for shape, where in shapes.items():
            text = f"{ranges(where, order)} ({len(where)})" if where else "never met"
            lines.append(f"     {letters[name].get(shape, '?')} {shape:<{width}}  {text}")
        if drift:
            lines.append(f"       {'DRIFT':<{width}}  {ranges(drift, order)} ({len(drift)})")
    drifting = sum(1 for rel in matrix.releases if any("drift" in c for c in rel.codemods.values()))
    lines += [
        "",
        *render_toolchains(matrix.model),
        "",
        f"{len(matrix.releases)} releases, {matrix.distinct} distinct upstream files; "
        f"{len(matrix.releases) - drifting} apply cleanly, {drifting} drift.",
    ]
    return "\n".join(lines) + "\n"


def toolchains_dict() -> dict:
    """What each verification toolchain accepts, as measured (see :mod:`patcher.toolchains`)."""
    from patcher.verify import toolchains

    return {
        t.name: {
            "summary": t.summary,
            "opsets": list(t.opsets),
            "accepts": t.accepts,
            "refuses": [{"releases": releases, "reason": reason} for releases, reason in t.refuses],
            "measured": t.measured,
        }
        for t in toolchains.TOOLCHAINS.values()
    }


def render_toolchains(model: str = "gemma") -> list[str]:
    """The verification toolchains and the releases each accepts, from their measured run (of
    Gemma: another family's table says it was not measured for it)."""
    lines = ["Verification toolchains (`patcher verify --toolchain NAME`), as measured:"]
    if model != "gemma":
        lines[0] = (
            f"Verification toolchains (`patcher verify --toolchain NAME`), as measured for Gemma "
            f"(not measured for {family(model).prefix}: "
            f"`patcher verify --all --model {model} --toolchain vacc` would measure it):"
        )
    for name, t in toolchains_dict().items():
        lines.append(f"  {name}: {t['summary']}")
        lines.append(f"    accepts {t['accepts'] or 'not measured'}")
        for refused in t["refuses"]:
            lines.append(f"    refuses {refused['releases']}: {refused['reason']}")
        if t["measured"]:
            lines.append(f"    measured: {t['measured']}")
    return lines


# -- command ---------------------------------------------------------------------------------
def cmd_matrix(args: argparse.Namespace) -> int:
    from patcher.progress import say

    matrix = build_matrix(jobs=args.jobs, progress=say, model=args.model)
    if args.json:
        print(json.dumps(matrix.as_dict(), indent=2))
    else:
        print(render_text(matrix), end="")
    say(f"matrix of {len(matrix.releases)} releases in {matrix.seconds:.1f}s")
    return 0


def register(command) -> None:
    """Add ``patcher matrix`` to the CLI (see ``patcher.cli.COMMAND_MODULES``)."""
    p = command("matrix", cmd_matrix, "show which shape each codemod met in each pinned release")
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON: {releases: [{version, modeling_sha256, codemods: {name: {shapes} | {drift}}}], "
        "codemods: {name: {file, known_shapes, shapes: {shape: [versions]}, drift: [versions]}}}",
    )
    p.add_argument("--jobs", type=int, default=2, metavar="N", help="worker processes (default 2)")
