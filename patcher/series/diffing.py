"""Upstream -> output as a unified diff whose hunks name the codemod(s) that own them.

Attribution follows each line through the series: the runner keeps the source after every
codemod, each step is diffed against the previous one, and a line remembers which codemod
wrote it (or removed it from upstream).  A hunk of the final diff is then owned by the
codemods of its lines.  The hunks themselves are handled with ``unidiff``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from unidiff import PatchSet

from patcher.series import engine
from patcher.series.attribution import trace
from patcher.series.contract import MODELING, OUTPUT_NAMES, Report
from patcher.upstream.families import Family, family
from patches._base import VaccCodemod


@dataclass(frozen=True)
class AttributedDiff:
    """One file's diff, per hunk (in order) the codemods owning it, and the run's reports
    (each codemod's lines added and removed, counted as ``apply`` counts them)."""

    file: str
    patch: PatchSet
    owners: list[tuple[str, ...]]
    reports: tuple[Report, ...] = ()


def _provenance(steps: list[str], names: list[str]) -> tuple[list[str | None], dict[int, str]]:
    """For the final text: which codemod wrote each line (None: upstream's), and for each
    upstream line index that disappeared, which codemod removed it (see ``attribution.trace``)."""
    traced = trace(steps, names)
    return traced.wrote, traced.removed


def attributed_diff(
    source: str,
    codemods: list[type[VaccCodemod]],
    *,
    file: str = MODELING,
    notice: str | None = None,
    model: Family | str | None = None,
) -> AttributedDiff:
    """Run the codemods for ``file`` on ``source`` and diff upstream against the result."""
    fam = family(model)
    result = engine.run(source, codemods, file=file, notice=notice, keep_steps=True, model=fam)
    names = [r.codemod for r in result.reports]
    wrote, removed = _provenance(result.steps, names)
    out_name = fam.output_names.get(file, OUTPUT_NAMES.get(file, file))
    text = "".join(
        difflib.unified_diff(
            source.splitlines(keepends=True),
            result.code.splitlines(keepends=True),
            fromfile=f"a/{file}",
            tofile=f"b/{out_name}",
        )
    )
    patch = PatchSet(text)
    owners: list[tuple[str, ...]] = []
    order = {name: i for i, name in enumerate(names)}
    for patched in patch:
        for hunk in patched:
            found: set[str] = set()
            for line in hunk:
                if line.is_added and line.target_line_no and wrote[line.target_line_no - 1]:
                    found.add(wrote[line.target_line_no - 1])  # type: ignore[arg-type]
                elif line.is_removed and line.source_line_no and (line.source_line_no - 1) in removed:
                    found.add(removed[line.source_line_no - 1])
            owner = tuple(sorted(found, key=order.__getitem__)) or ("(reordered)",)
            hunk.section_header = "[" + ", ".join(owner) + "]"
            owners.append(owner)
    return AttributedDiff(file, patch, owners, tuple(result.reports))


def render(diff: AttributedDiff, only: str | None = None) -> str:
    """The diff as text, hunks labelled; with ``only``, just the hunks that codemod owns."""
    if not diff.patch:
        return ""
    out: list[str] = []
    owners = iter(diff.owners)
    for patched in diff.patch:
        hunks = [h for h in patched if (o := next(owners)) and (only is None or only in o)]
        if not hunks:
            continue
        out.append(f"--- {patched.source_file}\n+++ {patched.target_file}\n")
        out.extend(str(h) for h in hunks)
    return "".join(out)


@dataclass(frozen=True)
class StatRow:
    name: str
    hunks: int
    added: int
    removed: int

    def line(self, width: int) -> str:
        hunks = f"{self.hunks} hunk{'' if self.hunks == 1 else 's'}"
        return f"{self.name:<{width}} {hunks:>9}  +{self.added:<5} -{self.removed}"


def stat(diffs: list[AttributedDiff], order: list[str], only: str | None = None) -> list[StatRow]:
    """``diff --stat``: per codemod, the hunks it owns and the lines it added and removed as
    ``apply`` reports them (its own step of the series, so a hunk two codemods share is not
    counted twice for its lines); then the total of the upstream -> output diff."""
    rows: dict[str, list[int]] = {}
    for diff in diffs:
        owners = iter(diff.owners)
        for patched in diff.patch:
            for _hunk in patched:
                for name in next(owners):
                    rows.setdefault(name, [0, 0, 0])[0] += 1
        for report in diff.reports:
            row = rows.setdefault(report.codemod, [0, 0, 0])
            row[1] += report.added
            row[2] += report.removed
    rank = {name: i for i, name in enumerate(order)}
    names = sorted(rows, key=lambda n: rank.get(n, len(rank)))
    out = [StatRow(n, *rows[n]) for n in names if (only is None or n == only) and any(rows[n])]
    total = StatRow(
        "total (upstream -> output)",
        sum(len(p) for d in diffs for p in d.patch),
        sum(p.added for d in diffs for p in d.patch),
        sum(p.removed for d in diffs for p in d.patch),
    )
    return [*out, total] if only is None else out
