"""``patcher update``: follow upstream.  Every release newer than the newest pin is pinned,
generated, verified and locked, or reported as not supported.

The index is asked the way ``patcher pin --latest`` asks it (the PyPI JSON API for the list
and the yanked flags, ``pip index versions`` when that is unreachable; wheels through
``pip download``, so the user's pip configuration applies).  Pre-releases and yanked
releases are skipped and listed as such.  Each new release ends in one state:

- ``supported``: the series meets only shapes it knows and the output passes verification
  in the release's own environment; its pin is written to ``upstream_pins/`` and its entry
  added to the lock (the entries of the other releases are left as they are);
- ``drift``: a codemod met a shape it does not know; the drift report says where;
- ``failed``: the output was generated but fails verification; the failing checks say which;
- ``error``: the release could not be fetched or its environment could not be built.

A release that is not supported is neither pinned nor locked: the pins stay the list of
releases that work, so ``patcher check`` and ``verify --all`` stay green, and the pin that
was made to look at it lives only in a temporary directory.  Only releases newer than the
newest pin are looked at, so once a newer release is supported, an older unsupported one is
not tried again; its report (the workflow's issue) is what remains of it, and ``patcher pin``
brings it back by hand (see the drift playbook in the README).

Verification is the one expensive step and the one that needs torch; ``update_releases``
takes it as a parameter (``verify_release``) so that tests can replace it.  The command
always uses :func:`verify_release`, which is what ``patcher verify --transformers R`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.version import Version

from patcher.errors import DriftError, PatcherError, UsageError
from patcher.series import lockfile
from patcher.upstream import fetch, pins, pypi
from patcher.upstream.versions import FIRST_GEMMA, check_release

if TYPE_CHECKING:
    from patcher.series.contract import Output
    from patcher.verify.release import VerifyReport

Progress = Callable[[str], None]
VerifyRelease = Callable[[str, "Output", Progress], "VerifyReport"]

STATES = ("supported", "drift", "failed", "error")
#: Exit codes, highest precedence first: a wrong output outranks drift, drift outranks a
#: release that could not be looked at.  0 when nothing is new or every new release is supported.
EXIT_CODES = {"failed": 6, "drift": 3, "error": 4}
WORDS = {
    "supported": "supported",
    "drift": "drift",
    "failed": "fails verification",
    "error": "error",
}

__all__ = ["EXIT_CODES", "Outcome", "Skipped", "Update", "register", "update_releases", "verify_release"]


@dataclass(frozen=True)
class Skipped:
    """A release newer than the newest pin that is not looked at, and why."""

    version: str
    reason: str


@dataclass
class Outcome:
    """What became of one new release."""

    version: str
    state: str
    detail: str
    pin: str | None = None  # the pin file written (supported only)
    outputs: dict[str, str] | None = None
    shapes: dict[str, list[str]] | None = None
    shape_changes: dict[str, dict[str, list[str]]] | None = None
    drift: list[str] = field(default_factory=list)
    drift_report: str | None = None
    failed_checks: str | None = None
    error: str | None = None
    report: VerifyReport | None = None

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "state": self.state,
            "detail": self.detail,
            "pinned": self.pin is not None,
            "pin": self.pin,
            "locked": self.state == "supported",
            "outputs": self.outputs,
            "shapes": self.shapes,
            "shape_changes": self.shape_changes,
            "drift": self.drift,
            "drift_report": self.drift_report,
            "failed_checks": self.failed_checks,
            "error": self.error,
            "verify": self.report.as_dict() if self.report else None,
        }


@dataclass
class Update:
    """A whole run: the newest pin it started from, the new releases, the skipped ones."""

    newest_pin: str | None
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    lock_changed: bool = False

    @property
    def exit_code(self) -> int:
        seen = {o.state for o in self.outcomes}
        return next((code for state, code in EXIT_CODES.items() if state in seen), 0)

    def counts(self) -> dict[str, int]:
        return {state: sum(o.state == state for o in self.outcomes) for state in STATES}

    def as_dict(self) -> dict:
        return {
            "format": 1,
            "newest_pin": self.newest_pin,
            "releases": [o.as_dict() for o in self.outcomes],
            "skipped": [{"version": s.version, "reason": s.reason} for s in self.skipped],
            "counts": self.counts(),
            "lock_changed": self.lock_changed,
            "exit_code": self.exit_code,
        }


# -- which releases ----------------------------------------------------------------------------
def new_releases(newest_pin: str | None) -> tuple[list[str], list[Skipped]]:
    """The releases newer than ``newest_pin`` to look at, and those skipped (oldest first)."""
    floor = Version(newest_pin) if newest_pin else None
    wanted: list[str] = []
    skipped: list[Skipped] = []
    for release in pypi.listed_releases():
        version = Version(release.version)
        if (floor is not None and version <= floor) or version < FIRST_GEMMA:
            continue
        if release.yanked:
            why = f" ({release.yanked_reason})" if release.yanked_reason else ""
            skipped.append(Skipped(release.version, f"yanked{why}"))
        elif not pypi.is_final(release.version):
            skipped.append(Skipped(release.version, "pre-release"))
        else:
            try:
                wanted.append(check_release(release.version))
            except UsageError as exc:  # e.g. 5.25.0.1: not a release patcher can pin
                skipped.append(Skipped(release.version, str(exc)))
    return wanted, skipped


# -- one release -------------------------------------------------------------------------------
def verify_release(version: str, output: Output, progress: Progress) -> VerifyReport:
    """Verify ``output`` in release ``version``'s own environment, as ``patcher verify`` does
    (built on first use; one torch thread per check process)."""
    from patcher.verify import release
    from patcher.verify.command import _one_thread_per_check, _write_scratch

    with tempfile.TemporaryDirectory(prefix="patcher-update-") as tmp, _one_thread_per_check():
        out_dir = Path(tmp) / "out"
        _write_scratch(output.files, out_dir)
        return release.verify_output(version, out_dir, progress=progress)


def _shapes(output: Output) -> dict[str, list[str]]:
    return {r.codemod: list(r.shapes) for r in output.reports}


def _shape_changes(before: Output | None, after: Output) -> dict[str, dict[str, list[str]]] | None:
    """The codemods that met other shapes than in ``before`` (the newest pin), or None."""
    if before is None:
        return None
    old, new = _shapes(before), _shapes(after)
    return {
        name: {"before": old.get(name, []), "after": shapes}
        for name, shapes in new.items()
        if old.get(name, []) != shapes
    }


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def look_at(
    version: str,
    *,
    verify_release: VerifyRelease,
    previous: Output | None,
    progress: Progress,
) -> tuple[Outcome, pins.Pin | None, Output | None]:
    """Pin ``version`` into a temporary directory, generate and verify it.  Returns the
    outcome, and for a supported release the pin and output to record."""
    from patcher.series.reuse import generate_cached
    from patcher.verify.command import drifting_codemods, failed_checks

    try:
        with tempfile.TemporaryDirectory(prefix="patcher-update-pins-") as staging:
            pin = pins.pin_release(version, Path(staging))
        up = fetch.fetch(version, {version: pin}, progress=progress)
    except PatcherError as exc:
        error = _one_line(exc)
        return Outcome(version, "error", f"cannot fetch it: {error}", error=error), None, None
    try:
        output = generate_cached(up)
    except DriftError as exc:
        names = drifting_codemods(exc)
        outcome = Outcome(version, "drift", ", ".join(names), drift=names, drift_report=str(exc))
        return outcome, None, None
    shapes = _shapes(output)
    changes = _shape_changes(previous, output)
    try:
        report = verify_release(version, output, progress)
    except PatcherError as exc:  # the environment could not be built
        error = _one_line(exc)
        outcome = Outcome(version, "error", f"cannot verify it: {error}", shapes=shapes, error=error)
        return outcome, None, None
    skipped = len(report.skipped)
    total = len(report.checks) - skipped
    passed = total - len(report.failed)
    na = f", {skipped} n/a" if skipped else ""
    if not report.ok:
        failing = failed_checks(report)
        outcome = Outcome(
            version,
            "failed",
            f"FAILED {passed}/{total} ({failing}){na}",
            shapes=shapes,
            shape_changes=changes,
            outputs=output.digests(),
            failed_checks=failing,
            report=report,
        )
        return outcome, None, None
    outcome = Outcome(
        version,
        "supported",
        f"verified: passed {passed}/{total}{na}",
        outputs=output.digests(),
        shapes=shapes,
        shape_changes=changes,
        report=report,
    )
    return outcome, pin, output


# -- the run -----------------------------------------------------------------------------------
def _previous_output(version: str | None, pinned: dict[str, pins.Pin], progress: Progress) -> Output | None:
    """The newest pin's output, to compare shapes with (None when it cannot be had)."""
    from patcher.series.reuse import generate_cached

    if version is None:
        return None
    try:
        return generate_cached(fetch.fetch(version, pinned, progress=progress))
    except PatcherError:
        return None


