"""``patcher update``: follow upstream.  Every release newer than the newest pin is pinned,
generated, verified and locked, or reported as not supported.

The index is asked the way ``patcher pin --latest`` asks it (the PyPI JSON API for the list
and the yanked flags, ``pip index versions`` when that is unreachable; wheels through
``pip download``, so the user's pip configuration applies).  Pre-releases and yanked
releases are skipped and listed as such.  Each new release ends in one state:

- ``supported``: the series meets only shapes it knows and the output passes verification
  in the release's own environment on every toolchain that accepts the release, the
  current one among them; its pin is written to ``upstream_pins/`` and its entry added to
  the lock (the entries of the other releases are left as they are);
- ``drift``: a codemod met a shape it does not know; the drift report says where;
- ``failed``: the output was generated but fails verification on some toolchain; the
  failing checks say which, and on which toolchain;
- ``error``: the release could not be fetched, an environment could not be built, or the
  current toolchain refuses the release (then nothing says the output works anywhere).

Verification runs on each toolchain of :mod:`patcher.verify.toolchains` (``--toolchain``
restricts them; the current one is always among them).  A toolchain that refuses the
release (its own transformers cannot run there, ``patcher verify`` exit 7) is reported with
its reason and is not a failure: the vacc toolchain's torch 2.1 refuses every release from
4.56 on, and those releases are supported when they pass on the current toolchain.

A release that is not supported is neither pinned nor locked: the pins stay the list of
releases that work, so ``patcher check`` and ``verify --all`` stay green, and the pin that
was made to look at it lives only in a temporary directory.  Only releases newer than the
newest pin are looked at, so once a newer release is supported, an older unsupported one is
not tried again; its report (the workflow's issue) is what remains of it, and ``patcher pin``
brings it back by hand (see the drift playbook in the README).

``--model mistral`` does the same for another family: the newest pin is the newest of
``upstream_pins/mistral/``, the wheel's Mistral files are pinned, the Mistral series is applied,
the output is verified against upstream's Mistral, and the pin and lock entry go to that
family's pins and lock.  The other families' pins and locks are not touched.

Verification is the one expensive step and the one that needs torch; ``update_releases``
takes it as a parameter (``verify_release``, called once per toolchain) so that tests can
replace it.  The command always uses :func:`verify_release`, which is what
``patcher verify --transformers R --toolchain NAME`` does.
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
from patcher.upstream.families import Family, family
from patcher.upstream.versions import check_release
from patcher.verify import toolchains
from patcher.verify.toolchains import Toolchain

if TYPE_CHECKING:
    from patcher.series.contract import Output
    from patcher.verify.release import VerifyReport

Progress = Callable[[str], None]
#: ``verify_release(version, output, progress, toolchain)``: the report, or
#: :class:`patcher.verify.envs.ToolchainRefused` when the toolchain refuses the release, or
#: another :class:`PatcherError` when its environment cannot be built.
VerifyRelease = Callable[[str, "Output", Progress, Toolchain], "VerifyReport"]

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

__all__ = [
    "EXIT_CODES",
    "Checked",
    "Outcome",
    "Skipped",
    "Update",
    "judge",
    "register",
    "select_toolchains",
    "update_releases",
    "verify_release",
]


@dataclass(frozen=True)
class Skipped:
    """A release newer than the newest pin that is not looked at, and why."""

    version: str
    reason: str


@dataclass
class Checked:
    """One new release on one toolchain: ``passed``, ``failed``, ``refused`` (the toolchain
    cannot run the release's own transformers; ``reason`` says why) or ``error`` (its
    environment could not be built; ``reason`` says what went wrong)."""

    toolchain: str
    result: str
    reason: str | None = None
    report: VerifyReport | None = None

    @property
    def detail(self) -> str:
        """``vacc passed 32/32``, ``vacc FAILED 28/32 (logits: mqa)``, ``vacc refuses it``."""
        if self.result == "refused":
            return f"{self.toolchain} refuses it"
        if self.result == "error":
            return f"{self.toolchain}: {self.reason}"
        assert self.report is not None
        skipped = len(self.report.skipped)
        total = len(self.report.checks) - skipped
        passed = total - len(self.report.failed)
        na = f", {skipped} n/a" if skipped else ""
        if self.result == "passed":
            return f"{self.toolchain} passed {passed}/{total}{na}"
        return f"{self.toolchain} FAILED {passed}/{total} ({self.failed_checks}){na}"

    @property
    def failed_checks(self) -> str | None:
        from patcher.verify.command import failed_checks

        return failed_checks(self.report) if self.result == "failed" and self.report else None

    def as_dict(self) -> dict:
        return {
            "toolchain": self.toolchain,
            "result": self.result,
            "detail": self.detail,
            "reason": self.reason,
            "failed_checks": self.failed_checks,
            "verify": self.report.as_dict() if self.report else None,
        }


@dataclass
class Outcome:
    """What became of one new release (``checked``: each toolchain's verification)."""

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
    report: VerifyReport | None = None  # the current toolchain's
    checked: list[Checked] = field(default_factory=list)

    @property
    def refused_by(self) -> list[Checked]:
        return [c for c in self.checked if c.result == "refused"]

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
            "toolchains": [c.as_dict() for c in self.checked],
            "refused_by": [{"toolchain": c.toolchain, "reason": c.reason} for c in self.refused_by],
        }


