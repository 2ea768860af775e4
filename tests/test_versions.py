"""Resolving ``--transformers SPEC`` against the pins: what is accepted, and how refusals read."""

from __future__ import annotations

import pytest

from patcher.errors import UsageError
from patcher.upstream.versions import check_release, resolve

PINNED = {
    v: object()
    for v in [
        "4.38.0",
        "4.38.2",
        "4.40.0",
        "4.40.1",
        "4.40.2",
        "4.57.6",
        "5.0.0",
        "5.9.0",
        "5.10.4",
        "5.24.0",
    ]
}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("4.40", "4.40.2", id="minor-newest"),
        pytest.param("4.40.1", "4.40.1", id="exact"),
        pytest.param("4.40.0", "4.40.0", id="exact-zero"),
        pytest.param("4.38", "4.38.2", id="first-gemma-minor"),
        pytest.param("4.38.0", "4.38.0", id="first-gemma"),
        pytest.param("5.10", "5.10.4", id="two-digit-minor"),
        pytest.param("5.1", None, id="5.1-is-not-5.10"),
        pytest.param("5.0", "5.0.0", id="major-5"),
        pytest.param("  4.40.1\n", "4.40.1", id="whitespace-stripped"),
        pytest.param("\t5.24 ", "5.24.0", id="whitespace-minor"),
    ],
)
def test_resolves(spec: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(UsageError, match=r"no transformers 5\.1\.x release is pinned"):
            resolve(spec, PINNED)
    else:
        assert resolve(spec, PINNED) == expected


def test_minor_ordering_is_numeric_not_textual() -> None:
    pins = {v: object() for v in ["4.42.9", "4.42.10", "4.42.2"]}
    assert resolve("4.42", pins) == "4.42.10"


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        pytest.param("", ["empty", "4.40", "4.40.2"], id="empty"),
        pytest.param("   ", ["empty"], id="whitespace"),
        pytest.param("latest", ["'latest' is not a version", "patcher pin --latest"], id="latest"),
        pytest.param("LATEST", ["is not a version"], id="latest-upper"),
        pytest.param("4.40.x", ["no wildcards", "write 4.40 "], id="wildcard-x"),
        pytest.param("4.40.*", ["no wildcards", "write 4.40 "], id="wildcard-star"),
        pytest.param("4.x", ["no wildcards", "major.minor (e.g. 4.40)"], id="wildcard-major"),
        pytest.param("v4.40", ["drop the leading 'v'", "write 4.40"], id="v-prefix"),
        pytest.param("V4.40.2", ["drop the leading 'v'", "write 4.40.2"], id="v-prefix-upper"),
        pytest.param("5", ["too vague", "major.minor"], id="major-only"),
        pytest.param("5.0.0rc1", ["pre-release", "5.0.0"], id="rc"),
        pytest.param("5.0.0.dev0", ["pre-release"], id="dev"),
        pytest.param("4.41.0b1", ["pre-release"], id="beta"),
        pytest.param("4.40.2.post1", ["not a plain release number"], id="post"),
        pytest.param("4.40.2+vacc", ["not a plain release number"], id="local"),
        pytest.param("1!4.40.2", ["not a plain release number"], id="epoch"),
        pytest.param("4.40.2.1", ["too many parts"], id="four-parts"),
        pytest.param("==4.40.2", ["requirement, not a version"], id="requirement"),
        pytest.param(">=4.40", ["requirement, not a version"], id="requirement-range"),
        pytest.param("banana", ["'banana' is not a transformers version", "major.minor"], id="garbage"),
        pytest.param("4..40", ["is not a transformers version"], id="double-dot"),
        pytest.param("4.40.", ["is not a transformers version"], id="trailing-dot"),
        pytest.param("4.40 .1", ["is not a transformers version"], id="inner-space"),
        pytest.param("transformers==4.40.2", ["is not a transformers version"], id="requirement-with-name"),
        pytest.param(
            "4.37.2", ["has no Gemma", "Gemma first appears in transformers 4.38.0"], id="before-gemma"
        ),
        pytest.param("4.37", ["has no Gemma", "4.38.0"], id="before-gemma-minor"),
        pytest.param("3.5", ["has no Gemma"], id="old-major"),
        pytest.param(
            "4.41.5", ["transformers 4.41.5 is not pinned", "run `patcher pin 4.41.5` first"], id="unpinned"
        ),
        pytest.param(
            "4.99", ["no transformers 4.99.x release is pinned", "patcher pin 4.99."], id="unpinned-minor"
        ),
        pytest.param("6.0", ["no transformers 6.0.x release is pinned"], id="future-major"),
        pytest.param("installed", ["`installed`"], id="installed-reaches-resolve"),
    ],
)
def test_refuses(spec: str, fragments: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        resolve(spec, PINNED)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert info.value.exit_code == 2


def test_empty_pins_refuse_every_release() -> None:
    with pytest.raises(UsageError, match="not pinned"):
        resolve("4.40.2", {})


@pytest.mark.parametrize("version", ["4.40.2", "5.24.0", " 4.38.0 "])
def test_check_release_accepts_exact(version: str) -> None:
    assert check_release(version) == version.strip()


@pytest.mark.parametrize(
    ("version", "fragment"),
    [
        ("4.40", "give major.minor.patch (e.g. 4.40.0)"),
        ("4.37.2", "Gemma first appears in transformers 4.38.0"),
        ("5.0.0rc1", "pre-release"),
        ("latest", "is not a version"),
        ("", "empty"),
    ],
)
def test_check_release_refuses(version: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        check_release(version)
    assert fragment in str(info.value)