def update_releases(
    *,
    verify_release: VerifyRelease = verify_release,
    progress: Progress | None = None,
) -> Update:
    """Look at every release newer than the newest pin; pin and lock the supported ones."""
    from patcher.ci import check
    from patcher.series.contract import series_digest

    say = progress or (lambda message: None)
    lock_file = lockfile.lock_path()
    lock = lockfile.read_lock(lock_file)  # refuse early, before any download, without a lock
    pinned = pins.load_pins()
    newest = next(reversed(pinned), None)
    wanted, skipped = new_releases(newest)
    run = Update(newest, skipped=skipped)
    for s in skipped:
        say(f"skipping transformers {s.version}: {s.reason}")
    previous = _previous_output(newest, pinned, say) if wanted else None
    for index, version in enumerate(wanted, 1):
        tag = f"[{index}/{len(wanted)}] transformers {version}"
        say(f"{tag}: pinning, generating and verifying …")
        outcome, pin, output = look_at(
            version,
            verify_release=verify_release,
            previous=previous,
            progress=lambda message, tag=tag: say(f"{tag}: {message}"),
        )
        if outcome.state == "supported":
            assert pin is not None and output is not None
            entry = check.lock_entry(output)
            outcome.pin = _shown(pins.write_pin(pin))
            lock.releases[version] = entry
            lock.series_digest = series_digest()
            run.lock_changed |= lockfile.write_lock(lock, lock_file)
            previous = output
        say(f"{tag}: {WORDS[outcome.state]}: {outcome.detail}")
        run.outcomes.append(outcome)
    return run


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


