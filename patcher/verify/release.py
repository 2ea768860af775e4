"""Verification of one release's output (SPEC section 6): orchestration and report.

``verify_output(version, output_dir)`` gets release ``version``'s environment (see
``patcher.verify.envs``), runs ``checks.py`` in it against the three output files and
returns a :class:`VerifyReport`: one :class:`CheckResult` per check and tiny config
("mqa": one key/value head as in gemma-2b, "mha": as many as query heads, as in gemma-7b).

With an :class:`Overlay` (``patcher verify --upstream FILE``) the reference is a local
upstream file instead of the release's own: the check process loads it as
``transformers.models.gemma.modeling_gemma`` before anything imports Gemma, so upstream's
classes, the auto mappings and the generic heads all see it.  The release's environment is
only read, never changed: the overlay's files live in the check's temporary directory.

This module runs in patcher's own environment, which has no torch: everything that needs
torch or transformers happens in the subprocess, and the two sides speak JSON only.  A
crash of that subprocess is not a traceback at the user: every check is reported failed
with the error's last line, and the stderr tail is kept on the report for debugging.
"""

from __future__ import annotations

import ast
import io
import json
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from patcher.errors import UsageError
from patcher.series.contract import OUTPUT_FILES, output_files  # noqa: F401 (OUTPUT_FILES: re-exported)
from patcher.upstream.families import family
from patcher.verify import toolchains, warm
from patcher.verify.envs import Env, Progress, ensure_env, installed_versions, moved_pins
from patcher.verify.toolchains import Toolchain

__all__ = [
    "CHECKS_SCRIPT",
    "CheckResult",
    "Env",
    "Overlay",
    "VerifyReport",
    "build_table",
    "ensure_env",
    "parse_result",
    "render_table",
    "verify_output",
]

CHECKS_SCRIPT = Path(__file__).with_name("checks.py")