@dataclass
class Update:
    """A whole run: the newest pin it started from, the new releases, the skipped ones."""

    newest_pin: str | None
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    lock_changed: bool = False
    toolchains: list[str] = field(default_factory=lambda: list(toolchains.TOOLCHAINS))
    model: str = "gemma"  # the family whose pins and lock this run follows

    @property
    def exit_code(self) -> int:
        seen = {o.state for o in self.outcomes}
        return next((code for state, code in EXIT_CODES.items() if state in seen), 0)

    def counts(self) -> dict[str, int]:
        return {state: sum(o.state == state for o in self.outcomes) for state in STATES}

    def as_dict(self) -> dict:
        return {
            "format": 1,
            "model": self.model,
            "newest_pin": self.newest_pin,
            "toolchains": self.toolchains,
            "releases": [o.as_dict() for o in self.outcomes],
            "skipped": [{"version": s.version, "reason": s.reason} for s in self.skipped],
            "counts": self.counts(),
            "lock_changed": self.lock_changed,
            "exit_code": self.exit_code,
        }


# -- which releases ----------------------------------------------------------------------------
def new_releases(
    newest_pin: str | None, model: Family | str | None = None
) -> tuple[list[str], list[Skipped]]:
    """The releases newer than ``newest_pin`` to look at, and those skipped (oldest first);
    none before the family's first release."""
    fam = family(model)
    floor = Version(newest_pin) if newest_pin else None
    wanted: list[str] = []
    skipped: list[Skipped] = []
    for release in pypi.listed_releases():
        version = Version(release.version)
        if (floor is not None and version <= floor) or version < fam.first_version:
            continue
        if release.yanked:
            why = f" ({release.yanked_reason})" if release.yanked_reason else ""
            skipped.append(Skipped(release.version, f"yanked{why}"))
        elif not pypi.is_final(release.version):
            skipped.append(Skipped(release.version, "pre-release"))
        else:
            try:
                wanted.append(check_release(release.version, fam))
            except UsageError as exc:  # e.g. 5.25.0.1: not a release patcher can pin
                skipped.append(Skipped(release.version, str(exc)))
    return wanted, skipped


# -- one release -------------------------------------------------------------------------------
def verify_release(
    version: str, output: Output, progress: Progress, toolchain: Toolchain = toolchains.CURRENT
) -> VerifyReport:
    """Verify ``output`` in release ``version``'s own environment on ``toolchain``, as
    ``patcher verify --toolchain NAME [--model M]`` does, against upstream's model of the
    output's family (built on first use; one torch thread per check process).  Raises
    ``ToolchainRefused`` when the toolchain cannot run the release."""
    from patcher.verify import release
    from patcher.verify.command import _one_thread_per_check, _write_scratch

    with tempfile.TemporaryDirectory(prefix="patcher-update-") as tmp, _one_thread_per_check():
        out_dir = Path(tmp) / "out"
        _write_scratch(output.files, out_dir)
        return release.verify_output(
            version, out_dir, progress=progress, toolchain=toolchain, model=output.upstream.model
        )


def select_toolchains(names: list[str] | None = None) -> list[Toolchain]:
    """The toolchains ``update`` verifies on, in their order (the current one first): every
    toolchain, or those ``names``; the current one must be among them (it decides whether
    a release works at all)."""
    if not names:
        return list(toolchains.TOOLCHAINS.values())
    chosen = {toolchains.get(name).name for name in names}
    if toolchains.DEFAULT not in chosen:
        raise UsageError(
            f"update pins a release only when it passes on the {toolchains.DEFAULT} toolchain: "
            f"add --toolchain {toolchains.DEFAULT}"
        )
    return [t for t in toolchains.TOOLCHAINS.values() if t.name in chosen]


