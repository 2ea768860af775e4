"""The release matrix as the tests see it: which pinned releases the series supports today.

Supported releases must apply, keep unclaimed code and verify; every other pinned release
must fail with a drift error (never a wrong file).  When a codemod learns a new shape, move
the boundary and the tests follow.
"""

from __future__ import annotations

import functools

from packaging.version import Version

from patcher import pins, upstream

PINNED = list(pins.load_pins())
NEWEST_SUPPORTED = Version("4.53.3")
SUPPORTED = [v for v in PINNED if Version(v) <= NEWEST_SUPPORTED]
UNSUPPORTED = [v for v in PINNED if Version(v) > NEWEST_SUPPORTED]


#: One release per distinct upstream modeling_gemma.py among the supported ones, for the
#: expensive checks (the pins say which releases share a file).
def _distinct(versions: list[str]) -> list[str]:
    first: dict[str, str] = {}
    for v in versions:
        first.setdefault(pins.load_pins()[v].files["modeling_gemma.py"], v)
    return list(first.values())


DISTINCT_SUPPORTED = _distinct(SUPPORTED)
DISTINCT_UNSUPPORTED = _distinct(UNSUPPORTED)
#: The releases the default suite verifies end to end: one per distinct upstream file.
VERIFIED = DISTINCT_SUPPORTED


@functools.cache
def fetch(version: str) -> upstream.Upstream:
    """Upstream files of a pinned release (from the user cache, downloading once)."""
    return upstream.fetch(version, pins.load_pins())