def _from_checks(name: str):
    """A constant of ``checks.py``, read from its source: that script runs in the release's
    environment (it imports torch), so it cannot be imported here, and a copy would drift."""
    for node in ast.parse(CHECKS_SCRIPT.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise RuntimeError(f"{CHECKS_SCRIPT} defines no {name}")


#: Used to fail every check by name when the check process dies before it reports.
CHECK_NAMES: tuple[str, ...] = _from_checks("CHECK_NAMES")
CONFIGS: tuple[str, ...] = tuple(_from_checks("CONFIGS"))
#: The packages of a toolchain whose versions the check process reports.
STACK = ("torch", "onnx", "onnxruntime", "onnxsim")
STATUSES = ("pass", "fail", "exception", "skipped", "decision")
DEFAULT_TIMEOUT = 1800.0
STDERR_TAIL_LINES = 40


@dataclass(frozen=True)
class CheckResult:
    """One check on one tiny config.

    ``status`` is ``pass``, ``fail``, ``exception``: the release's own ``generate()``
    raised while driving the tuple-cache model (SPEC allows reporting that with its reason);
    it does not count as passed; or ``skipped``: the check does not apply because upstream
    lacks what it compares (token classification before 4.42), with the reason as detail.
    A skipped check is neither passed nor failed.  ``decision``: the output differs from upstream
    where the vendor decided it should (Mistral's sliding window shorter than the sequence: the
    vacc mask is plain causal); neither passed nor failed either, and reported as such.
    """

    name: str
    config: str
    status: str
    detail: str
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def skipped(self) -> bool:
        """Neither passed nor failed: not applicable, or a documented vendor decision."""
        return self.status in ("skipped", "decision")

    @property
    def decision(self) -> bool:
        return self.status == "decision"


@dataclass(frozen=True)
class Overlay:
    """A local upstream verified in place of the release's own Gemma files.

    ``modeling`` (and ``configuration``, when given) is the exact text the output was
    generated from; ``modeling_path``/``configuration_path`` name where it came from, for the
    report.  Without ``configuration`` the release's own ``configuration_gemma.py`` is used.
    """

    modeling: str
    modeling_path: str
    configuration: str | None = None
    configuration_path: str | None = None
    model: str = "gemma"  # the family whose upstream files these stand in for

    @classmethod
    def from_upstream(cls, upstream) -> Overlay:
        """The overlay of a local :class:`patcher.upstream.fetch.Upstream` (``upstream.from_files``)."""
        modeling_path, configuration_path = upstream.paths or ("<local file>", None)
        if upstream.configuration is None:
            configuration_path = None
        return cls(
            upstream.modeling, modeling_path, upstream.configuration, configuration_path, upstream.model
        )

    def describe(self) -> str:
        """``local upstream X`` (``and Y``): what the reference is, in the report's words."""
        text = f"local upstream {self.modeling_path}"
        if self.configuration_path:
            text += f" and {self.configuration_path}"
        return text

    def write(self, directory: Path) -> tuple[Path, Path | None]:
        """Write the files as ``models/<family>/{modeling,configuration}_<family>.py`` under
        ``directory`` (the layout transformers' own files have, which its docstring tools
        read names from); return their paths."""
        fam = family(self.model)
        folder = Path(directory) / "models" / fam.name
        folder.mkdir(parents=True)
        modeling = folder / fam.modeling
        modeling.write_text(self.modeling, encoding="utf-8", newline="")
        if self.configuration is None:
            return modeling, None
        configuration = folder / fam.configuration
        configuration.write_text(self.configuration, encoding="utf-8", newline="")
        return modeling, configuration

    def as_dict(self) -> dict:
        fam = family(self.model)
        return {fam.modeling: self.modeling_path, fam.configuration: self.configuration_path}


@dataclass
class VerifyReport:
    """The outcome of verifying one release's output.

    ``overlay`` is set when the reference was a local upstream (``verify --upstream``), run
    in release ``version``'s environment.
    """

    version: str
    checks: list[CheckResult]
    seconds: float = 0.0
    crashed: bool = False
    stderr_tail: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    overlay: Overlay | None = None
    toolchain: str = toolchains.DEFAULT
    opsets: tuple[int, ...] = ()
    moved_pins: list[str] = field(default_factory=list)  # vendor pins taken at another version

    @property
    def reference(self) -> str:
        """What the output was compared with, in words."""
        on = "" if self.toolchain == toolchains.DEFAULT else f" on toolchain {self.toolchain}"
        if self.overlay is None:
            return f"transformers {self.version}{on}"
        return (
            f"{self.overlay.describe()} in transformers {self.version}'s environment{on} "
            f"(not its own {family(self.overlay.model).prefix})"
        )

    def stack(self) -> str:
        """The toolchain as the check process saw it: ``toolchain vacc: torch 2.1.0+cu121, ...``."""
        parts = [f"{name} {self.versions[name]}" for name in STACK if name in self.versions]
        if self.opsets:
            parts.append(f"ONNX opsets {', '.join(map(str, self.opsets))}")
        text = f"toolchain {self.toolchain}: {', '.join(parts)}"
        if self.moved_pins:
            text += f"; not the vendor's pin: {'; '.join(self.moved_pins)}"
        return text

    @property
    def ok(self) -> bool:
        """True when at least one check passed and none failed (skipped checks are neither)."""
        return any(check.passed for check in self.checks) and not self.failed

    @property
    def failed(self) -> list[CheckResult]:
        return [check for check in self.checks if not check.passed and not check.skipped]

    @property
    def skipped(self) -> list[CheckResult]:
        return [check for check in self.checks if check.skipped]

    def as_dict(self) -> dict:
        """A JSON-ready form, stable for ``--json`` consumers."""
        return {
            "version": self.version,
            "reference": self.reference,
            "upstream": self.overlay.as_dict() if self.overlay else None,
            "ok": self.ok,
            "crashed": self.crashed,
            "seconds": round(self.seconds, 3),
            "versions": dict(self.versions),
            "toolchain": self.toolchain,
            "opsets": list(self.opsets),
            "moved_pins": list(self.moved_pins),
            "checks": [asdict(check) for check in self.checks],
        }


def parse_result(text: str) -> tuple[list[CheckResult], dict[str, str]]:
    """Parse the JSON document of ``checks.py``; ``ValueError`` if it is malformed.

    Returns the checks and the versions the script ran with (transformers, torch).
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not a verification result: {error}") from None
    if not isinstance(document, dict) or document.get("format") != 1:
        raise ValueError("not a verification result: wrong or missing format")
    raw_checks = document.get("checks")
    if not isinstance(raw_checks, list):
        raise ValueError("not a verification result: no list of checks")
    checks = []
    for raw in raw_checks:
        try:
            check = CheckResult(
                name=str(raw["name"]),
                config=str(raw["config"]),
                status=str(raw["status"]),
                detail=str(raw.get("detail", "")),
                seconds=float(raw.get("seconds", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"malformed check entry {raw!r}: {error}") from None
        if check.status not in STATUSES:
            raise ValueError(f"unknown status {check.status!r} for check {check.name}")
        checks.append(check)
    versions = {key: str(document[key]) for key in ("transformers", *STACK) if key in document}
    return checks, versions


def crashed_report(
    version: str, stderr: str, seconds: float, reason: str | None = None, overlay: Overlay | None = None
) -> VerifyReport:
    """Every check failed with the error's last line; the stderr tail kept for debugging."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    detail = reason or (lines[-1].strip() if lines else "the check script exited without a result")
    checks = [CheckResult(name, config, "fail", detail) for config in CONFIGS for name in CHECK_NAMES]
    tail = "\n".join(lines[-STDERR_TAIL_LINES:])
    return VerifyReport(version, checks, seconds=seconds, crashed=True, stderr_tail=tail, overlay=overlay)


def verify_output(
    version: str,
    output_dir: Path,
    *,
    progress: Progress | None = None,
    env: Env | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    overlay: Overlay | None = None,
    toolchain: Toolchain = toolchains.CURRENT,
    model: str = "gemma",
) -> VerifyReport:
    """Verify the outputs in ``output_dir`` against transformers ``version``'s upstream (of the
    family ``model``).

    With ``overlay``, the reference is that local upstream instead, run in ``version``'s
    environment (which stays as it is).  Builds the release's environment on ``toolchain``
    on first use (network needed once), then runs offline.  Raises
    :class:`patcher.envs.ToolchainRefused` when the toolchain cannot run the release.
    """
    output_dir = Path(output_dir)
    missing = [name for name in output_files(family(model)) if not (output_dir / name).is_file()]
    if missing:
        raise UsageError(f"{output_dir} lacks {', '.join(missing)}: run `patcher apply` first")
    env = env or ensure_env(version, progress, toolchain)
    if progress:
        against = f"{overlay.describe()} in the environment of" if overlay else "upstream"
        progress(f"verifying {output_dir} against {against} transformers {version}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="patcher-verify-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [str(env.python), str(CHECKS_SCRIPT), str(output_dir.resolve()), "--result", str(result_file)]
        cmd += ["--opsets", ",".join(map(str, toolchain.opsets))]
        # the checks' working directory inside ours: removed with it, even when Ctrl-C or a
        # timeout had the check process killed before it could remove its own
        cmd += ["--scratch", tmp]
        if model != "gemma":
            cmd += ["--model", model]
        if overlay is not None:
            modeling, configuration = overlay.write(Path(tmp) / "overlay")
            cmd += ["--upstream", str(modeling)]
            if configuration is not None:
                cmd += ["--config-upstream", str(configuration)]
        try:
            proc = warm.run(cmd, environ=env.environ(), cwd=tmp, timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            stderr = expired.stderr.decode() if isinstance(expired.stderr, bytes) else expired.stderr or ""
            reason = f"the check script timed out after {timeout:.0f}s"
            report = crashed_report(version, stderr, time.monotonic() - started, reason, overlay)
            return _on(report, toolchain)
        if proc.returncode == -signal.SIGINT:
            # Ctrl-C reached the check process: the run was interrupted, the checks did not
            # fail.  (Raised in verify --all's worker threads too, whose checks the same
            # Ctrl-C stopped, so that none of them is reported as a failed release.)
            raise KeyboardInterrupt
        seconds = time.monotonic() - started
        text = result_file.read_text() if result_file.is_file() else _last_line(proc.stdout)
    try:
        checks, versions = parse_result(text)
    except ValueError:
        return _on(crashed_report(version, proc.stderr, seconds, overlay=overlay), toolchain)
    tail = "\n".join(proc.stderr.splitlines()[-STDERR_TAIL_LINES:])
    report = VerifyReport(
        version, checks, seconds=seconds, stderr_tail=tail, versions=versions, overlay=overlay
    )
    return _on(report, toolchain)


def _on(report: VerifyReport, toolchain: Toolchain) -> VerifyReport:
    """The report, saying which toolchain it ran on and which vendor pins moved there."""
    report.toolchain = toolchain.name
    report.opsets = toolchain.opsets
    report.moved_pins = moved_pins(toolchain, installed_versions(toolchain))
    return report


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


_MARKS = {
    "pass": ("✓", "green"),
    "fail": ("✗", "red"),
    "exception": ("!", "yellow"),
    "skipped": ("–", "dim"),
    "decision": ("≠", "cyan"),
}
_LABELS = {"exception": "exception: ", "skipped": "not applicable: ", "decision": "vendor decision: "}


def summary(report: VerifyReport) -> str:
    """``27/28 checks passed`` (``, 2 not applicable``): skipped checks are counted apart."""
    skipped = len(report.skipped)
    decisions = sum(1 for check in report.checks if check.decision)
    applicable = len(report.checks) - skipped
    text = f"{applicable - len(report.failed)}/{applicable} checks passed"
    text += f", {skipped - decisions} not applicable" if skipped - decisions else ""
    return text + (f", {decisions} vendor decision" if decisions else "")


def build_table(report: VerifyReport) -> Table:
    """A rich table: one row per check, one column per config, mark and detail in each cell."""
    title = f"{report.reference}: {summary(report)}"
    if report.crashed:
        title += " (the check script crashed)"
    table = Table(title=title, title_justify="left", show_lines=False)
    configs = [c for c in CONFIGS if any(check.config == c for check in report.checks)]
    configs += sorted({check.config for check in report.checks} - set(configs))
    table.add_column("check", no_wrap=True)
    for config in configs:
        table.add_column(config, overflow="fold")
    names = list(dict.fromkeys(check.name for check in report.checks))
    cells = {(check.name, check.config): check for check in report.checks}
    for name in names:
        row: list[Text | str] = [name]
        for config in configs:
            check = cells.get((name, config))
            if check is None:
                row.append("")
                continue
            mark, style = _MARKS.get(check.status, ("?", "magenta"))
            label = _LABELS.get(check.status, "")
            row.append(Text(f"{mark} {label}{check.detail}", style=style))
        table.add_row(*row)
    return table


def render_table(report: VerifyReport, width: int = 120) -> str:
    """The report as plain text (no colour codes), for logs, tests and non-terminal output."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, highlight=False)
    console.print(build_table(report))
    console.print(report.stack())
    if report.crashed and report.stderr_tail:
        console.print(f"last line of the check script's error output: {report.checks[0].detail}")
    return buffer.getvalue()
