"""``patcher review --base REF``: what a change to the codemods does to every release's output.

Every pinned release is regenerated twice, with the codemods and series of commit REF (read
through git, see :mod:`patcher.ci.gitsource`) and with the working tree, each side in its own
process.  Releases whose outputs differ alike (the same lines added and removed, the
release's own version aside) form one group.  For one release per group both series run
again step by step, so that every hunk of the base→head diff is attributed to the codemod
that wrote or removed its lines (:mod:`patcher.series.attribution`).  The rendering lives in
:mod:`patcher.ci.review_render`.
"""

from __future__ import annotations

import argparse
import difflib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from patcher.ci import gitsource
from patcher.errors import UsageError
from patcher.progress import Bars
from patcher.series import attribution, lockfile
from patcher.series.contract import CONFIGURATION, MODELING, OUTPUT_NAMES
from patcher.upstream.families import GEMMA, Family, family
from patcher.upstream.pins import load_pins

WORKING_TREE = "working tree"
COMPANION = "(companion file)"


@dataclass
class FileChange:
    """One output file's diff for a group's first release."""

    name: str
    hunks: list[attribution.Hunk]

    @property
    def added(self) -> int:
        return sum(h.added for h in self.hunks)

    @property
    def removed(self) -> int:
        return sum(h.removed for h in self.hunks)


@dataclass
class Group:
    """Releases whose outputs change alike.

    ``status``: ``changed`` (outputs differ), ``now-generates``, ``now-drifts`` or
    ``drift-changed``; ``detail`` holds the drift messages of the first release.
    """

    releases: list[str]
    status: str
    codemods: tuple[str, ...] = ()
    files: list[FileChange] = field(default_factory=list)
    detail: str = ""
    spans: str = ""


@dataclass
class Review:
    """The whole comparison: base and head, the sources that changed, the groups."""

    base: str
    base_commit: str
    head: str
    pinned: list[str]
    changed_sources: list[str]
    groups: list[Group] = field(default_factory=list)

    @property
    def changed_releases(self) -> int:
        return sum(len(g.releases) for g in self.groups)


def _pins_dir(root: Path) -> Path:
    return Path(os.environ.get("PATCHER_PINS_DIR") or root / "upstream_pins")


def _change_key(version: str, base: dict, head: dict, blobs_b: dict, blobs_h: dict) -> tuple:
    """What makes two releases' changes "alike": the lines added and removed per file, with the
    release's own version (it appears in the notice) blanked."""
    parts = []
    for name in sorted(set(base["files"]) | set(head["files"])):
        old, new = base["files"].get(name), head["files"].get(name)
        if old == new:
            continue
        a = blobs_b[old].replace(version, "{release}").splitlines() if old else []
        b = blobs_h[new].replace(version, "{release}").splitlines() if new else []
        changed = [
            line
            for line in difflib.unified_diff(a, b, lineterm="", n=0)
            if line[:1] in "+-" and line[:3] not in ("+++", "---")
        ]
        parts.append((name, tuple(changed)))
    return tuple(parts)


def _status(base: dict, head: dict) -> str | None:
    if "drift" in base and "drift" in head:
        return None if base["drift"] == head["drift"] else "drift-changed"
    if "drift" in base:
        return "now-generates"
    if "drift" in head:
        return "now-drifts"
    return "changed" if base["files"] != head["files"] else None


def _drift_lines(message: str | None) -> dict[str, list[str]]:
    """A drift message's lines, by the codemod each names."""
    lines: dict[str, list[str]] = {}
    for line in (message or "").splitlines():
        name = lockfile.drifting_codemods(line)
        lines.setdefault(name[0] if name else "", []).append(line)
    return lines


def _drift_change(status: str, base: dict, head: dict, ref: str) -> tuple[tuple[str, ...], str]:
    """The codemods concerned by a change of drift, and the drift messages to show."""
    old, new = _drift_lines(base.get("drift")), _drift_lines(head.get("drift"))
    if status == "now-generates":
        return tuple(old), f"At {ref}:\n{base['drift']}"
    if status == "now-drifts":
        return tuple(new), f"In the {WORKING_TREE}:\n{head['drift']}"
    names = tuple(n for n in dict.fromkeys([*old, *new]) if old.get(n) != new.get(n))
    diff = difflib.unified_diff(
        base["drift"].splitlines(), head["drift"].splitlines(), ref, WORKING_TREE, lineterm="", n=0
    )
    return names, "\n".join(line for line in diff if not line.startswith("@@"))


