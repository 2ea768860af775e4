"""Turning a user's ``--transformers SPEC`` into one pinned release.

A SPEC is ``major.minor`` (the newest pinned release of that series, e.g. ``4.40``) or
``major.minor.patch`` (exactly that release, e.g. ``4.40.2``).  Anything else is refused with
one line saying what was wrong and what to type instead: we would rather refuse ``v4.40`` or
``4.40.x`` than guess, because a wrong guess silently generates files for the wrong release.
``installed`` is a SPEC too, but it names files on disk, so the caller handles it before here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NoReturn

from packaging.version import InvalidVersion, Version

from patcher.errors import UsageError
from patcher.upstream.families import Family, family

FIRST_GEMMA = Version("4.38.0")
_SHAPE_HINT = "give major.minor (e.g. 4.40) or major.minor.patch (e.g. 4.40.2)"
_NUMERIC = re.compile(r"\d+(?:\.\d+)*")


def _fail(message: str) -> NoReturn:
    raise UsageError(message)


def _shown(spec: str) -> str:
    """``spec`` quoted for a message, cut short when it is long (a message stays one line)."""
    return repr(spec if len(spec) <= 40 else spec[:37] + "…")


def _plain(spec: str) -> str:
    return spec if len(spec) <= 40 else spec[:37] + "…"


def _check_shape(spec: str) -> Version:
    """Refuse every SPEC that is not ``X.Y`` or ``X.Y.Z``, each with its own hint."""
    shown = _shown(spec)
    if not spec:
        _fail(f"empty transformers version; {_SHAPE_HINT}")
    low = spec.lower()
    if low == "installed":
        _fail("`installed` names the transformers on disk and cannot be resolved against the pins here")
    if low in ("latest", "newest", "last", "current"):
        _fail(f"{shown} is not a version; {_SHAPE_HINT} (`patcher pin --latest` pins the newest release)")
    if low.startswith("v") and _NUMERIC.fullmatch(spec[1:]):
        _fail(f"{shown}: drop the leading 'v' and write {spec[1:]}")
    wildcard = re.search(r"\.[x*](?:\.|$)", low)
    if wildcard:
        series = spec[: wildcard.start()]
        if "." not in series:
            _fail(f"{shown}: no wildcards; {_SHAPE_HINT}")
        _fail(f"{shown}: no wildcards; write {series} for the newest pinned release of that series")
    if spec[0] in "=<>~!^":
        _fail(f"{shown} is a requirement, not a version; {_SHAPE_HINT}")
    try:
        parsed = Version(spec)
    except InvalidVersion:
        _fail(f"{shown} is not a transformers version; {_SHAPE_HINT}")
    if parsed.is_prerelease or parsed.is_devrelease:
        _fail(f"{shown} is a pre-release; patcher supports final releases only, e.g. {parsed.base_version}")
    if not _NUMERIC.fullmatch(spec):
        _fail(f"{shown} is not a plain release number; {_SHAPE_HINT}")
    if any(len(part) > 1 and part.startswith("0") for part in spec.split(".")):
        _fail(f"{shown}: a part has a leading zero; did you mean {parsed}?")
    if len(parsed.release) == 1:
        _fail(f"{shown} is too vague; {_SHAPE_HINT}")
    if len(parsed.release) > 3:
        _fail(f"{shown} has too many parts; {_SHAPE_HINT}")
    return parsed


def _check_gemma(spec: str, parsed: Version, model: Family | str | None = None) -> None:
    padded = parsed.release + (0,) * (3 - len(parsed.release))
    fam = family(model)
    if Version(".".join(map(str, padded))) < FIRST_GEMMA:
        if fam.pins_subdir:  # another family: say where patcher's support for it starts
            _fail(
                f"transformers {_plain(spec)} is older than patcher's {fam.prefix} support, which starts "
                f"at transformers {fam.first}"
            )
        _fail(f"transformers {_plain(spec)} has no Gemma: Gemma first appears in transformers {FIRST_GEMMA}")


def check_release(version: str, model: Family | str | None = None) -> str:
    """Validate an exact release number (``X.Y.Z``) that may be pinned; return it stripped.

    Used by ``patcher pin``: it refuses malformed versions, pre-releases, and releases before
    Gemma (patcher's first release for every family), with the same messages as :func:`resolve`.
    """
    spec = version.strip()
    parsed = _check_shape(spec)
    _check_gemma(spec, parsed, model)
    if len(parsed.release) != 3:
        _fail(f"{_shown(spec)} is not an exact release; give major.minor.patch (e.g. {spec}.0)")
    return spec


def resolve(spec: str, pins: Mapping[str, object], model: Family | str | None = None) -> str:
    """The pinned release (a key of ``pins``, the pins of the family ``model``) that ``spec``
    names; UsageError if none.

    ``4.40`` means the newest pinned 4.40.x; ``4.40.2`` must itself be pinned.  Surrounding
    whitespace is ignored.
    """
    spec = spec.strip()
    parsed = _check_shape(spec)
    _check_gemma(spec, parsed, model)
    option = family(model).option
    whose = f" for {family(model).name}" if option else ""
    pinned = {Version(v): v for v in pins}
    if len(parsed.release) == 3:
        if parsed in pinned:
            return pinned[parsed]
        _fail(
            f"transformers {_plain(spec)} is not pinned{whose}; "
            f"run `patcher pin{option} {_plain(spec)}` first"
        )
    series = sorted(v for v in pinned if v.release[:2] == parsed.release and not v.is_prerelease)
    if series:
        return pinned[series[-1]]
    _fail(
        f"no transformers {_plain(spec)}.x release is pinned{whose}; "
        f"run `patcher pin{option} {_plain(spec)}.N` (a release of that series) first"
    )
