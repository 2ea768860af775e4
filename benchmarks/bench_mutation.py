"""The mutation tier as a measurement: mutation score per codemod and per upstream file.

    python benchmarks/bench_mutation.py [--files 4.40.0,5.24.0] [--sample N] [--jobs 2]
                                        [--seed S] [--distinct] [--show K] [--json FILE]
                                        [--journal FILE]

Generates the mutants of each distinct upstream ``modeling_gemma.py`` (``tests/mutants.py``:
statements deleted, assignments rebound, calls scaled, constants changed, inside the units
the codemods claim), runs the series on each in process and prints, per codemod and per
file, how many were **refused** (drift error), **carried** (the output changed), **dropped**
(the output did not change: the failure the tier exists to catch) or hit an **error**; the
score is (refused + carried) / all.  A mutant counts for every codemod whose ``TARGETS``
claim the unit it lies in.  It also prints which codemods refused (from the drift message's
``drift: codemod <name>, target ...`` lines), the units with the most dropped mutants, the
first ``--show`` dropped ids, the time per series run and the total time.

``--sample N`` takes N mutants per file (fixed seed, the kinds taking turns); ``--distinct``
passes over mutants whose mutated unit text was already drawn from another file.  The
default is every mutant of every distinct file.  ``--jobs`` worker processes classify in
parallel (each generates the mutants of a file once, and parses it once: a mutant's
module is the parsed file with the mutated statement spliced in, ``mutants.Spliced``).
Progress goes to stderr.  Exit 0.

``--journal FILE`` makes a long run resumable: each outcome is appended to FILE (one JSON
line, with the series digest and the file's sha256) as soon as it is known, and a run with
the same journal takes the outcomes already there for the same series and file instead of
classifying those mutants again.  The full tier (every mutant of the 40 files) is about
26,000 series runs: an hour or more of both cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import mutants  # noqa: E402
from releases import DISTINCT_SUPPORTED, fetch  # noqa: E402

from patcher.series import engine  # noqa: E402
from patcher.series.contract import series_digest  # noqa: E402

# -- workers ---------------------------------------------------------------------------------
_SERIES: list = []
_FILES: dict[str, tuple[list[mutants.Mutant], str | Exception, mutants.Spliced]] = {}


def _init() -> None:
    _SERIES[:] = engine.load_series()


def _mutants_of(version: str) -> tuple[list[mutants.Mutant], str | Exception, mutants.Spliced]:
    """The mutants of one file, its unmutated output and its parse, made once per process."""
    if version not in _FILES:
        if not _SERIES:
            _init()
        source = fetch(version).modeling
        _FILES[version] = (
            mutants.generate(version, source, _SERIES),
            mutants.baseline(source, _SERIES),
            mutants.Spliced(source),
        )
    return _FILES[version]


def _generate(version: str) -> tuple[str, list[mutants.Mutant], float]:
    start = time.perf_counter()
    found, _, _ = _mutants_of(version)
    return version, [m.light() for m in found], time.perf_counter() - start


def _classify(task: tuple[str, list[int]]) -> list[mutants.Outcome]:
    version, indices = task
    found, baseline, spliced = _mutants_of(version)
    return [mutants.classify(found[i], _SERIES, baseline, spliced).light() for i in indices]


# -- journal ---------------------------------------------------------------------------------
def _row(o: mutants.Outcome) -> dict:
    return {
        "id": o.mutant.id,
        "version": o.mutant.version,
        "unit": o.mutant.unit,
        "member": o.mutant.member,
        "kind": o.mutant.kind,
        "codemods": list(o.mutant.codemods),
        "status": o.status,
        "refused_by": list(o.refused_by),
        "detail": o.detail,
        "seconds": round(o.seconds, 3),
        "cpu": round(o.cpu, 3),
    }


def _journalled(path: Path, digest: str, shas: dict[str, str]) -> dict[str, dict]:
    """The outcomes FILE already holds for this series and these files, by mutant id."""
    done: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short when a run was killed
            if row.get("series") == digest and shas.get(row.get("version")) == row.get("sha256"):
                done[row["id"]] = row
    return done


# -- report ----------------------------------------------------------------------------------
def _score(row: dict[str, int]) -> str:
    total = sum(row.values())
    return f"{(row['refused'] + row['carried']) / total:6.1%}" if total else "     -"


def _table(title: str, rows: dict[str, dict[str, int]], order: list[str], extra=None, width=0) -> list[str]:
    width = max([width, len(title), *(len(k) for k in order)])
    head = f"{title:<{width}}  {'mutants':>7}  " + "  ".join(f"{o:>7}" for o in mutants.OUTCOMES)
    lines = [head + "    score" + ("  refused by" if extra else "")]
    for key in order:
        row = rows[key]
        cells = "  ".join(f"{row[o]:>7}" for o in mutants.OUTCOMES)
        line = f"{key:<{width}}  {sum(row.values()):>7}  {cells}   {_score(row)}"
        if extra:
            line += "  " + extra(key)
        lines.append(line)
    return lines


def report(outcomes: list[mutants.Outcome], series: list, show: int) -> list[str]:
    out: list[str] = []
    by_codemod = mutants.tally(outcomes)
    names = [c.NAME for c in series if c.NAME in by_codemod] + sorted(
        set(by_codemod) - {c.NAME for c in series}
    )
    refusers: dict[str, Counter] = {name: Counter() for name in by_codemod}
    for o in outcomes:
        for name in o.mutant.codemods or ("(unattributed)",):
            refusers[name].update(o.refused_by)

    def refused_by(name: str) -> str:
        return ", ".join(f"{k} {v}" for k, v in refusers[name].most_common())

    out += _table("codemod", by_codemod, names, refused_by)
    out.append("")
    by_file = mutants.tally(outcomes, by="version")
    files = sorted(by_file, key=lambda v: [int(p) for p in v.split(".")])
    out += _table("file", by_file, files)
    total = dict.fromkeys(mutants.OUTCOMES, 0)
    for row in by_file.values():
        for k, v in row.items():
            total[k] += v
    out += _table("", {"all": total}, ["all"], width=max(len(f) for f in ["file", *files]))[1:]
    out.append("")
    by_kind = mutants.tally(outcomes, by="kind")
    out += _table("kind", by_kind, [k for k in mutants.KINDS if k in by_kind])
    every = Counter(name for o in outcomes for name in o.refused_by)
    out.append("")
    out.append("refusals by codemod: " + (", ".join(f"{k} {v}" for k, v in every.most_common()) or "none"))
    dropped = [o for o in outcomes if o.status == "dropped"]
    if dropped:
        units = Counter(o.mutant.unit for o in dropped)
        layout = sum(o.detail.startswith("the output differs only in layout") for o in dropped)
        out.append(f"dropped, by unit ({layout} of {len(dropped)} changed only the output's layout):")
        out += [f"  {unit:<48} {n}" for unit, n in units.most_common()]
        out.append(f"first {min(show, len(dropped))} dropped:")
        out += [f"  {o.mutant.id}" for o in dropped[:show]]
    errors = [o for o in outcomes if o.status == "error"]
    if errors:
        out.append(f"first {min(show, len(errors))} errors:")
        out += [f"  {o.mutant.id}  [{o.detail}]" for o in errors[:show]]
    return out


# -- main ------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", help="comma-separated releases (default: every distinct upstream file)")
    parser.add_argument("--sample", type=int, metavar="N", help="N mutants per file (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--distinct", action="store_true", help="sample over code not drawn from another file"
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--show", type=int, default=10, metavar="K", help="list the first K dropped ids")
    parser.add_argument("--json", metavar="FILE", help="also write every outcome to FILE")
    parser.add_argument("--journal", metavar="FILE", help="append outcomes to FILE; resume from it")
    parser.add_argument("--chunk", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args()

    versions = args.files.split(",") if args.files else list(DISTINCT_SUPPORTED)
    for v in versions:
        fetch(v)  # fetch (or find in the cache) before timing starts
    series = engine.load_series()
    start = time.perf_counter()
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    pool = ctx.Pool(args.jobs, initializer=_init) if args.jobs > 1 else None
    imap = pool.imap if pool else map

    generated: dict[str, list[mutants.Mutant]] = {}
    for version, found, seconds in imap(_generate, versions):
        generated[version] = found
        kinds = mutants.count_by_kind(found)
        print(f"{version}: {len(found)} mutants ({seconds:.1f} s) {kinds}", file=sys.stderr)
    keys: set[str] | None = set() if args.distinct else None
    chosen: dict[str, list[int]] = {}
    for version in versions:
        found = generated[version]
        picked = found if args.sample is None else mutants.sample(found, args.sample, args.seed, keys)
        index = {m.id: i for i, m in enumerate(found)}
        chosen[version] = [index[m.id] for m in picked]
    total = sum(len(idx) for idx in chosen.values())
    # the report's order: every chosen mutant, journalled or not (chosen keeps only those to run)
    order = {(v, i): n for n, (v, i) in enumerate((v, i) for v in versions for i in chosen[v])}
    outcomes: list[mutants.Outcome] = []
    counts: Counter = Counter()
    journal = None
    if args.journal:
        digest = series_digest()
        shas = {v: hashlib.sha256(fetch(v).modeling.encode()).hexdigest() for v in versions}
        done = _journalled(Path(args.journal), digest, shas)
        for v in versions:
            keep = []
            for i in chosen[v]:
                m = generated[v][i]
                row = done.get(m.id)
                if row is None:
                    keep.append(i)
                    continue
                outcomes.append(
                    mutants.Outcome(
                        m, row["status"], tuple(row["refused_by"]), row["detail"], row["seconds"], row["cpu"]
                    )
                )
            chosen[v] = keep
        counts.update(o.status for o in outcomes)
        print(f"journal {args.journal}: {len(outcomes)} of {total} outcomes already known", file=sys.stderr)
        journal = open(args.journal, "a")  # noqa: SIM115 (written batch by batch, closed below)
    tasks = [
        (v, idx[i : i + args.chunk]) for v, idx in chosen.items() for i in range(0, len(idx), args.chunk)
    ]
    print(f"classifying {total} mutants of {len(versions)} files, {args.jobs} job(s)", file=sys.stderr)

    last, resumed = 0.0, len(outcomes)
    run_imap = pool.imap_unordered if pool else map
    for batch in run_imap(_classify, tasks):
        outcomes += batch
        counts.update(o.status for o in batch)
        if journal:
            sha = shas[batch[0].mutant.version]
            journal.write(
                "".join(json.dumps({**_row(o), "series": digest, "sha256": sha}) + "\n" for o in batch)
            )
            journal.flush()
        now = time.perf_counter()
        if now - last > 5 or len(outcomes) == total:
            last = now
            rate = (len(outcomes) - resumed) / (now - start)
            eta = (total - len(outcomes)) / rate if rate else 0
            tally = " ".join(f"{k} {counts[k]}" for k in mutants.OUTCOMES)
            print(
                f"[{len(outcomes)}/{total}] {batch[-1].mutant.version} {tally}  (eta {eta / 60:.0f} min)",
                file=sys.stderr,
            )
    if pool:
        pool.close()
        pool.join()
    if journal:
        journal.close()
    elapsed = time.perf_counter() - start

    position = {m.id: (m.version, i) for v in versions for i, m in enumerate(generated[v])}
    outcomes.sort(key=lambda o: order[position[o.mutant.id]])
    for line in report(outcomes, series, args.show):
        print(line)
    runs = len(outcomes)
    cpu = sum(o.cpu for o in outcomes)
    wall = sum(o.seconds for o in outcomes)
    print()
    print(
        f"{runs} mutants of {len(versions)} files in {elapsed:.0f} s with {args.jobs} job(s); "
        f"one series run: {wall / max(runs, 1):.2f} s wall, {cpu / max(runs, 1):.2f} s CPU (mean)"
    )
    if args.json:
        rows = [_row(o) for o in outcomes]
        Path(args.json).write_text(
            json.dumps({"seconds": elapsed, "jobs": args.jobs, "outcomes": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
