"""Benchmark of SPEC section 10's whole-matrix target, printed as ratios taken in one run.

    python benchmarks/bench_matrix.py [--release 4.40.2] [--repeat 3] [--jobs 2]

* all ÷ one: regenerating every pinned release (``batch.generate_many``, ``--jobs`` worker
  processes, output reuse OFF so every distinct upstream file really runs the series) over
  regenerating one release (``generate.generate`` on ``--release``, in process) — target ≤ 10;
* the same on one process, to show what the workers buy;
* ``patcher matrix`` (``matrix.build_matrix``, reuse off) wall time, and over one release;
* for reference, the all-releases run with the output cache warm (what ``patcher check``
  pays when nothing changed), and both regenerations end to end in a fresh process (interpreter
  start, imports, pins, fetch from the cache, series; reuse off), all releases over one;
* the floors of all ÷ one: parsing each distinct upstream file once, spread over ``--jobs``
  processes, over one release; and what a perfect memo of each codemod's result per claimed unit
  (``TARGETS``, keyed by the units' source) could save, from how many distinct forms each
  codemod's units take across the distinct upstream files.

The machine's load (``os.getloadavg``) is printed at the start and the end: on a shared machine
only the ratios mean something.

Times are the minimum of ``--repeat`` runs.  Every pinned release's upstream files must be
in the cache (they are fetched, downloading what is missing, before timing starts).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time

import libcst as cst
from libcst.codemod import CodemodContext

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


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def unit_source(module: cst.Module, qualname: str) -> str | None:
    """The source of the unit ``qualname`` (``GemmaModel.forward``) names, None if absent."""
    from patches import _shapes

    body, node = list(module.body), None
    for part in qualname.split("."):
        i = _shapes.find(body, part)
        if i is None:
            return None
        node = body[i]
        inner = getattr(node, "body", None)
        body = list(inner.body) if isinstance(inner, cst.IndentedBlock) else []
    return module.code_for_node(node)


def memo_ceiling(series, groups, release_source: str) -> list[str]:
    """Per codemod: in how many distinct forms its named units (``TARGETS`` that are
    qualified names) come across the distinct upstream files, and its share of the series'
    codemod time on the reference release; then the share of that time a perfect per-unit memo
    could save (a codemod whose units take k forms in n files runs k times instead of n).  It is
    a ceiling: the key counted here is the named units alone, while a sound key must also hold
    whatever else the codemod reads (mask-helpers reads GemmaModel, quantize GemmaForCausalLM,
    the import codemods the whole module), and the pseudo-targets count as always shared."""
    modules = [cst.parse_module(g[0].modeling) for g in groups]
    context = CodemodContext(filename="modeling_gemma.py")
    context.scratch["notice"] = None
    seconds: dict[str, float] = {}
    for _ in range(3):  # the least disturbed of three runs, per codemod
        module = cst.parse_module(release_source)
        for cls in series:
            if cls.FILE != "modeling_gemma.py":
                continue
            start = time.perf_counter()
            module = cls(context).transform_module(module)
            took = time.perf_counter() - start
            seconds[cls.NAME] = min(seconds.get(cls.NAME, took), took)
    total = sum(seconds.values())
    lines, saved = [], 0.0
    for cls in series:
        if cls.NAME not in seconds:
            continue
        named = [q for q in cls.TARGETS if all(p.isidentifier() for p in q.split("."))]
        forms = {
            hashlib.sha256(repr([unit_source(m, q) for q in named]).encode()).hexdigest() for m in modules
        }
        k = len(forms) if named else 1
        saved += seconds[cls.NAME] / total * (1 - k / len(modules))
        lines.append(
            f"    {cls.NAME:<30} {k:3} forms in {len(modules)} files,"
            f" {seconds[cls.NAME] / total:5.1%} of codemod time"
        )
    lines.append(
        f"    a perfect per-unit memo saves at most {saved:5.1%} of the codemods' time (not parse or render)"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--release", default="4.40.2")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    print(f"start: {load()} on {os.cpu_count()} cores", flush=True)
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
    groups = batch.group_releases(ups)
    parse_one = best(lambda: cst.parse_module(up.modeling), 3)
    parse_all = sum(best(lambda g=g: cst.parse_module(g[0].modeling), 1) for g in groups)
    ceiling = memo_ceiling(series, groups, up.modeling)

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
    print("floors of all / one:")
    print(
        f"  parsing alone: {distinct} files {parse_all * 1000:.0f} ms / {args.jobs} processes / one release"
        f" {one * 1000:.0f} ms = {parse_all / args.jobs / one:5.2f}  (modeling files only; one parse of"
        f" {args.release} is {parse_one / one:.0%} of its release)"
    )
    print("  per-unit memo ceiling (modeling codemods):")
    print("\n".join(ceiling))
    print(f"end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
