"""``patcher verify``: one release (``--transformers SPEC``) or every pinned release (``--all``).

``--upstream FILE [--config-upstream FILE] --transformers SPEC`` verifies the output of a
local upstream against that local upstream itself, loaded over release SPEC's Gemma in
SPEC's environment (see :class:`patcher.verify.release.Overlay`).

``--dir DIR`` verifies the files found in DIR (a ``build/`` directory or a checkpoint) as they
are, against the release their notice names, and reports files that differ from what patcher
generates for it (see :mod:`patcher.verify.found`).

``--toolchain NAME`` runs the checks on another stack (:mod:`patcher.verify.toolchains`); a release
the toolchain cannot run is reported as refused by it, with the reason, and is not a failure.

``--all`` regenerates every pinned release at once (:func:`patcher.series.batch.generate_many`, the
series once per distinct upstream pair), then verifies each release's output in that
release's own cached environment, ``--jobs`` at a time.  Releases that share upstream files
are still verified one by one: their environments differ.  A release whose series drifts is
not verified and counts as a failure, like one whose environment cannot be built.  The run
ends with a summary table, one row per release, and the total time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from patcher.errors import DriftError, PatcherError, UsageError
from patcher.upstream import pins
from patcher.verify import toolchains
from patcher.verify.toolchains import Toolchain

if TYPE_CHECKING:
    from patcher.verify.release import VerifyReport

Progress = Callable[[str], None]
RESULTS = ("passed", "failed", "drift", "error", "refused")
#: Exit codes of ``--all``: a failed check outranks drift, which outranks an environment error.
#: Releases the toolchain refuses do not count, unless it refused every release (exit 7).
EXIT_CODES = {"failed": 1, "drift": 3, "error": 4}
#: Exit code of a verification that found hand-edited files (and no failed check).
EDITED_EXIT = 5
#: Exit code when the toolchain refused the release (or every release): nothing was verified.
REFUSED_EXIT = 7
#: Thread-count variables set to 1 for each check process (see ``_one_thread_per_check``).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

__all__ = ["Outcome", "exit_code", "register", "render_summary", "verify_all"]


@dataclass
class Outcome:
    """What verifying one release came to: ``passed``, ``failed``, ``drift``, ``error`` or
    ``refused`` (by the toolchain, with the reason in ``error``)."""

    version: str
    result: str
    seconds: float = 0.0
    report: VerifyReport | None = None
    drift: list[str] = field(default_factory=list)  # the drifting codemods
    error: str = ""

    @property
    def detail(self) -> str:
        """The result in words, for the summary table."""
        if self.result == "drift":
            return f"DRIFT ({', '.join(self.drift)})"
        if self.result == "error":
            return self.error or "error"
        if self.result == "refused":
            return f"toolchain refuses: {self.error}"
        assert self.report is not None
        skipped = len(self.report.skipped)  # not applicable: neither passed nor failed
        decisions = sum(1 for check in self.report.checks if check.decision)
        total = len(self.report.checks) - skipped
        passed = total - len(self.report.failed)
        suffix = f", {skipped - decisions} n/a" if skipped - decisions else ""
        suffix += f", {decisions} vendor decision" if decisions else ""
        if self.result == "passed":
            return f"passed {passed}/{total}{suffix}"
        return f"FAILED {passed}/{total} ({failed_checks(self.report)}){suffix}"

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "result": self.result,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
            "drift": self.drift,
            "error": self.error or None,
            "report": self.report.as_dict() if self.report else None,
        }


def failed_checks(report: VerifyReport) -> str:
    """The failing checks with their configs: "logits: mqa, mha; generate: exception mqa"."""
    by_name: dict[str, list[str]] = {}
    for check in report.failed:
        label = f"exception {check.config}" if check.status == "exception" else check.config
        by_name.setdefault(check.name, []).append(label)
    text = "; ".join(f"{name}: {', '.join(configs)}" for name, configs in by_name.items())
    return ("the check script crashed; " if report.crashed else "") + text


def drifting_codemods(error: DriftError) -> list[str]:
    """The codemod names of a drift error's lines ("drift: codemod NAME, target ...")."""
    names = []
    for line in str(error).splitlines():
        if line.startswith("drift: codemod "):
            names.append(line[len("drift: codemod ") :].split(",", 1)[0])
    return list(dict.fromkeys(names)) or ["?"]


