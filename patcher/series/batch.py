"""Regenerating many pinned releases at once, doing the work once per distinct upstream.

115 releases have only 40 distinct pairs of upstream files, and an output depends only on
those files, the codemods and the per-release notice (SPEC §8).  So ``generate_many`` groups
the releases by (modeling sha256, configuration sha256), runs the series once per group
(groups spread over worker processes, each of which imports libcst and loads the series
once) and derives every other release of a group from the group's output by swapping in its
own notice, the only per-release text of an output.

``map_upstreams`` is the process-pool part alone, for other whole-matrix commands
(``patcher matrix``): it runs a module-level function on a list of upstreams in parallel.
This module imports no libcst: the engine is loaded only where a series actually runs.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TYPE_CHECKING, TypeVar

from patcher.errors import DriftError
from patcher.series.contract import CONFIGURATION, MODELING, OUTPUT_NAMES, Output
from patcher.series.reuse import OutputCache, output_key
from patcher.upstream import fetch, pins

if TYPE_CHECKING:
    from patches._base import VaccCodemod

Upstream = fetch.Upstream
Progress = Callable[[str], None]
T = TypeVar("T")
Key = tuple[str, "str | None"]

__all__ = ["derive", "describe", "generate_many", "group_releases", "map_upstreams", "series"]


# -- grouping --------------------------------------------------------------------------------
def group_key(up: Upstream) -> Key:
    """What an output is a function of besides its notice: the two upstream digests."""
    return (up.modeling_sha256, up.configuration_sha256)


def group_releases(upstreams: list[Upstream]) -> list[list[Upstream]]:
    """Upstreams sharing both files, grouped; groups and members keep the given order."""
    groups: dict[Key, list[Upstream]] = {}
    for up in upstreams:
        groups.setdefault(group_key(up), []).append(up)
    return list(groups.values())


def describe(group: list[Upstream]) -> str:
    """A group for progress lines: its first release and how many share its files."""
    more = len(group) - 1
    return group[0].version + (f" (+{more} sharing its files)" if more else "")


# -- the worker side -------------------------------------------------------------------------
_SERIES: list[type[VaccCodemod]] | None = None


def series() -> list[type[VaccCodemod]]:
    """The series, loaded once per process (a forked worker inherits the parent's)."""
    global _SERIES
    if _SERIES is None:
        from patcher.series import engine

        _SERIES = engine.load_series()
    return _SERIES


def _init_worker() -> None:
    # Ctrl-C reaches the whole process group: the parent stops the workers (see _stop), so a
    # worker must not die on its own with a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    series()


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: drop the queued tasks and end the running ones (Ctrl-C, or an error
    in one task that fails the whole command), instead of waiting for them all."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=1.0)


def map_upstreams(
    task: Callable[[Upstream], T],
    items: list[Upstream],
    *,
    jobs: int = 2,
    done: Callable[[int, T], None] | None = None,
) -> list[T]:
    """``[task(up) for up in items]``, over ``jobs`` worker processes when that pays.

    ``task`` must be a module-level function (it is pickled by name); it gets the series
    from :func:`series`.  The largest files go first so that the workers finish together.
    ``done(index, result)`` is called in the parent as each result arrives.
    """
    results: dict[int, T] = {}
    if jobs <= 1 or len(items) <= 1:
        for i, up in enumerate(items):
            results[i] = task(up)
            if done:
                done(i, results[i])
        return [results[i] for i in range(len(items))]
    series()  # loaded here so that forked workers start with it
    order = sorted(range(len(items)), key=lambda i: -len(items[i].modeling))
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(items)), initializer=_init_worker)
    try:
        futures = {pool.submit(task, items[i]): i for i in order}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            if done:
                done(i, results[i])
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown()
    return [results[i] for i in range(len(items))]


def _generate(up: Upstream) -> Output | DriftError:
    """One group's generation, in a worker: the output, or the drift as a value."""
    from patcher.series.generate import generate

    try:
        return generate(up, series())
    except DriftError as exc:
        return exc


