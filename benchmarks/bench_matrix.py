"""Benchmark of SPEC section 10's whole-matrix target, printed as ratios taken in one run.

    python benchmarks/bench_matrix.py [--release 4.40.2] [--repeat 3] [--jobs 2]

* all ÷ one: regenerating every pinned release (``batch.generate_many``, ``--jobs`` worker
  processes, output reuse OFF so every distinct upstream file really runs the series) over
  regenerating one release (``generate.generate`` on ``--release``, in process) — target ≤ 10;
* the same on one process, to show what the workers buy;
* ``patcher matrix`` (``matrix.build_matrix``, reuse off) wall time, and over one release;
* for reference, the all-releases run with the output cache warm (what ``patcher check``
  pays when nothing changed), and both regenerations end to end in a fresh process (interpreter
  start, imports, pins, fetch from the cache, series; reuse off), all releases over one.

Times are the minimum of ``--repeat`` runs.  Every pinned release's upstream files must be
in the cache (they are fetched, downloading what is missing, before timing starts).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from patcher.ci import matrix
from patcher.series import batch, engine
from patcher.series.generate import generate
from patcher.upstream import fetch, pins


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


REGENERATE = "from patcher.series import batch; batch.generate_many({versions!r}, jobs={jobs}, reuse=False)"


def fresh_process(versions: list[str], jobs: int) -> None:
    code = REGENERATE.format(versions=versions, jobs=jobs)
    subprocess.run([sys.executable, "-c", code], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--release", default="4.40.2")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    pinned = pins.load_pins()
    versions = list(pinned)
    ups = [fetch.fetch(v, pinned) for v in versions]  # warm the upstream cache first
    distinct = len(batch.group_releases(ups))
    series = engine.load_series()
    up = fetch.fetch(args.release, pinned)

    one = best(lambda: generate(up, series), max(args.repeat, 5))
    many = best(lambda: batch.generate_many(versions, jobs=args.jobs, reuse=False), args.repeat)
    serial = best(lambda: batch.generate_many(versions, jobs=1, reuse=False), 1)
    survey = best(lambda: matrix.build_matrix(versions, jobs=args.jobs, reuse=False), args.repeat)
    one_cold = best(lambda: fresh_process([args.release], args.jobs), args.repeat)
    many_cold = best(lambda: fresh_process(versions, args.jobs), args.repeat)
    batch.generate_many(versions, jobs=args.jobs, reuse=True)  # fill the output cache
    reused = best(lambda: batch.generate_many(versions, jobs=args.jobs, reuse=True), args.repeat)

    print(f"{len(versions)} pinned releases, {distinct} distinct upstream files")
    print(f"  one release ({args.release}), generate    {one * 1000:8.1f} ms")
    print(f"  all releases, {args.jobs} processes, no reuse {many * 1000:8.1f} ms")
    print(f"  all releases, 1 process, no reuse   {serial * 1000:8.1f} ms")
    print(f"  patcher matrix, {args.jobs} processes        {survey * 1000:8.1f} ms")
    print(f"  all releases, output cache warm     {reused * 1000:8.1f} ms")
    print(f"  one release, fresh process          {one_cold * 1000:8.1f} ms")
    print(f"  all releases, fresh process         {many_cold * 1000:8.1f} ms")
    print(f"  all / one (no reuse)                {many / one:8.2f}   (target <= 10)")
    print(f"  all / one, 1 process                {serial / one:8.2f}")
    print(f"  matrix / one                        {survey / one:8.2f}")
    print(f"  all / one (output cache warm)       {reused / one:8.2f}")
    print(f"  all / one, fresh processes          {many_cold / one_cold:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
