"""Benchmark of verification: warm check processes against fresh ones, and ``verify --all``.

    python benchmarks/bench_verify.py [--compare 4.46.1,4.46.2,4.50.0,5.24.0] [--all] [--jobs 2]

* warm ÷ fresh: the releases of ``--compare`` verified one after another in this process,
  first each in a fresh check process (``PATCHER_WARM_CHECKS=0``), then each forked from a
  warm server (a new pool: the first release pays the server's start); every report must be
  the same in both modes (status and detail of every check), or the benchmark fails;
* with ``--all``: ``patcher verify --all --jobs N`` end to end in a fresh process (target
  ≤ 8 minutes, issue 13), and the same with warm starts off when ``--all-fresh`` is given too.

Release environments must be built already (run ``patcher verify --all`` once).  The load
average is printed at the start and the end: on a shared machine only the ratios taken in one
run mean something.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from patcher.deploy.write import write_output
from patcher.series import engine
from patcher.series.generate import generate
from patcher.upstream import fetch, pins
from patcher.verify import release, warm

TARGET_ALL = 8 * 60.0


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _signature(report: release.VerifyReport) -> list:
    return [(c.name, c.config, c.status, c.detail) for c in report.checks]


def compare(versions: list[str]) -> None:
    series = engine.load_series()
    pinned = pins.load_pins()
    times: dict[str, dict[str, float]] = {"0": {}, "1": {}}
    signatures: dict[tuple[str, str], list] = {}
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        for version in versions:
            write_output(dict(generate(fetch.fetch(version, pinned), series).files), Path(tmp) / version)
        for mode in ("0", "1"):
            os.environ["PATCHER_WARM_CHECKS"] = mode
            warm.POOL = warm.Pool()
            for version in versions:
                start = time.perf_counter()
                report = release.verify_output(version, Path(tmp) / version)
                times[mode][version] = time.perf_counter() - start
                signatures[version, mode] = _signature(report)
            started = warm.POOL.started
            warm.POOL.close()
        del os.environ["PATCHER_WARM_CHECKS"]
    print(f"{'release':<10} {'fresh':>8} {'warm':>8}  same report")
    for version in versions:
        same = signatures[version, "0"] == signatures[version, "1"]
        fresh, hot = times["0"][version], times["1"][version]
        print(f"{version:<10} {fresh:7.1f}s {hot:7.1f}s  {'yes' if same else 'NO'}")
        if not same:
            raise SystemExit(f"{version}: the warm report differs from the fresh one")
    fresh, hot = sum(times["0"].values()), sum(times["1"].values())
    print(f"{len(versions)} releases: fresh {fresh:.1f}s, warm {hot:.1f}s ({started} server(s) started)")
    print(f"  warm / fresh                        {hot / fresh:8.2f}")


def verify_all(jobs: int, warm_checks: bool) -> float:
    env = {**os.environ, "PATCHER_WARM_CHECKS": "1" if warm_checks else "0"}
    cmd = [sys.executable, "-m", "patcher", "verify", "--all", "--jobs", str(jobs), "--json"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    try:
        counts = json.loads(done.stdout)["counts"]
    except (ValueError, KeyError):
        raise SystemExit(f"verify --all failed (exit {done.returncode}): {done.stderr[-2000:]}") from None
    what = "warm" if warm_checks else "fresh"
    print(f"  verify --all --jobs {jobs}, {what:<5}     {seconds:8.1f} s   {counts}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--compare", default="4.46.1,4.46.2,4.50.0,5.24.0")
    parser.add_argument("--all", action="store_true", help="also time `patcher verify --all`")
    parser.add_argument("--all-fresh", action="store_true", help="and the same with warm starts off")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    print(f"start: {load()} on {os.cpu_count()} cores", flush=True)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # as verify --all sets them
        os.environ.setdefault(name, "1")
    if args.compare:
        compare([v.strip() for v in args.compare.split(",") if v.strip()])
    if args.all:
        seconds = verify_all(args.jobs, True)
        print(f"  verify --all / 8 minutes            {seconds / TARGET_ALL:8.2f}   (target <= 1)")
        if args.all_fresh:
            fresh = verify_all(args.jobs, False)
            print(f"  verify --all, warm / fresh          {seconds / fresh:8.2f}")
    print(f"end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