# -- notices ---------------------------------------------------------------------------------
def derive(output: Output, target: Upstream) -> Output:
    """``output`` (of a release sharing ``target``'s upstream files) turned into ``target``'s.

    The two differ only in the notice of each generated file; it must occur exactly once.
    """
    from patcher.series.notice import notice

    source = output.upstream
    assert group_key(source) == group_key(target), (source.version, target.version)
    if source.version == target.version:
        return output
    names = {file: [c.NAME for c in series() if c.FILE == file] for file in (MODELING, CONFIGURATION)}
    sha = {MODELING: source.modeling_sha256, CONFIGURATION: source.configuration_sha256}
    files = dict(output.files)
    for file, out_name in OUTPUT_NAMES.items():
        if out_name not in files:
            continue
        old = notice(source, file, sha[file], names[file])
        new = notice(target, file, sha[file], names[file])
        count = files[out_name].count(old)
        assert count == 1, f"{out_name} of {source.version} holds its notice {count} times, not once"
        files[out_name] = files[out_name].replace(old, new)
    return Output(target, files, list(output.reports))


# -- many releases ---------------------------------------------------------------------------
def _reuse_default() -> bool:
    return os.environ.get("PATCHER_OUTPUT_CACHE", "1") != "0"


def generate_many(
    versions: list[str],
    *,
    jobs: int = 2,
    progress: Progress | None = None,
    reuse: bool | None = None,
) -> dict[str, Output | DriftError]:
    """The output (or the ``DriftError``) of each pinned release in ``versions``.

    Byte-identical to ``generate.generate`` release by release, but the series runs once per
    distinct pair of upstream files.  A drifting group gives the same error to all its
    releases.  With ``reuse`` (default: unless ``PATCHER_OUTPUT_CACHE=0``) outputs come from
    and go to the output cache of :mod:`patcher.series.reuse`; without it nothing is read or
    written there, so every group really runs.
    """
    reuse = _reuse_default() if reuse is None else reuse
    pinned = pins.load_pins()
    ups = [fetch.fetch(v, pinned, progress=progress) for v in dict.fromkeys(versions)]
    groups = group_releases(ups)
    cache = OutputCache() if reuse else None
    found: dict[str, Output] = {}
    if cache is not None:
        for up in ups:
            hit = cache.get(output_key(up, None), up)
            if hit is not None:
                found[up.version] = hit
    todo = [g for g in groups if not any(up.version in found for up in g)]
    if progress:
        workers = f" on {min(jobs, len(todo))} processes" if jobs > 1 and len(todo) > 1 else ""
        progress(
            f"regenerating {len(ups)} releases: {len(groups)} distinct upstream files, "
            f"{len(todo)} to run{workers}"
        )
    ran: list[int] = []

    def done(i: int, result: Output | DriftError) -> None:
        ran.append(i)
        if progress:
            state = "drift" if isinstance(result, DriftError) else "ok"
            progress(f"[{len(ran)}/{len(todo)}] {describe(todo[i])}: {state}")

    results = map_upstreams(_generate, [g[0] for g in todo], jobs=jobs, done=done)
    base: dict[Key, Output | DriftError] = {group_key(g[0]): r for g, r in zip(todo, results, strict=True)}
    out: dict[str, Output | DriftError] = {}
    for group in groups:
        source = base.get(group_key(group[0]))
        if source is None:  # reused: derive the group from any cached member
            source = next(found[up.version] for up in group if up.version in found)
        for up in group:
            if isinstance(source, DriftError):
                out[up.version] = source
            elif up.version in found:
                out[up.version] = found[up.version]
            else:
                out[up.version] = derive(source, up)
                if cache is not None:
                    cache.put(output_key(up, None), out[up.version])
    return {v: out[v] for v in dict.fromkeys(versions)}
