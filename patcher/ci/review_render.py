"""Rendering a :class:`patcher.ci.review.Review`: Markdown for a pull-request comment, JSON for
tools, GitHub workflow annotations.

No difference renders as one line (one JSON line for ``json``).  Markdown keeps under
GitHub's comment limit: diffs beyond the budget are cut with a note saying how to see them.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # review runs this module; it only reads review's data
    from patcher.ci.review import Group, Review

MARKER = "<!-- patcher-review -->"  # lets a workflow find and update its earlier comment
BUDGET = 60_000  # characters; GitHub refuses comments above 65,536
STATUS_WORDS = {
    "changed": "outputs differ",
    "now-generates": "now generates (drifted before)",
    "now-drifts": "now drifts",
    "drift-changed": "drifts differently",
}


def render(review: Review, fmt: str) -> str:
    """``review`` in ``fmt`` (markdown, json or github), ending with a newline."""
    if fmt == "json":
        return json.dumps(as_dict(review), indent=None if not review.groups else 2) + "\n"
    if not review.groups:
        count = len(review.pinned)
        return f"patcher review: no output changes against {review.base} ({count} pinned releases)\n"
    if fmt == "github":
        return github(review)
    return markdown(review)


def as_dict(review: Review) -> dict:
    """The JSON form: stable keys for tools."""
    return {
        "base": review.base,
        "base_commit": review.base_commit,
        "head": review.head,
        "releases": len(review.pinned),
        "changed_releases": review.changed_releases,
        "changed_sources": review.changed_sources,
        "groups": [
            {
                "releases": g.releases,
                "spans": g.spans,
                "status": g.status,
                "codemods": list(g.codemods),
                "detail": g.detail,
                "files": [
                    {
                        "name": f.name,
                        "added": f.added,
                        "removed": f.removed,
                        "hunks": [
                            {
                                "codemods": list(h.owners),
                                "added": h.added,
                                "removed": h.removed,
                                "text": h.text,
                            }
                            for h in f.hunks
                        ],
                    }
                    for f in g.files
                ],
            }
            for g in review.groups
        ],
    }


def _code(names) -> str:
    return ", ".join(f"`{n}`" for n in names) or "—"


def _files(group: Group) -> str:
    return "<br>".join(f"`{f.name}` +{f.added} −{f.removed}" for f in group.files)


def _fence(text: str) -> str:
    """A backtick fence longer than any backtick run inside ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _sources(review: Review) -> str:
    from patcher.ci.gitsource import codemod_of

    parts = []
    for path in review.changed_sources:
        name = codemod_of(path)
        parts.append(f"`{path}`" + (f" ({name})" if name else ""))
    return ", ".join(parts)


def markdown(review: Review) -> str:
    """A summary table, then one collapsible diff per group."""
    out = [
        MARKER,
        f"### patcher review: `{review.base}` ({review.base_commit[:12]}) → {review.head}",
        "",
        f"**{review.changed_releases} of {len(review.pinned)}** pinned releases change. "
        f"Sources changed: {_sources(review)}.",
        "",
        "| releases | change | codemods | files |",
        "|---|---|---|---|",
    ]
    for g in review.groups:
        count = f" ({len(g.releases)})" if len(g.releases) > 1 else ""
        out.append(f"| {g.spans}{count} | {STATUS_WORDS[g.status]} | {_code(g.codemods)} | {_files(g)} |")
    out.append("")
    used = sum(len(line) + 1 for line in out)
    for g in review.groups:
        body = "".join(
            f"--- a/{f.name}\n+++ b/{f.name}\n" + "".join(h.text for h in f.hunks) for f in g.files
        )
        body = body or (g.detail + "\n" if g.detail else "")
        if not body:
            continue
        block = _details(review, g, body, "")
        if used + len(block) > BUDGET:  # cut the diff so that the comment stays postable
            room = max(0, BUDGET - used - (len(block) - len(body)) - 200)
            cut = body[:room].rsplit("\n", 1)[0] + "\n" if room else ""
            more = body.count("\n") - cut.count("\n")
            note = (
                f"\n*Cut: {more} more lines; run `patcher review --base {review.base}` to see all of it.*\n"
            )
            block = _details(review, g, cut, note)
        out.append(block)
        used += len(block) + 1
    return "\n".join(out) + "\n"


def _details(review: Review, g: Group, body: str, note: str) -> str:
    """One group's collapsible block: which releases, and the diff (or drift messages)."""
    fence = _fence(body)
    lang = "diff" if g.files or g.status == "drift-changed" else "text"
    also = ""
    if len(g.releases) > 1:
        also = f"Shown for transformers {g.releases[0]}; the other releases of this row change alike.\n\n"
    codemods = f" — {', '.join(g.codemods)}" if g.codemods else ""
    return (
        f"<details><summary>{g.spans}: {STATUS_WORDS[g.status]}{codemods}</summary>\n\n"
        f"{also}{fence}{lang}\n{body}{fence}\n{note}\n</details>\n"
    )


def _escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def github(review: Review) -> str:
    """One workflow annotation per group and codemod, placed on the codemod's module."""
    lines = []
    for g in review.groups:
        level = "warning" if g.status in ("now-drifts", "drift-changed") else "notice"
        files = ", ".join(f"{f.name} +{f.added} -{f.removed}" for f in g.files)
        what = STATUS_WORDS[g.status] + (f": {files}" if files else "")
        for name in g.codemods or ("",):
            where = f"file=patches/{name.replace('-', '_')}.py," if name and not name.startswith("(") else ""
            title = _escape(f"patcher review: {name or 'outputs'}", prop=True)
            message = _escape(f"transformers {g.spans} ({len(g.releases)} releases): {what}")
            lines.append(f"::{level} {where}title={title}::{message}")
    summary = (
        f"{review.changed_releases} of {len(review.pinned)} pinned releases change against {review.base}"
    )
    lines.append(f"::notice title=patcher review::{_escape(summary)}")
    return "\n".join(lines) + "\n"
