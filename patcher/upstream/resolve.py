"""Resolving a command line's upstream: ``--transformers SPEC`` to a pinned release and its
fetched files, ``installed``, or local files (``--upstream FILE [--config-upstream FILE]``).

The first two steps of ``patcher apply`` (resolve, then fetch); ``install`` and ``verify``
take their upstream the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from patcher.errors import UsageError
from patcher.progress import say
from patcher.upstream import fetch, pins, versions
from patcher.upstream.families import Family, family


def upstream_for(
    spec: str | None, progress: Callable[[str], None] = say, args=None, model: str | None = None
) -> fetch.Upstream:
    """The upstream of a command line: ``model`` (or ``args.model``, default gemma) is the family."""
    model = model or getattr(args, "model", None) or None
    fam = family_of(model)
    if args is not None and getattr(args, "upstream", None) is not None:
        return fetch.from_files(*local_upstream_paths(args.upstream, args.config_upstream, fam), fam)
    if args is not None and getattr(args, "config_upstream", None) is not None:
        raise UsageError("--config-upstream goes with --upstream FILE, not with --transformers")
    if spec is None:
        raise UsageError("give --transformers SPEC (or --upstream FILE)")
    if spec.strip().lower() == "installed":
        return fetch.from_installed(model=fam)
    pinned = pins.load_pins(model=fam)
    return fetch.fetch(versions.resolve(spec, pinned, fam), pinned, progress=progress, model=fam)


def family_of(model: str | None) -> Family:
    """The family of ``--model NAME`` (default gemma); an unknown name is a usage error."""
    try:
        return family(model)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def local_upstream_paths(
    modeling: str, configuration: str | None, model: Family | str | None = None
) -> tuple[Path, Path | None]:
    """The files of ``--upstream FILE [--config-upstream FILE]``.  Without ``--config-upstream``
    the ``configuration_gemma.py`` beside FILE is used when there is one (a transformers
    checkout or a copy of both files); without either, only a ``--codemod`` selection that
    leaves the configuration alone can run (``generate`` says so)."""
    for flag, value in (("--upstream", modeling), ("--config-upstream", configuration)):
        if value is not None and not value.strip():
            raise UsageError(f"{flag} is empty; give the path of a file")
    if configuration is not None:
        return Path(modeling), Path(configuration)
    beside = Path(modeling).parent / family(model).configuration
    return Path(modeling), (beside if beside.is_file() else None)