@contextmanager
def _one_thread_per_check() -> Iterator[None]:
    """Run each check process with one torch/BLAS thread (the variables reach it through
    ``Env.environ``); variables the user set are left alone.

    The checks run tiny models, where intra-op threads cost more than they give: on 2 cores,
    4 releases took 44-54 s with torch's default of one thread per core and 22-25 s with one
    thread; with ``--jobs 2`` and a thread per core in each process they took 75-80 s.
    """
    added = [name for name in THREAD_VARIABLES if name not in os.environ]
    for name in added:
        os.environ[name] = "1"
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def verify_all(
    versions: list[str] | None = None,
    *,
    jobs: int = 1,
    progress: Progress | None = None,
    toolchain: Toolchain = toolchains.CURRENT,
    model: str = "gemma",
) -> list[Outcome]:
    """Regenerate and verify each release of ``versions`` (default: every pinned release) of
    the family ``model`` on ``toolchain``."""
    from patcher.series import batch
    from patcher.verify import release, warm
    from patcher.verify.envs import EnvError, ToolchainRefused

    say = progress or (lambda message: None)
    versions = list(pins.load_pins(model=model)) if versions is None else list(dict.fromkeys(versions))
    if model == "gemma":
        # generation's own "[k/n]" lines count upstream files; only the verification ones are shown
        outputs = batch.generate_many(versions, jobs=2, progress=lambda m: m.startswith("[") or say(m))
    else:
        outputs = _generate_family(versions, model)
    total = len(versions)
    lock = threading.Lock()

    def one(index: int, version: str, root: Path) -> Outcome:
        tag = f"[{index}/{total}] {version}"
        output = outputs[version]
        if isinstance(output, DriftError):
            outcome = Outcome(version, "drift", drift=drifting_codemods(output))
        else:
            with lock:
                say(f"{tag} …")
            started = time.monotonic()
            out_dir = root / version
            _write_scratch(output.files, out_dir)

            def relay(message: str) -> None:
                if not message.startswith("verifying "):
                    say(f"{tag}: {message}")

            try:
                report = release.verify_output(
                    version, out_dir, progress=relay, toolchain=toolchain, model=model
                )
            except ToolchainRefused as refused:
                outcome = Outcome(version, "refused", time.monotonic() - started, error=refused.reason)
            except PatcherError as exc:  # the environment could not be built, or bad input
                what = "env build error" if isinstance(exc, EnvError) else "error"
                error = f"{what}: {' '.join(str(exc).split())}"
                outcome = Outcome(version, "error", time.monotonic() - started, error=error)
            else:
                result = "passed" if report.ok else "failed"
                outcome = Outcome(version, result, time.monotonic() - started, report=report)
        with lock:
            say(f"{tag} {outcome.detail}" + (f" in {outcome.seconds:.1f}s" if outcome.seconds else ""))
        return outcome

    with tempfile.TemporaryDirectory(prefix="patcher-verify-all-") as tmp, _one_thread_per_check():
        items = list(enumerate(versions, 1))
        if jobs <= 1:
            return [one(i, v, Path(tmp)) for i, v in items]
        pool = ThreadPoolExecutor(max_workers=jobs)
        futures = []
        try:
            futures += [pool.submit(one, i, v, Path(tmp)) for i, v in items]
            return [future.result() for future in futures]
        except KeyboardInterrupt:  # only this thread gets it: stop the checks the others wait on
            for future in futures:
                future.cancel()  # those not started: no worker takes them up meanwhile
            warm.POOL.interrupt()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _generate_family(versions: list[str], model: str) -> dict:
    """Each release's output (or its DriftError) for a family other than gemma, one after the
    other; the output cache still shares work between releases with the same upstream."""
    from patcher.series.reuse import generate_cached
    from patcher.upstream import fetch

    outputs: dict = {}
    for version in versions:
        try:
            outputs[version] = generate_cached(fetch.fetch(version, model=model))
        except DriftError as exc:
            outputs[version] = exc
    return outputs


def _write_scratch(files: dict[str, str], out_dir: Path) -> None:
    """Write an output into a scratch directory: no atomic swap or fsync (``write_output``'s
    guarantees for users' directories) for files that live as long as one check run."""
    out_dir.mkdir(parents=True)
    for name, text in files.items():
        (out_dir / name).write_text(text, encoding="utf-8", newline="")


def exit_code(outcomes: list[Outcome]) -> int:
    """0 when every release the toolchain accepts passed; else 1 (a check failed), 3 (drift)
    or 4 (environment); 7 when the toolchain refused every release (nothing verified)."""
    seen = {o.result for o in outcomes}
    for result, code in EXIT_CODES.items():
        if result in seen:
            return code
    if outcomes and seen == {"refused"}:
        return REFUSED_EXIT
    return 0


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    return {result: sum(o.result == result for o in outcomes) for result in RESULTS}


