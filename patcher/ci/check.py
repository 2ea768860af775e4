"""``patcher check`` and ``patcher lock``: the generated outputs against ``upstream_pins/lock.json``.

``check`` regenerates every pinned release and compares with the lock (exit 5 naming the
releases, grouped, and the codemods concerned; ``--diff`` prints the changes); ``lock``
rewrites the lock after an intended change.  Regeneration goes through
:func:`patcher.series.regen.regenerate`: one series run per distinct pair of upstream files, and
outputs reused from the output cache when their key matches.  That key is a digest of every
codemod source, the series, the runner and both upstream digests, so a hit is what those
inputs generate; ``--fresh`` ignores the cache all the same.  Wherever contributions are
computed (every generating upstream for ``lock``, each differing one for ``check``) the
series really runs step by step, and its result must equal the output in hand.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from patcher.errors import CheckError, DriftError, PatcherError
from patcher.progress import say
from patcher.series import attribution, lockfile, regen
from patcher.series.contract import OUTPUT_NAMES, Output, series_digest
from patcher.series.lockfile import Difference, Entry, Lock
from patcher.upstream import pins
from patcher.upstream.fetch import Upstream


# -- regenerating with contributions -------------------------------------------------------------
@dataclass
class Regeneration:
    """Every release's result and lock entry; provenance per output file where computed."""

    results: dict[str, Output | DriftError]
    entries: dict[str, Entry]
    provenance: dict[str, dict[str, attribution.Provenance]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # the series' codemod names


def _explain(up: Upstream) -> tuple[dict[str, str], dict[str, attribution.Provenance], dict[str, str]]:
    """One upstream's contributions, provenance per output file and output texts (a worker task)."""
    contributions: dict[str, str] = {}
    provenance: dict[str, attribution.Provenance] = {}
    texts: dict[str, str] = {}
    outputs = {**OUTPUT_NAMES, **up.family.output_names}
    for file, (names, steps) in regen.release_steps(up).items():
        prov = attribution.trace(steps, names)
        contributions.update(attribution.contributions(prov, steps[0], up.version))
        provenance[outputs[file]] = prov
        texts[outputs[file]] = steps[-1]
    return contributions, provenance, texts


def regenerate_entries(
    versions: list[str],
    *,
    explain: Callable[[str, dict[str, str]], bool] | None = None,
    jobs: int = 2,
    reuse: bool | None = None,
    progress: Callable[[str], None] | None = None,
    model: str = "gemma",
) -> Regeneration:
    """Regenerate ``versions`` (of the family ``model``) into lock entries.

    Contributions are computed for the generating releases ``explain(version, digests)``
    accepts (None: all of them), once per distinct pair of upstream files.
    """
    results = regen.regenerate(versions, jobs=jobs, reuse=reuse, progress=progress, model=model)
    outputs = {v: r for v, r in results.items() if isinstance(r, Output)}
    run = Regeneration(results, {})
    groups: dict[tuple[str, str | None], list[str]] = {}
    for v, output in outputs.items():
        if explain is None or explain(v, output.digests()):
            groups.setdefault(
                (output.upstream.modeling_sha256, output.upstream.configuration_sha256), []
            ).append(v)
    if groups and progress:
        progress(f"attributing lines to codemods for {len(groups)} distinct upstream files")
    explained = regen.map_releases(_explain, [outputs[g[0]].upstream for g in groups.values()], jobs=jobs)
    for members, (contributions, provenance, texts) in zip(groups.values(), explained, strict=True):
        first = outputs[members[0]]
        if any(first.files.get(name) != text for name, text in texts.items()):
            raise PatcherError(
                f"the output of transformers {first.upstream.version} differs from what the series "
                "generates step by step: the output cache is inconsistent; rerun with --fresh and report this"
            )
        for v in members:
            run.entries[v] = Entry(outputs=outputs[v].digests(), codemods=contributions)
            run.provenance[v] = provenance
    for v, result in results.items():
        if isinstance(result, DriftError):
            run.entries[v] = Entry(drift=lockfile.drifting_codemods(result))
        elif v not in run.entries:
            run.entries[v] = Entry(outputs=result.digests(), codemods={})
    for output in outputs.values():
        run.order += [r.codemod for r in output.reports if r.codemod not in run.order]
    return run


def lock_entry(output: Output) -> Entry:
    """The lock entry of one generated release: its output digests and the digest of the lines
    each codemod wrote, the series run step by step (as ``patcher lock`` records it)."""
    contributions, _, texts = _explain(output.upstream)
    if any(output.files.get(name) != text for name, text in texts.items()):
        raise PatcherError(
            f"the output of transformers {output.upstream.version} differs from what the series "
            "generates step by step: the output cache is inconsistent; "
            "set PATCHER_OUTPUT_CACHE=0 and report this"
        )
    return Entry(outputs=output.digests(), codemods=contributions)


def group_differences(differences: list[Difference]) -> list[list[Difference]]:
    """Differences that read the same, together (first appearance order)."""
    groups: dict[str, list[Difference]] = {}
    for d in differences:
        groups.setdefault(d.describe(), []).append(d)
    return list(groups.values())


def _progress(message: str) -> None:
    """Progress on stderr: every step on a terminal, the summary lines only in logs."""
    if sys.stderr.isatty() or not message.startswith("["):
        say(message)


def _summary(entries: dict[str, Entry]) -> str:
    drift = sum(e.drift is not None for e in entries.values())
    return f"{len(entries) - drift} generate, {drift} drift"


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


# -- commands --------------------------------------------------------------------------------------
def cmd_lock(args: argparse.Namespace) -> int:
    path = lockfile.lock_path(model=args.model)
    pinned = list(pins.load_pins(model=args.model))
    run = regenerate_entries(
        pinned, jobs=args.jobs, reuse=not args.fresh, progress=_progress, model=args.model
    )
    old = None
    if path.exists():
        try:
            old = lockfile.read_lock(path, args.model)
        except PatcherError:
            old = None  # a broken lock is simply replaced
    written = lockfile.write_lock(Lock(run.entries, series_digest()), path)
    if old is not None:
        for group in group_differences(lockfile.compare(old, run.entries, run.order)):
            spans = lockfile.release_spans([d.version for d in group], pinned)
            print(f"  {spans}: {group[0].describe()}")
    state = "wrote" if written else "unchanged:"
    print(f"{state} {_shown(path)}: {len(pinned)} releases ({_summary(run.entries)})")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    path = lockfile.lock_path(model=args.model)
    locked = lockfile.read_lock(path, args.model)
    pinned = list(pins.load_pins(model=args.model))

    def differs(version: str, digests: dict[str, str]) -> bool:
        entry = locked.releases.get(version)
        return entry is not None and entry.outputs is not None and entry.outputs != digests

    run = regenerate_entries(
        pinned, explain=differs, jobs=args.jobs, reuse=not args.fresh, progress=_progress, model=args.model
    )
    differences = lockfile.compare(locked, run.entries, run.order)
    if not differences:
        print(f"check: all {len(pinned)} pinned releases match {_shown(path)} ({_summary(run.entries)})")
        return 0
    groups = group_differences(differences)
    if args.diff:
        print_diffs(groups, run, locked, path)
    lines = [f"check: {len(differences)} of {len(pinned)} pinned releases differ from {_shown(path)}:"]
    for group in groups:
        lines.append(f"  {lockfile.release_spans([d.version for d in group], pinned)}: {group[0].describe()}")
    model = "" if args.model == "gemma" else f" --model {args.model}"
    hint = "" if args.diff else f"`patcher check{model} --diff` shows the changes; "
    lines.append(f"{hint}`patcher lock{model}` records them if they are intended")
    raise CheckError("\n".join(lines))


# -- --diff -----------------------------------------------------------------------------------------
def print_diffs(groups: list[list[Difference]], run: Regeneration, locked: Lock, path: Path) -> None:
    """For the first release of each group: the diff lock → now, hunks labelled by codemod."""
    from patcher.upstream.cache import BlobCache

    blobs = BlobCache()
    wanted = {  # release -> the locked digests of its differing files
        g[0].version: [sha for n in g[0].files if (sha := locked.releases[g[0].version].outputs.get(n))]
        for g in groups
        if g[0].kind == "outputs"
    }
    texts: dict[str, str | None] = {}
    for sha in {sha for shas in wanted.values() for sha in shas}:
        data = blobs.get(sha)
        texts[sha] = data.decode("utf-8") if data is not None else None
    missing = {version for version, shas in wanted.items() if any(texts[sha] is None for sha in shas)}
    if missing:
        texts.update(_locked_texts_from_git(sorted(missing), path))
    for group in groups:
        d = group[0]
        result = run.results.get(d.version)
        if d.kind == "now-drifts" or (d.kind == "drift" and isinstance(result, DriftError)):
            print(f"# transformers {d.version}:\n{result}\n")
            continue
        if d.kind != "outputs":
            continue
        for name in d.files:
            sha = locked.releases[d.version].outputs.get(name)
            head = run.results[d.version].files.get(name, "")
            base = texts.get(sha) if sha else ""
            if base is None:
                print(
                    f"# {name} of {d.version}: the locked text (sha256 {sha[:12]}…) is neither in the "
                    "cache nor regenerable from the commit of the lock; `patcher review --base REF` "
                    "shows the change\n"
                )
                continue
            hunks = attribution.attributed_hunks(
                base,
                head,
                base_prov=None,
                head_prov=run.provenance.get(d.version, {}).get(name),
                fromfile=f"a/{name} (locked, transformers {d.version})",
                tofile=f"b/{name} (now)",
                order=run.order,
                fallback=d.codemods,
            )
            print(
                attribution.render_hunks(
                    hunks, f"a/{name} (locked, transformers {d.version})", f"b/{name} (now)"
                )
            )


def _locked_texts_from_git(versions: list[str], path: Path) -> dict[str, str]:
    """Outputs of ``versions`` regenerated with the codemods of the commit that last wrote the
    lock (empty when that is not possible): where the locked texts come from on a cold cache."""
    from patcher.ci import gitsource

    try:
        repo = gitsource.open_repo(path.parent)
        rel = path.resolve().relative_to(Path(repo.working_tree_dir).resolve()).as_posix()
        commit = next(repo.iter_commits(paths=rel, max_count=1), None)
        if commit is None:
            return {}
        with tempfile.TemporaryDirectory(prefix="patcher-lock-") as tmp:
            gitsource.materialise(commit, Path(tmp))
            doc = gitsource.run_sides(
                [gitsource.Side(commit.hexsha[:12], Path(tmp))],
                {"mode": "outputs", "versions": versions},
                path.parent,
            )[commit.hexsha[:12]]
    except (PatcherError, ValueError, OSError):
        return {}
    return dict(doc["blobs"])


def register(command) -> None:
    p = command(
        "check", cmd_check, "regenerate every pinned release and compare with upstream_pins/lock.json"
    )
    p.add_argument("--diff", action="store_true", help="print the differences as diffs labelled by codemod")
    p.add_argument(
        "--fresh", action="store_true", help="ignore the output cache: run the series for every upstream"
    )
    p.add_argument("--jobs", type=int, default=2, metavar="N", help="worker processes (default 2)")
    p = command("lock", cmd_lock, "rewrite upstream_pins/lock.json from the outputs of every pinned release")
    p.add_argument(
        "--fresh", action="store_true", help="ignore the output cache: run the series for every upstream"
    )
    p.add_argument("--jobs", type=int, default=2, metavar="N", help="worker processes (default 2)")
