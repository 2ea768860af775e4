"""Regenerating many releases at once (patcher.series.batch): grouping, notice substitution, reuse,
and byte-identity with ``generate.generate`` release by release."""

from __future__ import annotations

import functools

import pytest
from releases import PINNED, fetch, generated

from patcher.errors import DriftError
from patcher.series import batch, engine
from patcher.series.contract import MODELING, Output
from patcher.series.generate import generate
from patcher.series.notice import notice
from patcher.series.reuse import OutputCache
from patcher.upstream.fetch import Upstream

SERIES = engine.load_series()
NAMES = [c.NAME for c in SERIES if c.FILE == MODELING]


def fake(version: str, modeling: str = "m1", configuration: str | None = "c1") -> Upstream:
    return Upstream(version, f"# {modeling}\n", "# config\n", modeling, configuration, "test")


# -- grouping --------------------------------------------------------------------------------
def test_groups_share_both_digests_and_keep_the_given_order():
    ups = [fake("1.0.0"), fake("1.0.1", "m2"), fake("1.0.2"), fake("1.0.3", "m1", "c2"), fake("1.0.4", "m2")]
    groups = batch.group_releases(ups)
    assert [[u.version for u in g] for g in groups] == [
        ["1.0.0", "1.0.2"],
        ["1.0.1", "1.0.4"],
        ["1.0.3"],
    ]
    assert batch.describe(groups[0]) == "1.0.0 (+1 sharing its files)"
    assert batch.describe(groups[2]) == "1.0.3"


def test_the_pins_have_fewer_distinct_upstreams_than_releases():
    groups = batch.group_releases([fetch(v) for v in PINNED])
    assert len(PINNED) == 115 and len(groups) == 40


# -- notice substitution ---------------------------------------------------------------------
def _output_with_notice(up: Upstream, copies: int = 1) -> Output:
    text = "# licence\n" + (notice(up, MODELING, up.modeling_sha256, NAMES) + "\n") * copies + "code\n"
    return Output(up, {"modeling_gemma_vacc.py": text, "quantization_vacc.py": "same for all\n"})


def test_derive_swaps_the_notice_and_nothing_else():
    a, b = fake("1.0.0"), fake("1.0.1")
    derived = batch.derive(_output_with_notice(a), b)
    assert derived.upstream is b
    assert derived.files == _output_with_notice(b).files
    assert "transformers 1.0.1" in derived.files["modeling_gemma_vacc.py"]
    assert "1.0.0" not in derived.files["modeling_gemma_vacc.py"]


@pytest.mark.parametrize("copies", [0, 2])
def test_derive_insists_on_exactly_one_notice(copies):
    with pytest.raises(AssertionError, match=f"{copies} times"):
        batch.derive(_output_with_notice(fake("1.0.0"), copies), fake("1.0.1"))


def test_derive_refuses_releases_with_other_upstream_files():
    with pytest.raises(AssertionError):
        batch.derive(_output_with_notice(fake("1.0.0")), fake("1.0.1", "m2"))


# -- against generate ------------------------------------------------------------------------
#: 4.40.0 and 4.40.1 share their upstream files; 5.4.0 and 5.5.0 too; 4.57.1 and 4.57.4 share
#: theirs with 4.57.2 in between.
MIXED = ["4.40.0", "4.40.1", "4.40.2", "4.57.1", "4.57.2", "4.57.4", "5.4.0", "5.5.0"]


@functools.cache
def _expected(version: str) -> Output | DriftError:
    try:
        return generated(version)
    except DriftError as exc:
        return exc


def _same(result, version: str) -> None:
    expected = _expected(version)
    if isinstance(expected, DriftError):
        assert isinstance(result, DriftError), version
        assert str(result) == str(expected)
        return
    assert isinstance(result, Output), (version, result)
    assert result.upstream == expected.upstream
    assert result.files == expected.files, version
    assert result.reports == expected.reports, version


@pytest.mark.network
@pytest.mark.parametrize("jobs", [1, 2])
def test_generate_many_is_generate_release_by_release(jobs):
    results = batch.generate_many(MIXED, jobs=jobs, reuse=False)
    assert list(results) == MIXED
    for version in MIXED:
        _same(results[version], version)
    assert results["4.40.0"].files != results["4.40.1"].files  # their notices differ


@pytest.mark.network
def test_a_drifting_group_gives_its_error_to_every_release(monkeypatch):
    drift = DriftError("drift: codemod attention, target GemmaAttention at modeling_gemma.py:1: no")
    monkeypatch.setattr(batch, "_generate", lambda up: drift if up.version == "5.4.0" else generate(up))
    results = batch.generate_many(["4.40.0", "5.4.0", "5.5.0", "4.40.1"], jobs=1, reuse=False)
    assert results["5.4.0"] is drift and results["5.5.0"] is drift
    assert isinstance(results["4.40.1"], Output)


@pytest.mark.network
def test_reuse_reads_and_fills_the_output_cache(tmp_path, monkeypatch):
    cache = OutputCache(tmp_path)
    monkeypatch.setattr(batch, "OutputCache", lambda: cache)
    first = batch.generate_many(["4.40.0"], jobs=1, reuse=True)  # runs, fills the cache
    assert list((tmp_path / "outputs").glob("*.json"))

    def must_not_run(up):
        raise AssertionError(f"series ran for {up.version}")

    monkeypatch.setattr(batch, "_generate", must_not_run)
    again = batch.generate_many(["4.40.0", "4.40.1"], jobs=1, reuse=True)  # 4.40.1 derived from cache
    assert again["4.40.0"].files == first["4.40.0"].files
    _same(again["4.40.1"], "4.40.1")
    with pytest.raises(AssertionError, match="series ran"):
        batch.generate_many(["4.40.0"], jobs=1, reuse=False)
