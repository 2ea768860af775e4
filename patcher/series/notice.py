"""The generated-file notice: which release and upstream file an output comes from, the
codemods that made it and the command that makes it again.

``library-imports`` places it right after upstream's licence header; patcher recognises its
own files by it (:data:`patcher.series.contract.NOTICE_MARK`).
"""

from __future__ import annotations

import shlex

from patcher.series.contract import MODELING, NOTICE_MARK
from patcher.upstream.fetch import Upstream


def local_path(upstream: Upstream, index: int = 0) -> str:
    """The path of a local upstream file as the user gave it (0: modeling, 1: configuration)."""
    return (upstream.paths or ("<file>", None))[index] or "<file>"


def regenerate_command(upstream: Upstream, selection: list[str] | None = None) -> str:
    """The command that writes this output again (with its ``--codemod`` selection, if any)."""
    model = upstream.family.option
    if upstream.version is not None:
        command = f"patcher apply{model} --transformers {upstream.version}"
    else:
        command = f"patcher apply{model} --upstream {shlex.quote(local_path(upstream))}"
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
        origin = f"{upstream.family.upstream_dir}/{file}, sha256 {sha256}"
    else:
        source = "an UNPINNED local file, not a pinned transformers release"
        path = local_path(upstream, 0 if file in (MODELING, upstream.family.modeling) else 1)
        origin = f"{path} (UNPINNED: checked against no pin), sha256 {sha256}"
    return "\n".join(
        [
            f"{NOTICE_MARK} from {source}; do not edit by hand.",
            f"# Upstream: {origin}",
            f"# Codemods: {', '.join(codemods)}",
            f"# Regenerate: {regenerate_command(upstream, selection)}",
            "# To change it: edit the codemods in patcher's patches/ and regenerate (not this file,"
            f" not upstream's modular_{upstream.family.name}.py).",
        ]
    )