def check_on(
    version: str, output: Output, toolchain: Toolchain, verify_release: VerifyRelease, progress: Progress
) -> Checked:
    """Verify ``output`` on one toolchain: passed, failed, refused (with the reason) or error."""
    from patcher.verify.envs import ToolchainRefused

    try:
        report = verify_release(version, output, progress, toolchain)
    except ToolchainRefused as refused:
        return Checked(toolchain.name, "refused", reason=refused.reason)
    except PatcherError as exc:  # the environment could not be built
        return Checked(toolchain.name, "error", reason=f"cannot verify it: {_one_line(exc)}")
    return Checked(toolchain.name, "passed" if report.ok else "failed", report=report)


def judge(checked: list[Checked]) -> str:
    """The state of a release from its toolchains' results: ``failed`` when any toolchain
    that accepts it fails it; else ``error`` when an environment could not be built or the
    current toolchain refuses it; else ``supported`` (passed on the current toolchain and on
    every other that accepts it)."""
    results = {c.toolchain: c.result for c in checked}
    if "failed" in results.values():
        return "failed"
    if "error" in results.values() or results.get(toolchains.DEFAULT) != "passed":
        return "error"
    return "supported"


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
    verify_on: list[Toolchain],
    previous: Output | None,
    progress: Progress,
    model: Family | str | None = None,
) -> tuple[Outcome, pins.Pin | None, Output | None]:
    """Pin ``version`` (its files of the family ``model``) into a temporary directory, generate
    it and verify it on each toolchain of ``verify_on``.  Returns the outcome, and for a
    supported release the pin and output to record."""
    from patcher.series.reuse import generate_cached
    from patcher.verify.command import drifting_codemods

    fam = family(model)
    try:
        with tempfile.TemporaryDirectory(prefix="patcher-update-pins-") as staging:
            pin = pins.pin_release(version, Path(staging), model=fam)
        up = fetch.fetch(version, {version: pin}, progress=progress, model=fam)
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
    checked = []
    for toolchain in verify_on:
        relay = lambda message, name=toolchain.name: progress(f"{name}: {message}")  # noqa: E731
        checked.append(check_on(version, output, toolchain, verify_release, relay))
        progress(checked[-1].detail)
    state = judge(checked)
    parts = "; ".join(c.detail for c in checked)
    current = next((c.report for c in checked if c.toolchain == toolchains.DEFAULT), None)
    outcome = Outcome(
        version,
        state,
        f"verified: {parts}" if state == "supported" else parts,
        shapes=shapes,
        shape_changes=changes,
        outputs=output.digests(),
        report=current,
        checked=checked,
    )
    if state == "failed":
        outcome.failed_checks = "\n".join(
            f"on toolchain {c.toolchain}: {c.failed_checks}" for c in checked if c.result == "failed"
        )
    if state == "error":
        outcome.error = "; ".join(
            f"toolchain {c.toolchain} refuses it: {c.reason}" if c.result == "refused" else c.detail
            for c in checked
            if c.result == "error" or (c.result == "refused" and c.toolchain == toolchains.DEFAULT)
        )
    if state != "supported":
        return outcome, None, None
    return outcome, pin, output


# -- the run -----------------------------------------------------------------------------------
def _previous_output(
    version: str | None, pinned: dict[str, pins.Pin], progress: Progress, model: Family | str | None = None
) -> Output | None:
    """The newest pin's output, to compare shapes with (None when it cannot be had)."""
    from patcher.series.reuse import generate_cached

    if version is None:
        return None
    try:
        return generate_cached(fetch.fetch(version, pinned, progress=progress, model=model))
    except PatcherError:
        return None