# -- text ---------------------------------------------------------------------------------------
def render_text(run: Update) -> str:
    """One line per new release (drift reports below theirs), then the totals."""
    lines: list[str] = []
    skipped = ", ".join(f"{s.version} {s.reason}" for s in run.skipped)
    skipped_note = f" (skipped: {skipped})" if skipped else ""
    if not run.outcomes:
        where = f"{run.newest_pin} is the newest pin" if run.newest_pin else "nothing is pinned"
        return f"update: nothing new: {where} and the index lists no newer release to pin{skipped_note}\n"
    lines.append(
        f"update: {len(run.outcomes)} new release{'s' if len(run.outcomes) != 1 else ''} "
        f"after {run.newest_pin or 'none'}{skipped_note}"
    )
    width = max(len(o.version) for o in run.outcomes)
    for o in run.outcomes:
        if o.state == "supported":
            what = f"{o.detail}; pinned {o.pin}, locked"
            if o.shape_changes:
                what += "; new shapes: " + ", ".join(
                    f"{n} {'+'.join(c['after'])}" for n, c in o.shape_changes.items()
                )
        else:
            what = f"{o.detail}; not pinned, not locked"
        lines.append(f"{o.version:<{width}}  {WORDS[o.state]:<18}  {what}")
        if o.drift_report:
            lines += [f"    {line}" for line in o.drift_report.splitlines()]
    n = run.counts()
    lines.append(
        f"update: {n['supported']} supported, {n['drift']} drift, {n['failed']} fail verification, "
        f"{n['error']} could not be looked at"
    )
    return "\n".join(lines) + "\n"


# -- command -----------------------------------------------------------------------------------
EPILOG = """\
Each release newer than the newest pin ends as: supported (same shapes, verified: pinned and
locked), drift (a codemod met a shape it does not know), fails verification, or error (it
could not be fetched or its environment built).  Only supported releases are pinned and
locked.  Pre-releases and yanked releases are skipped.

exit codes: 0 nothing new, or every new release supported; 1 internal error; 2 bad usage or
input (no lock); 3 a new release drifts; 4 a new release could not be fetched or its
environment built (or the index cannot be listed); 6 a new release fails verification.
With several states the code of the worst is used: 6, then 3, then 4.
"""


def cmd_update(args: argparse.Namespace) -> int:
    from patcher.progress import say

    run = update_releases(verify_release=verify_release, progress=say)
    if args.json:
        print(json.dumps(run.as_dict(), indent=2))
    else:
        print(render_text(run), end="")
    return run.exit_code


def register(command) -> None:
    """Add ``patcher update`` to the CLI (see ``patcher.cli.COMMAND_MODULES``)."""
    p = command(
        "update",
        cmd_update,
        "pin, verify and lock every transformers release newer than the newest pin",
    )
    p.epilog = EPILOG
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON: {format, newest_pin, releases: [{version, state, detail, pinned, locked, "
        "drift_report, failed_checks, verify, ...}], skipped: [{version, reason}], counts, exit_code}",
    )