def render_summary(
    outcomes: list[Outcome], seconds: float, jobs: int, toolchain: Toolchain = toolchains.CURRENT
) -> str:
    """The final table: one row per release (result in words, time), then the releases by
    result as ranges, then the totals."""
    rows = [("release", "result", "time")]
    rows += [(o.version, o.detail, f"{o.seconds:.1f}s" if o.seconds else "-") for o in outcomes]
    w0 = max(len(r[0]) for r in rows)
    w1 = min(max(len(r[1]) for r in rows), 100)
    lines = [f"{a:<{w0}}  {b:<{w1}}  {c:>7}".rstrip() for a, b, c in rows]
    n = counts(outcomes)
    lines.append("")
    lines += _ranges(outcomes)
    lines.append(
        f"{len(outcomes)} releases on toolchain {toolchain.name}: {n['passed']} passed, "
        f"{n['failed']} failed, {n['drift']} drift, {n['error']} env build errors, "
        f"{n['refused']} refused by the toolchain; "
        f"total {seconds:.1f}s with --jobs {jobs}"
    )
    return "\n".join(lines) + "\n"


def _ranges(outcomes: list[Outcome]) -> list[str]:
    """``passed: 4.38.0–4.55.4 (70)``, and the refused ones grouped by reason."""
    from patcher.series.lockfile import release_spans

    order = [o.version for o in outcomes]
    lines = []
    for result in RESULTS:
        if result == "refused":
            continue
        chosen = [o.version for o in outcomes if o.result == result]
        if chosen:
            lines.append(f"{result}: {release_spans(chosen, order)} ({len(chosen)})")
    reasons: dict[str, list[str]] = {}
    for o in outcomes:
        if o.result == "refused":
            reasons.setdefault(o.error, []).append(o.version)
    for reason, chosen in reasons.items():
        lines.append(f"refused: {release_spans(chosen, order)} ({len(chosen)}): {reason}")
    return lines + ([""] if lines else [])


# -- command ---------------------------------------------------------------------------------
def cmd_verify(args: argparse.Namespace) -> int:
    from patcher.progress import say

    _check_usage(args)
    toolchain = toolchains.get(args.toolchain)
    if args.dir is not None:
        return _verify_dir(args, say, toolchain)
    args.model = args.model or "gemma"  # only --dir infers the family from what it finds
    if not args.all:
        return _verify_one(args, say, toolchain)
    jobs = 1 if args.jobs is None else args.jobs
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {jobs}")
    started = time.monotonic()
    outcomes = verify_all(jobs=jobs, progress=say, toolchain=toolchain, model=args.model)
    seconds = time.monotonic() - started
    if args.json:
        document = {
            "format": 1,
            "toolchain": toolchain.name,
            "jobs": jobs,
            "seconds": round(seconds, 3),
            "counts": counts(outcomes),
            "releases": [o.as_dict() for o in outcomes],
        }
        print(json.dumps(document, indent=2))
    else:
        print(render_summary(outcomes, seconds, jobs, toolchain), end="")
    return exit_code(outcomes)


def _check_usage(args: argparse.Namespace) -> None:
    """The combinations argparse cannot say: one line each, exit 2."""
    local = args.upstream is not None
    problem = None
    if args.dir is not None and (args.all or local):
        problem = "--dir verifies the files found in DIR; it goes with neither --all nor --upstream"
    elif args.dir is not None and not args.dir.strip():
        problem = "--dir is empty; give the directory holding the vacc files"
    elif args.dir is not None and args.jobs is not None:
        problem = "--jobs goes with --all"
    elif args.all and local:
        problem = "--upstream verifies one local file in one release's environment; it does not go with --all"
    elif args.config_upstream is not None and not local:
        problem = "--config-upstream goes with --upstream FILE"
    elif local and args.transformers is None:
        problem = (
            "--upstream FILE needs --transformers SPEC: the release whose environment runs it "
            "(for example the release FILE was taken from)"
        )
    elif not args.all and args.transformers is None and args.dir is None:
        problem = "give --transformers SPEC, --all, or --dir DIR"
    elif not args.all and args.jobs is not None:
        problem = "--jobs goes with --all"
    if problem:
        raise UsageError(f"{problem} (see `patcher verify --help`)")


def _release(spec: str, model: str = "gemma") -> str:
    """The pinned release SPEC names (``installed``: the installed one, its files checked)."""
    from patcher.upstream import fetch, versions

    if spec.strip().lower() == "installed":
        return fetch.from_installed(model=model).version
    return versions.resolve(spec, pins.load_pins(model=model), model)


