"""Generating one release's output: the series run on both upstream files, plus the companion.

``generate`` runs the series on ``modeling_gemma.py`` and ``configuration_gemma.py`` (each with
its notice, :mod:`patcher.series.notice`) and adds the companion ``quantization_vacc.py``;
``patcher.series.reuse.generate_cached`` reuses an earlier identical generation.
"""

from __future__ import annotations

from patcher.errors import DriftError, UsageError
from patcher.series import engine
from patcher.series.contract import (
    COMPANION_DIR,
    COMPANIONS,
    Output,
    Report,
)
from patcher.series.notice import local_path, notice
from patcher.upstream.families import FAMILIES
from patcher.upstream.fetch import Upstream
from patches._base import VaccCodemod


def generate(upstream: Upstream, series: list[type[VaccCodemod]] | None = None) -> Output:
    """Apply the series to one release's upstream files.

    Raises ``DriftError`` naming every drifting codemod of both files.
    """
    fam = upstream.family
    full = engine.load_series(model=fam)
    series = series if series is not None else full
    selection = [c.NAME for c in series] if [c.NAME for c in series] != [c.NAME for c in full] else None
    files: dict[str, str] = {}
    reports: list[Report] = []
    drift: list[str] = []
    sources = {
        fam.modeling: (upstream.modeling, upstream.modeling_sha256),
        fam.configuration: (upstream.configuration, upstream.configuration_sha256),
    }
    prefix = fam.prefix_of(upstream.modeling or "")
    if prefix is not None and prefix != fam.prefix:  # another family's file: say which option
        known = {f.prefix: f.name for f in FAMILIES.values()}
        hint = f"--model {known[prefix]}" if prefix in known else "a --model that serves it"
        raise UsageError(
            f"the upstream {fam.modeling} defines {prefix}PreTrainedModel, not {fam.prefix}PreTrainedModel: "
            f"it is not a {fam.name} file; use {hint}"
        )
    for file, (source, _) in sources.items():  # refuse a missing file before running anything
        if source is None and any(c.FILE == fam.to_canonical(file) for c in series):
            raise UsageError(
                f"no {file} given and none beside --upstream {local_path(upstream)}; "
                "pass --config-upstream FILE as well"
            )
    for file, (source, sha) in sources.items():
        names = [c.NAME for c in series if c.FILE == fam.to_canonical(file)]
        if not names:  # a --codemod selection that leaves this file alone: not written
            continue
        try:
            result = engine.run(
                source, series, file=file, notice=notice(upstream, file, sha, names, selection), model=fam
            )
        except DriftError as exc:
            drift.append(str(exc))
            continue
        files[fam.output_names[file]] = result.code
        reports += result.reports
    if drift:
        raise DriftError("\n".join(drift))
    for name in COMPANIONS:
        files[name] = (COMPANION_DIR / name).read_text(encoding="utf-8")
    return Output(upstream, files, reports)