def update_releases(
    *,
    verify_release: VerifyRelease = verify_release,
    verify_on: list[Toolchain] | None = None,
    progress: Progress | None = None,
    model: Family | str | None = None,
) -> Update:
    """Look at every release newer than the newest pin of the family ``model`` (default
    gemma), verify each on the toolchains of ``verify_on`` (default: all of them); pin and
    lock the supported ones in that family's pins and lock (``upstream_pins/mistral/``)."""
    from patcher.ci import check
    from patcher.series.contract import series_digest

    fam = family(model)
    verify_on = select_toolchains() if verify_on is None else list(verify_on)
    say = progress or (lambda message: None)
    lock_file = lockfile.lock_path(model=fam.name)
    lock = lockfile.read_lock(lock_file, fam.name)  # refuse early, before any download, without a lock
    pinned = pins.load_pins(model=fam)
    newest = next(reversed(pinned), None)
    wanted, skipped = new_releases(newest, fam)
    run = Update(newest, skipped=skipped, toolchains=[t.name for t in verify_on], model=fam.name)
    for s in skipped:
        say(f"skipping transformers {s.version}: {s.reason}")
    previous = _previous_output(newest, pinned, say, fam) if wanted else None
    for index, version in enumerate(wanted, 1):
        tag = f"[{index}/{len(wanted)}] transformers {version}"
        say(f"{tag}: pinning, generating and verifying …")
        outcome, pin, output = look_at(
            version,
            verify_release=verify_release,
            verify_on=verify_on,
            previous=previous,
            progress=lambda message, tag=tag: say(f"{tag}: {message}"),
            model=fam,
        )
        if outcome.state == "supported":
            assert pin is not None and output is not None
            entry = check.lock_entry(output)
            outcome.pin = _shown(pins.write_pin(pin, model=fam))
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
    head = "update" + family(run.model).option  # "update --model mistral" for another family
    whose = f" {run.model}" if family(run.model).pins_subdir else ""
    if not run.outcomes:
        where = (
            f"{run.newest_pin} is the newest{whose} pin" if run.newest_pin else f"nothing{whose} is pinned"
        )
        return f"{head}: nothing new: {where} and the index lists no newer release to pin{skipped_note}\n"
    lines.append(
        f"{head}: {len(run.outcomes)} new release{'s' if len(run.outcomes) != 1 else ''} "
        f"after {run.newest_pin or 'none'}; toolchains: {', '.join(run.toolchains)}{skipped_note}"
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
        lines += [f"    {c.toolchain} refuses it: {c.reason}" for c in o.refused_by]
    n = run.counts()
    lines.append(
        f"{head}: {n['supported']} supported, {n['drift']} drift, {n['failed']} fail verification, "
        f"{n['error']} could not be looked at"
    )
    return "\n".join(lines) + "\n"


# -- command -----------------------------------------------------------------------------------
EPILOG = """\
Each release newer than the newest pin ends as: supported (same shapes, verified: pinned and
locked), drift (a codemod met a shape it does not know), fails verification, or error (it
could not be fetched or its environment built).  Only supported releases are pinned and
locked.  Pre-releases and yanked releases are skipped.

Verification runs on every toolchain (current, then vacc; --toolchain restricts them, and
current is always one).  A toolchain that refuses a release (its own transformers cannot
run there) is reported with the reason and is not a failure; a release is supported when
it passes on current and on every other toolchain that accepts it.  It fails verification
when it fails on any toolchain (the report names it); it is an error when an environment
cannot be built or current refuses it.

--model mistral follows the Mistral family instead: its pins and lock (upstream_pins/mistral/),
its series, verified against upstream's Mistral.  Without --model, Gemma.

exit codes: 0 nothing new, or every new release supported; 1 internal error; 2 bad usage or
input (no lock); 3 a new release drifts; 4 a new release could not be fetched, an
environment could not be built or current refuses it (or the index cannot be listed);
6 a new release fails verification on some toolchain.
With several states the code of the worst is used: 6, then 3, then 4.
"""


def cmd_update(args: argparse.Namespace) -> int:
    from patcher.progress import say

    verify_on = select_toolchains(args.toolchain)
    run = update_releases(
        verify_release=verify_release, verify_on=verify_on, progress=say, model=getattr(args, "model", None)
    )
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
        "--toolchain",
        action="append",
        choices=list(toolchains.TOOLCHAINS),
        metavar="NAME",
        help=f"verify on this toolchain ({', '.join(toolchains.TOOLCHAINS)}); repeat for several; "
        f"default: all of them; {toolchains.DEFAULT} must be one (`--toolchain {toolchains.DEFAULT}` alone "
        "skips the vendor's)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON: {format, newest_pin, toolchains, releases: [{version, state, detail, pinned, "
        "locked, drift_report, failed_checks, verify, toolchains: [{toolchain, result, detail, reason, "
        "failed_checks, verify}], refused_by: [{toolchain, reason}], ...}], skipped: [{version, reason}], "
        "counts, exit_code}",
    )
