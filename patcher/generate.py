"""From upstream files to the output files of one release.

``generate`` runs the series on ``modeling_gemma.py`` and ``configuration_gemma.py`` and adds
the companion ``quantization_vacc.py``; ``cached_generate`` reuses an earlier identical
generation (see ``patcher.outputs``).
"""

from __future__ import annotations

from patcher import engine
from patcher.errors import DriftError, UsageError
from patcher.outputs import (
    COMPANION_DIR,
    COMPANIONS,
    CONFIGURATION,
    MODELING,
    NOTICE_MARK,
    OUTPUT_NAMES,
    Output,
    Report,
)
from patcher.upstream import Upstream
from patches._base import VaccCodemod


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
    reports: list[Report] = []
    drift: list[str] = []
    sources = {
        MODELING: (upstream.modeling, upstream.modeling_sha256),
        CONFIGURATION: (upstream.configuration, upstream.configuration_sha256),
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
        files[OUTPUT_NAMES[file]] = result.code
        reports += result.reports
    if drift:
        raise DriftError("\n".join(drift))
    for name in COMPANIONS:
        files[name] = (COMPANION_DIR / name).read_text(encoding="utf-8")
    return Output(upstream, files, reports)
