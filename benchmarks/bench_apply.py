"""Benchmarks of SPEC section 10, printed as ratios taken in one run.

    python benchmarks/bench_apply.py [--release 4.40.2] [--repeat 7]

* series ÷ parse: the whole series on one release (parse, codemods, render) over one
  ``libcst.parse_module`` of the same file (target ≤ 3);
* apply ÷ baseline: ``patcher apply`` end to end in a fresh process, over
  ``python -c "import libcst"`` plus one parse (target ≤ 2) — both with the output reused
  from the cache (the usual case) and with the series forced to run (PATCHER_OUTPUT_CACHE=0);
* the floor of apply ÷ baseline: ``import libcst`` in a fresh process plus the series run in
  process (parse, codemods, render, no first-run costs), over the same baseline — what an
  ``apply`` with no overhead at all would score, and what it would score with the codemods at
  the series target (3 parses); then the same floor with ``import libcst.codemod`` in place of
  ``import libcst``: SPEC §4 makes each codemod a ``VisitorBasedCodemodCommand``, and
  ``libcst.codemod`` imports ``libcst.matchers`` (``MatcherDecoratableTransformer``), so no
  ``apply`` that runs the codemods can import less;
* peak memory of ``patcher apply`` (target < 200 MB).

The commands run without ``PYTHONDONTWRITEBYTECODE`` (many containers set it): a user's
patcher has its bytecode cached (pip compiles at install time, an editable install on first
import), and with the variable set every ``patcher`` process would compile patcher's own
modules anew.

Times are the minimum of ``--repeat`` runs (the least disturbed by other load), and the machine's
load is printed at the start and the end: on a shared machine only the ratios mean something.
The upstream file must be in the cache (run ``patcher apply`` once first).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import libcst as cst

from patcher.series import engine
from patcher.upstream import fetch, pins

#: SPEC section 10: the codemods of one release cost at most this many parses of its file.
SERIES_TARGET = 3


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def child_seconds_and_rss(argv: list[str], repeat: int) -> tuple[float, float]:
    """Minimum wall time of a command and its peak RSS (MB, from wait4)."""
    times, peak = [], 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        times.append(time.perf_counter() - start)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"command failed: {' '.join(argv)}")
        peak = max(peak, usage.ru_maxrss / 1024)
    return min(times), peak


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--release", default="4.40.2")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    print(f"start: {load()} on {os.cpu_count()} cores", flush=True)
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        print("PYTHONDONTWRITEBYTECODE unset for the commands timed (bytecode cached, as installed)")
    up = fetch.fetch(args.release, pins.load_pins())
    series = engine.load_series()
    source = up.modeling

    parse = best(lambda: cst.parse_module(source), args.repeat)
    module = cst.parse_module(source)
    render = best(lambda: module.code, args.repeat)
    run = best(lambda: engine.run(source, series), args.repeat)
    codemods = run - parse - render
    print(f"release {args.release}: modeling_gemma.py {len(source.splitlines())} lines")
    print(f"  parse_module               {parse * 1000:8.1f} ms")
    print(f"  series: parse + 11 codemods + render {run * 1000:6.1f} ms")
    print(f"  codemods alone             {codemods * 1000:8.1f} ms")
    print(f"  codemods / parse           {codemods / parse:8.2f}   (target <= {SERIES_TARGET})")
    print(f"  whole series / parse       {run / parse:8.2f}   (parse and render included)")

    import_libcst, _ = child_seconds_and_rss([sys.executable, "-c", "import libcst"], args.repeat)
    import_codemod, _ = child_seconds_and_rss([sys.executable, "-c", "import libcst.codemod"], args.repeat)
    baseline = import_libcst + parse
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            sys.executable,
            "-m",
            "patcher",
            "apply",
            "--transformers",
            args.release,
            "--out",
            f"{tmp}/out",
        ]
        child_seconds_and_rss(argv, 1)  # fill the output cache
        reused, rss_reused = child_seconds_and_rss(argv, args.repeat)
        os.environ["PATCHER_OUTPUT_CACHE"] = "0"
        try:
            fresh, rss_fresh = child_seconds_and_rss(argv, args.repeat)
        finally:
            del os.environ["PATCHER_OUTPUT_CACHE"]
    print(f"  python -c 'import libcst'  {import_libcst * 1000:8.1f} ms")
    for label, seconds in (("output reused", reused), ("series run", fresh)):
        ratio = seconds / baseline
        print(
            f"  apply, {label:<19} {seconds * 1000:8.1f} ms   / (import + parse) {ratio:5.2f}  (target <= 2)"
        )
    floor = (import_libcst + run) / baseline
    at_target = (import_libcst + parse + SERIES_TARGET * parse + render) / baseline
    print(f"  floor: (import + series in process) / (import + parse) {floor:5.2f}")
    print(f"  the same with codemods at their target, {SERIES_TARGET} parses   {at_target:5.2f}")
    print(f"  python -c 'import libcst.codemod' {import_codemod * 1000:6.1f} ms (the codemods' base class)")
    spec_floor = (import_codemod + run) / baseline
    print(f"  floor with it: (import libcst.codemod + series) / (import + parse) {spec_floor:5.2f}")
    print(f"  apply peak RSS             {max(rss_reused, rss_fresh):8.1f} MB  (target < 200)")
    print(f"end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
