"""From upstream files to the three output files of one release.

``generate`` runs the series on ``modeling_gemma.py`` and ``configuration_gemma.py`` and adds
the companion ``quantization_vacc.py``; ``write_output`` puts them in a directory atomically,
refusing to overwrite files patcher did not write.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from patcher import engine
from patcher.errors import DriftError, UsageError
from patcher.upstream import Upstream
from patches._base import VaccCodemod
from patches.library_imports import NOTICE_MARK

COMPANIONS = ("quantization_vacc.py",)
OUTPUT_FILES = (*engine.OUTPUT_NAMES.values(), *COMPANIONS)


@dataclass
class Output:
    """The generated files of one release (name -> source) and the codemods' reports."""

    upstream: Upstream
    files: dict[str, str]
    reports: list[engine.Report] = field(default_factory=list)

    def digests(self) -> dict[str, str]:
        return {name: hashlib.sha256(text.encode()).hexdigest() for name, text in self.files.items()}


def regenerate_command(upstream: Upstream) -> str:
    if upstream.version is None:
        return "patcher apply --upstream <file> (an unpinned local file)"
    return f"patcher apply --transformers {upstream.version}"


def notice(upstream: Upstream, file: str, sha256: str | None, codemods: list[str]) -> str:
    """The generated-file notice placed right after upstream's licence header."""
    source = (
        f"transformers {upstream.version}"
        if upstream.version
        else f"an UNPINNED local file ({upstream.origin})"
    )
    return "\n".join(
        [
            f"{NOTICE_MARK} from {source}; do not edit by hand.",
            f"# Upstream: transformers/models/gemma/{file}, sha256 {sha256}",
            f"# Codemods: {', '.join(codemods)}",
            f"# Regenerate: {regenerate_command(upstream)}",
        ]
    )


def generate(upstream: Upstream, series: list[type[VaccCodemod]] | None = None) -> Output:
    """Apply the series to one release's upstream files.

    Raises ``DriftError`` naming every drifting codemod of both files.
    """
    series = series if series is not None else engine.load_series()
    files: dict[str, str] = {}
    reports: list[engine.Report] = []
    drift: list[str] = []
    sources = {
        engine.MODELING: (upstream.modeling, upstream.modeling_sha256),
        engine.CONFIGURATION: (upstream.configuration, upstream.configuration_sha256),
    }
    for file, (source, sha) in sources.items():
        names = [c.NAME for c in series if c.FILE == file]
        if not names:  # a --codemod selection that leaves this file alone: not written
            continue
        if source is None:
            raise UsageError(f"no {file} given; pass --config-upstream FILE as well")
        try:
            result = engine.run(source, series, file=file, notice=notice(upstream, file, sha, names))
        except DriftError as exc:
            drift.append(str(exc))
            continue
        files[engine.OUTPUT_NAMES[file]] = result.code
        reports += result.reports
    if drift:
        raise DriftError("\n".join(drift))
    for name in COMPANIONS:
        files[name] = (engine.COMPANION_DIR / name).read_text(encoding="utf-8")
    return Output(upstream, files, reports)


def default_out_dir(upstream: Upstream) -> Path:
    return Path("build") / f"transformers-{upstream.version or 'local'}"


def _foreign_files(directory: Path) -> list[str]:
    """Files in ``directory`` that patcher did not write."""
    foreign = []
    for path in sorted(directory.iterdir()):
        if path.name == "__pycache__":
            continue
        if path.name not in OUTPUT_FILES or not path.is_file():
            foreign.append(path.name)
        elif path.name in engine.OUTPUT_NAMES.values() and NOTICE_MARK not in _head(path):
            foreign.append(path.name)
    return foreign


def _head(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return handle.read(4096)
    except OSError:
        return ""


def write_output(files: dict[str, str], out_dir: Path, *, force: bool = False) -> None:
    """Write ``files`` into ``out_dir`` so that readers see the old set or the new, never a mix.

    The files are written to a sibling temporary directory which then takes the place of
    ``out_dir``.  A directory holding files patcher did not write is refused unless ``force``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise UsageError(f"--out {out_dir} is a file, not a directory; choose another --out")
        foreign = _foreign_files(out_dir)
        if foreign and not force:
            raise UsageError(
                f"{out_dir} holds files patcher did not write ({', '.join(foreign[:3])}); "
                "choose another --out or pass --force"
            )
    parent = out_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=parent))
    except OSError as exc:
        raise UsageError(f"cannot write to {parent}: {exc.strerror}; choose another --out") from None
    try:
        for name, text in files.items():
            with open(tmp / name, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o755)
        old = None
        if out_dir.exists():
            old = parent / f".{out_dir.name}.old-{os.getpid()}"
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UsageError(f"cannot write {out_dir}: {exc.strerror}; choose another --out") from None
