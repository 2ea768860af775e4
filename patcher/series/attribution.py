"""Which codemod wrote, or removed, each line of an output; diffs between two outputs
with every hunk attributed to codemods.

A :class:`Provenance` follows lines through the steps of one series run (the source after
each codemod): a line of the output was either written by a codemod or is upstream's line
``origin``; an upstream line that is gone was removed by a codemod.  With that for two
generations of the same upstream (the codemods at a base commit and in the working tree),
each line of a base→head diff has an owner: an added line is owned by the head codemod that
wrote it, or — when it is upstream's and the base lacked it — by the base codemod that had
removed it; removed lines the other way round.  ``patcher review`` and ``patcher check``
label their hunks this way, and the lock records per codemod a digest of what it wrote
(:func:`contributions`) so that ``check`` can name the codemods whose lines changed.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass

from unidiff import PatchSet

UPSTREAM = "(upstream)"  # the owner of a line no codemod touched on either side


@dataclass(frozen=True)
class Provenance:
    """One file of one generation: the output's lines and where each came from."""

    lines: list[str]
    wrote: list[str | None]  # per output line: the codemod that wrote it, None for upstream's
    origin: list[int | None]  # per output line: its upstream index when upstream's
    removed: dict[int, str]  # upstream index -> the codemod that removed that line

    def owner_of_line(self, index: int, other: Provenance | None) -> str | None:
        """The codemod behind output line ``index`` when the ``other`` output lacks it: the one
        that wrote it here, or the one that removed this upstream line there (None: unknown
        without the other side's provenance)."""
        if self.wrote[index]:
            return self.wrote[index]
        if other is None:
            return None
        origin = self.origin[index]
        return other.removed.get(origin, UPSTREAM) if origin is not None else UPSTREAM


def trace(steps: list[str], names: list[str]) -> Provenance:
    """Follow the lines of ``steps[0]`` (upstream) through ``steps[1:]`` (one per codemod)."""
    current = steps[0].splitlines(keepends=True)
    wrote: list[str | None] = [None] * len(current)
    origin: list[int | None] = list(range(len(current)))
    removed: dict[int, str] = {}
    for name, text in zip(names, steps[1:], strict=True):
        new = text.splitlines(keepends=True)
        new_wrote: list[str | None] = []
        new_origin: list[int | None] = []
        matcher = difflib.SequenceMatcher(a=current, b=new, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                new_wrote += wrote[i1:i2]
                new_origin += origin[i1:i2]
                continue
            for k in range(i1, i2):
                if origin[k] is not None:
                    removed.setdefault(origin[k], name)  # type: ignore[arg-type]
            new_wrote += [name] * (j2 - j1)
            new_origin += [None] * (j2 - j1)
        current, wrote, origin = new, new_wrote, new_origin
    return Provenance(current, wrote, origin, removed)


def contributions(provenance: Provenance, upstream: str, release: str | None = None) -> dict[str, str]:
    """Per codemod, a short digest of the lines it wrote and the upstream lines it removed.

    The release's own version (it appears in the notice) is blanked so that releases sharing
    upstream files get the same digests.  A codemod whose digest changes changed its lines.
    """
    upstream_lines = upstream.splitlines(keepends=True)
    parts: dict[str, list[str]] = {}
    for line, name in zip(provenance.lines, provenance.wrote, strict=True):
        if name:
            parts.setdefault(name, []).append("+" + line)
    for index in sorted(provenance.removed):
        parts.setdefault(provenance.removed[index], []).append("-" + upstream_lines[index])
    out = {}
    for name, lines in parts.items():
        text = "".join(lines)
        if release:
            text = text.replace(release, "{release}")
        out[name] = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return out


@dataclass(frozen=True)
class Hunk:
    """One hunk of a base→head diff: its text (with ``@@`` header) and the codemods owning it."""

    text: str
    owners: tuple[str, ...]
    added: int
    removed: int


def attributed_hunks(
    base: str,
    head: str,
    *,
    base_prov: Provenance | None,
    head_prov: Provenance | None,
    fromfile: str,
    tofile: str,
    order: list[str] = (),  # type: ignore[assignment]
    fallback: tuple[str, ...] = (),
) -> list[Hunk]:
    """The unified diff base→head as hunks, each labelled with the codemods of its lines.

    A side without provenance (say, an output known only by its digest's blob) contributes
    no owners; a hunk left without any gets ``fallback``.
    """
    text = "".join(
        difflib.unified_diff(
            base.splitlines(keepends=True), head.splitlines(keepends=True), fromfile=fromfile, tofile=tofile
        )
    )
    if not text:
        return []
    rank = {name: i for i, name in enumerate(order)}
    hunks = []
    for patched in PatchSet(text):
        for hunk in patched:
            found: set[str | None] = set()
            for line in hunk:
                if line.is_added and head_prov is not None:
                    found.add(head_prov.owner_of_line(line.target_line_no - 1, base_prov))
                elif line.is_removed and base_prov is not None:
                    found.add(base_prov.owner_of_line(line.source_line_no - 1, head_prov))
            found.discard(None)
            owners = tuple(sorted(found, key=lambda n: (rank.get(n, len(rank)), n))) or fallback
            hunk.section_header = "[" + ", ".join(owners) + "]" if owners else ""
            hunks.append(Hunk(str(hunk), owners, hunk.added, hunk.removed))
    return hunks


def render_hunks(hunks: list[Hunk], fromfile: str, tofile: str) -> str:
    """The hunks as a unified diff text."""
    if not hunks:
        return ""
    return f"--- {fromfile}\n+++ {tofile}\n" + "".join(h.text for h in hunks)