def _verify_one(args: argparse.Namespace, say: Progress, toolchain: Toolchain) -> int:
    """``verify --transformers SPEC [--upstream FILE]``: one release, its table of checks.

    With ``--upstream`` the output is generated from FILE as ``apply --upstream`` does (drift
    stops here, before any environment is built) and verified against FILE itself, loaded
    over release SPEC's Gemma in SPEC's environment.
    """
    from patcher.deploy.write import write_output
    from patcher.series.reuse import generate_cached
    from patcher.upstream.resolve import local_upstream_paths, upstream_for
    from patcher.verify import release

    overlay = None
    if args.upstream is not None:
        from patcher.upstream import fetch

        version = _release(args.transformers, args.model)
        local = fetch.from_files(
            *local_upstream_paths(args.upstream, args.config_upstream, args.model), args.model
        )
        output = generate_cached(local)
        overlay = release.Overlay.from_upstream(local)
    else:
        up = upstream_for(args.transformers, model=args.model)
        if up.version is None:
            raise UsageError("verify needs a release (its environment); a local file has none")
        version = up.version
        output = generate_cached(up)
    with tempfile.TemporaryDirectory(prefix="patcher-verify-") as tmp, _one_thread_per_check():
        out_dir = Path(tmp) / "out"
        write_output(output.files, out_dir)
        report = release.verify_output(
            version, out_dir, progress=say, overlay=overlay, toolchain=toolchain, model=args.model
        )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(release.render_table(report))
    return 0 if report.ok else 1


def _verify_dir(args: argparse.Namespace, say: Progress, toolchain: Toolchain) -> int:
    """``verify --dir DIR [--transformers SPEC]``: the files found in DIR, as they are.

    They are compared with patcher's output for their release (hand edits reported), then
    verified numerically as they are.  Exit 1 when a check fails, else 5 when a file is
    hand-edited, else 7 when the toolchain refuses the release, else 0.
    """
    from patcher.series import lockfile
    from patcher.series.reuse import generate_cached
    from patcher.upstream.resolve import upstream_for
    from patcher.verify import found, release
    from patcher.verify.envs import ToolchainRefused

    directory = Path(args.dir)
    fam = found.family_of_dir(directory, args.model)  # --model, or the one family DIR holds
    given = None if args.transformers is None else _release(args.transformers, fam.name)
    texts, version, notices = found.read_dir(directory, given, fam)
    generated = generate_cached(upstream_for(version, model=fam.name)).files
    try:
        entry = lockfile.read_lock(lockfile.lock_path(model=fam.name), fam.name).releases.get(version)
    except UsageError:
        entry = None
    locked = entry.outputs if entry else None
    state = found.compare(directory, texts, version, generated, locked, notices, fam)
    refused = None
    report = None
    with _one_thread_per_check():
        try:
            report = release.verify_output(
                version, directory, progress=say, toolchain=toolchain, model=fam.name
            )
        except ToolchainRefused as exc:
            refused = exc
    if args.json:
        document = {
            **state.as_dict(),
            "toolchain": toolchain.name,
            "refused": refused.reason if refused else None,
            "report": report.as_dict() if report else None,
        }
        print(json.dumps(document, indent=2))
    else:
        print(state.render())
        if report is not None:
            print(release.render_table(report))
    if refused is not None:
        say(f"patcher: {refused}")
    if state.edited:
        names = ", ".join(f.name for f in state.edited)
        say(f"patcher: differs from patcher's output for transformers {version}: {names}")
    if report is not None and not report.ok:
        return 1
    if state.edited:
        return EDITED_EXIT
    return REFUSED_EXIT if refused is not None else 0


def register(command) -> None:
    """Add ``patcher verify`` to the CLI (see ``patcher.cli.COMMAND_MODULES``)."""
    p = command(
        "verify",
        cmd_verify,
        "verify outputs against upstream (checks: README, Verification): one release or --all",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--transformers", metavar="SPEC", help="the release (see below); with --upstream, its environment"
    )
    which.add_argument("--all", action="store_true", help="every pinned release, with a summary table")
    p.add_argument(
        "--dir",
        metavar="DIR",
        help="verify the files found in DIR (build/… or a checkpoint) as they are, against the release "
        "their notice names (or --transformers SPEC); reports files that differ from patcher's output",
    )
    p.add_argument(
        "--toolchain",
        choices=list(toolchains.TOOLCHAINS),
        default=toolchains.DEFAULT,
        help="the stack the checks run on: current (torch 2.13, newest onnx) or vacc (the vendor's "
        "deploy stack, torch 2.1.0, opsets 14 and 17); default %(default)s",
    )
    p.add_argument(
        "--upstream",
        metavar="FILE",
        help="verify the output of a local modeling_gemma.py against FILE itself, loaded in place of "
        "release SPEC's own (the environment is not changed)",
    )
    p.add_argument(
        "--config-upstream",
        metavar="FILE",
        help="with --upstream: its configuration_gemma.py (default: the one beside --upstream FILE)",
    )
    p.add_argument("--jobs", type=int, metavar="N", help="with --all: releases verified at once (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    # --dir finds the family in DIR when --model is not given; everything else defaults to gemma
    p.set_defaults(model=None)
