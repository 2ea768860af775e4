"""Running the series on another family's upstream under the codemods' (canonical) names.

The codemods are written once, in Gemma's names (see :mod:`patcher.upstream.families`).  For
a Mistral upstream, :func:`run_as_canonical` reads the prefix from the module's own
``<Prefix>PreTrainedModel`` class, refuses a file whose prefix is not the family's or that
already uses the canonical names (the mapping would not be exact), runs the series on the
canonical spelling, and maps the result, the per-codemod steps, the reports and any drift
message back.  The notice goes in as a placeholder and is put in place afterwards, so that
nothing in it (a local path, say) is renamed.
"""

from __future__ import annotations

from collections.abc import Callable

from patcher.errors import DriftError, UsageError
from patcher.series.contract import NOTICE_MARK, Report
from patcher.upstream.families import CANONICAL, Family

#: Stands for the notice while the series runs (one comment line, no family name in it).
PLACEHOLDER = f"{NOTICE_MARK} @@notice@@"


def run_as_canonical(
    run: Callable, fam: Family, source: str, codemods: list, *, file: str, notice, keep_steps
):
    """``engine.run`` (passed as ``run``) on ``source`` of family ``fam``, in canonical names."""
    check(fam, source, file)
    canonical_file = fam.to_canonical(file)
    try:
        result = run(
            fam.to_canonical(source),
            codemods,
            file=canonical_file,
            notice=PLACEHOLDER if notice else None,
            keep_steps=keep_steps,
            traits=fam.traits,
        )
    except DriftError as exc:
        raise DriftError(fam.from_canonical(str(exc))) from None

    def back(text: str) -> str:
        text = fam.from_canonical(text)
        if not notice:
            return text
        # the notice's lines end as the output's do (CRLF for an all-CRLF upstream)
        newline = "\r\n" if f"{PLACEHOLDER}\r\n" in text else "\n"
        return text.replace(PLACEHOLDER, notice.replace("\n", newline))

    result.code = back(result.code)
    result.steps = [back(step) for step in result.steps]
    result.reports = [
        Report(r.codemod, fam.from_canonical(r.file), r.shapes, r.added, r.removed) for r in result.reports
    ]
    return result


def check(fam: Family, source: str, file: str) -> None:
    """Refuse an upstream the name mapping would not carry exactly."""
    clashes = fam.clashes(source)
    if clashes:
        lines = enumerate(source.splitlines(), 1)
        line = next((n for n, text in lines if any(c in text for c in clashes)), 1)
        raise UsageError(
            f"{file}:{line} already uses {', '.join(clashes)}, the names patcher's codemods are written in; "
            f"its {fam.prefix} names cannot be mapped to them and back exactly"
        )
    if file == fam.modeling or file.startswith("modeling_"):
        prefix = fam.prefix_of(source)
        if prefix is not None and prefix != fam.prefix:
            raise UsageError(
                f"{file} defines {prefix}PreTrainedModel, not {fam.prefix}PreTrainedModel: it is not a "
                f"{fam.name} model (choose its family with --model)"
            )
    assert fam is not CANONICAL
