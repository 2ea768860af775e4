"""Generating one release's output: the series run on both upstream files, plus the companion.

``generate`` runs the series on ``modeling_gemma.py`` and ``configuration_gemma.py`` (each with
its notice, :mod:`patcher.series.notice`) and adds the companion ``quantization_vacc.py``;
``patcher.series.reuse.generate_cached`` reuses an earlier identical generation.
"""

from __future__ import annotations

import re

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
    _check_family(upstream)
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


_CONFIG_CLASS = re.compile(r"^class (\w+?)Config\b", re.M)


def _check_family(upstream: Upstream) -> None:
    """Refuse another family's upstream file given as this family's (``--model gemma`` with a
    Mistral file, or the reverse), in one line naming the file and the option that fits it.

    The modeling file says its family by its ``<Prefix>PreTrainedModel``; the configuration
    file by its ``<Prefix>Config`` classes, when it defines a known family's and not this one's.
    """
    fam = upstream.family
    known = {f.prefix: f.name for f in FAMILIES.values()}
    prefix = fam.prefix_of(upstream.modeling or "")
    found = None
    if prefix is not None and prefix != fam.prefix:
        found = (0, fam.modeling, f"{prefix}PreTrainedModel, not {fam.prefix}PreTrainedModel", prefix)
    elif upstream.configuration is not None:
        configs = set(_CONFIG_CLASS.findall(upstream.configuration))
        others = sorted(p for p in configs if p in known and p != fam.prefix)
        if others and fam.prefix not in configs:
            found = (1, fam.configuration, f"{others[0]}Config, not {fam.prefix}Config", others[0])
    if found is None:
        return
    index, name, defines, other = found
    where = local_path(upstream, index) if upstream.version is None else f"the upstream {name}"
    hint = f"--model {known[other]}" if other in known else "a --model that serves it"
    raise UsageError(f"{where} defines {defines}: it is not a {fam.name} file; use {hint}")
