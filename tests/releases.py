"""The release matrix as the tests see it.

Every pinned release must apply, keep unclaimed code and verify.  (A release whose shape is
new must fail with a drift error, never a wrong file: tests/test_drift.py checks that on
mutilated upstream files, since every real pinned release is supported.)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

from patcher.upstream import fetch as upstream
from patcher.upstream import pins

if TYPE_CHECKING:
    from patcher.series.contract import Output

PINNED = list(pins.load_pins())
SUPPORTED = PINNED


#: One release per distinct upstream modeling_gemma.py among the supported ones, for the
#: expensive checks (the pins say which releases share a file).
def _distinct(versions: list[str]) -> list[str]:
    first: dict[str, str] = {}
    for v in versions:
        first.setdefault(pins.load_pins()[v].files["modeling_gemma.py"], v)
    return list(first.values())


DISTINCT_SUPPORTED = _distinct(SUPPORTED)
#: The releases the default suite verifies end to end: one per distinct upstream file.
VERIFIED = DISTINCT_SUPPORTED


@functools.cache
def fetch(version: str) -> upstream.Upstream:
    """Upstream files of a pinned release (from the user cache, downloading once)."""
    return upstream.fetch(version, pins.load_pins())


def generated(version: str) -> Output:
    """The series' output for a pinned release, generated once per test process.

    Many tests look at the same outputs (the per-release contract tests, the formatting and
    verification tiers, the batch and matrix comparisons); generating each once per worker
    instead of once per test saves minutes of the suite.  The tests whose subject is
    ``generate`` itself (determinism, reuse, drift) call it afresh.  Each caller gets its own
    copy of the file and report lists, so a test that edits them cannot change another's.
    """
    output = _generated(version)
    return dataclasses.replace(output, files=dict(output.files), reports=list(output.reports))


@functools.cache
def _generated(version: str) -> Output:
    from patcher.series import engine
    from patcher.series.generate import generate

    return generate(fetch(version), engine.load_series())