def review(root: Path, ref: str, model: str = "gemma") -> Review:
    """Compare the outputs of every pinned release (of the family ``model``) at ``ref`` and in
    the working tree at ``root``."""
    repo = gitsource.open_repo(root)
    commit = gitsource.resolve(repo, ref)
    root = Path(repo.working_tree_dir)
    if not (root / "patches" / "series").is_file():
        raise UsageError(f"{root} has no patches/series; run review in a patcher repository")
    pins_dir = _pins_dir(root)
    pinned = list(load_pins(pins_dir, model=model))
    result = Review(ref, commit.hexsha, WORKING_TREE, pinned, gitsource.changed_sources(commit, root))
    if not result.changed_sources:  # the same codemods and runner: the same outputs
        return result
    with tempfile.TemporaryDirectory(prefix="patcher-review-") as tmp:
        gitsource.materialise(commit, Path(tmp))
        sides = [gitsource.Side(ref, Path(tmp)), gitsource.Side(WORKING_TREE, root)]
        with Bars("regenerating") as bars:
            request = {"mode": "outputs", "versions": pinned, "jobs": 1}
            if model != "gemma":
                request["model"] = model
            docs = gitsource.run_sides(sides, request, pins_dir, bars)
        base, head = docs[ref], docs[WORKING_TREE]
        groups: dict[tuple, Group] = {}
        for version in pinned:
            b, h = base["releases"][version], head["releases"][version]
            status = _status(b, h)
            if status is None:
                continue
            codemods: tuple[str, ...] = ()
            detail = ""
            if status == "changed":
                key: tuple = (status, _change_key(version, b, h, base["blobs"], head["blobs"]))
            else:
                codemods, detail = _drift_change(status, b, h, ref)
                key = (status, codemods)
            groups.setdefault(key, Group([], status, codemods, detail=detail)).releases.append(version)
        changed = [g for g in groups.values() if g.status == "changed"]
        if changed:
            firsts = [g.releases[0] for g in changed]
            with Bars("attributing") as bars:
                request = {"mode": "steps", "versions": firsts}
                if model != "gemma":
                    request["model"] = model
                steps = gitsource.run_sides(sides, request, pins_dir, bars)
            for group in changed:
                _attribute(group, base, head, steps[ref], steps[WORKING_TREE], family(model))
    for group in groups.values():
        group.spans = lockfile.release_spans(group.releases, pinned)
    result.groups = list(groups.values())
    return result


def _provenance(doc: dict, version: str, file: str) -> attribution.Provenance | None:
    entry = doc["releases"].get(version, {}).get(file)
    if entry is None:
        return None
    return attribution.trace([doc["blobs"][sha] for sha in entry["steps"]], entry["names"])


def _attribute(
    group: Group, base: dict, head: dict, steps_b: dict, steps_h: dict, fam: Family = GEMMA
) -> None:
    """Fill ``group.files`` with the first release's hunks, attributed to codemods."""
    version = group.releases[0]
    b, h = base["releases"][version]["files"], head["releases"][version]["files"]
    names = OUTPUT_NAMES if fam is GEMMA else fam.output_names
    upstream_of = {out: up for up, out in names.items()}
    files = (MODELING, CONFIGURATION) if fam is GEMMA else (fam.modeling, fam.configuration)
    order = [n for f in files for n in steps_h["releases"][version][f]["names"]]
    owners: list[str] = []
    for name in sorted(set(b) | set(h)):
        if b.get(name) == h.get(name):
            continue
        old = base["blobs"][b[name]] if name in b else ""
        new = head["blobs"][h[name]] if name in h else ""
        file = upstream_of.get(name)
        hunks = attribution.attributed_hunks(
            old,
            new,
            base_prov=_provenance(steps_b, version, file) if file else None,
            head_prov=_provenance(steps_h, version, file) if file else None,
            fromfile=f"a/{name}",
            tofile=f"b/{name}",
            order=order,
            fallback=(COMPANION,) if file is None else (),
        )
        group.files.append(FileChange(name, hunks))
        owners += [o for hunk in hunks for o in hunk.owners]
    rank = {n: i for i, n in enumerate(order)}
    group.codemods = tuple(sorted(set(owners), key=lambda n: (rank.get(n, len(rank)), n)))


# -- command ---------------------------------------------------------------------------------------
def cmd_review(args: argparse.Namespace) -> int:
    from patcher.ci import review_render

    report = review(Path(args.repo), args.base, args.model)
    print(review_render.render(report, args.format), end="")
    return 0


def register(command) -> None:
    p = command(
        "review",
        cmd_review,
        "how the outputs of every pinned release change between the codemods at REF and the working tree",
    )
    p.add_argument(
        "--base", required=True, metavar="REF", help="the git commit to compare with (e.g. origin/main)"
    )
    p.add_argument(
        "--format",
        choices=("markdown", "json", "github"),
        default="markdown",
        help="markdown (a PR comment), json, or github (workflow annotations); default markdown",
    )
    p.add_argument(
        "--repo", default=".", metavar="DIR", help="the repository (default: the current directory)"
    )
