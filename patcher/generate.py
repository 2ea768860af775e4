"""From upstream files to the output files of one release.

``generate`` runs the series on ``modeling_gemma.py`` and ``configuration_gemma.py`` and adds
the companion ``quantization_vacc.py``; ``cached_generate`` reuses an earlier identical
generation (see ``patcher.outputs``).
"""

from __future__ import annotations

import shlex

from patcher import engine
from patcher.contract import (
    COMPANION_DIR,
    COMPANIONS,
    CONFIGURATION,
    MODELING,
    NOTICE_MARK,
    OUTPUT_NAMES,
    Output,
    Report,
)
from patcher.errors import DriftError, UsageError
from patcher.upstream import Upstream
from patches._base import VaccCodemod


def _local_path(upstream: Upstream, index: int = 0) -> str:
    return (upstream.paths or ("<file>", None))[index] or "<file>"


def regenerate_command(upstream: Upstream, selection: list[str] | None = None) -> str:
    """The command that writes this output again (with its ``--codemod`` selection, if any)."""
    if upstream.version is not None:
        command = f"patcher apply --transformers {upstream.version}"
    else:
        command = f"patcher apply --upstream {shlex.quote(_local_path(upstream))}"
        if upstream.paths and upstream.paths[1]:
            command += f" --config-upstream {shlex.quote(upstream.paths[1])}"
    return command + "".join(f" --codemod {name}" for name in selection or ())


def notice(
    upstream: Upstream, file: str, sha256: str | None, codemods: list[str], selection: list[str] | None = None
) -> str:
    """The generated-file notice placed right after upstream's licence header.

    Output of a local file says UNPINNED twice: nothing checked that file against a pin, so
    nothing says which release, if any, it is.  ``selection`` is the ``--codemod`` names of an
    output made with only part of the series (None for the whole series)."""
    if upstream.version is not None:
        source = f"transformers {upstream.version}"
        origin = f"transformers/models/gemma/{file}, sha256 {sha256}"
    else:
        source = "an UNPINNED local file, not a pinned transformers release"
        path = _local_path(upstream, 0 if file == MODELING else 1)
        origin = f"{path} (UNPINNED: checked against no pin), sha256 {sha256}"
    return "\n".join(
        [
            f"{NOTICE_MARK} from {source}; do not edit by hand.",
            f"# Upstream: {origin}",
            f"# Codemods: {', '.join(codemods)}",
            f"# Regenerate: {regenerate_command(upstream, selection)}",
            "# To change it: edit the codemods in patcher's patches/ and regenerate (not this file,"
            " not upstream's modular_gemma.py).",
        ]
    )


def generate(upstream: Upstream, series: list[type[VaccCodemod]] | None = None) -> Output:
    """Apply the series to one release's upstream files.

    Raises ``DriftError`` naming every drifting codemod of both files.
    """
    full = engine.load_series()
    series = series if series is not None else full
    selection = [c.NAME for c in series] if [c.NAME for c in series] != [c.NAME for c in full] else None
    files: dict[str, str] = {}
    reports: list[Report] = []
    drift: list[str] = []
    sources = {
        MODELING: (upstream.modeling, upstream.modeling_sha256),
        CONFIGURATION: (upstream.configuration, upstream.configuration_sha256),
    }
    for file, (source, _) in sources.items():  # refuse a missing file before running anything
        if source is None and any(c.FILE == file for c in series):
            raise UsageError(
                f"no {file} given and none beside --upstream {_local_path(upstream)}; "
                "pass --config-upstream FILE as well"
            )
    for file, (source, sha) in sources.items():
        names = [c.NAME for c in series if c.FILE == file]
        if not names:  # a --codemod selection that leaves this file alone: not written
            continue
        try:
            result = engine.run(
                source, series, file=file, notice=notice(upstream, file, sha, names, selection)
            )
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
