"""Formatting-insensitive codemods (SPEC §5, issue 5), as a property of the real upstream files.

For one release of each distinct upstream ``modeling_gemma.py``, hypothesis draws
formatting-only rewrites of both upstream files (:class:`perturb.Perturbation`: re-wrapped
by ``ruff format`` at another line length with other quotes and trailing commas, comments
stripped or added, blank lines removed or added, statements joined with ``;``, one-line
blocks, redundant parentheses).  The series must meet the same shapes, never drift, and give
the same output up to formatting (same AST, docstring whitespace aside: see
``perturb.normalized_ast``; the notice, a comment, differs only by the upstream digest).

The profile is fixed (derandomized, a few examples per family) so that CI sees the same cases
every run; each family's cases differ (hypothesis keys the seed on the test id).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import tokenize

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from perturb import Perturbation, normalized_ast
from releases import DISTINCT_SUPPORTED, fetch, generated

from patcher.errors import DriftError
from patcher.series import engine
from patcher.series.contract import MODELING, Output
from patcher.series.generate import generate
from patcher.series.notice import notice
from patcher.upstream.fetch import Upstream

pytestmark = pytest.mark.network

SERIES = engine.load_series()
MODELING_NAMES = [c.NAME for c in SERIES if c.FILE == MODELING]
PROFILE = settings(
    derandomize=True,
    max_examples=2,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

perturbations = st.builds(
    Perturbation,
    line_length=st.one_of(st.none(), st.sampled_from([40, 60, 79, 88, 100, 120, 160, 240])),
    quotes=st.sampled_from(["double", "single"]),
    magic_trailing_comma=st.booleans(),
    strip_comments=st.booleans(),
    comment_rate=st.sampled_from([0.0, 0.1, 0.3, 0.7]),
    blank_lines=st.sampled_from(["keep", "none", "more"]),
    join_rate=st.sampled_from([0.0, 0.2, 0.5, 1.0]),
    suite_rate=st.sampled_from([0.0, 0.5, 1.0]),
    paren_rate=st.sampled_from([0.0, 0.2, 1.0]),
    seed=st.integers(0, 2**16),
)
#: Run for every family besides the drawn ones: a pure re-wrap, the comments and blank lines
#: gone, and everything at once.
RUFF_ONLY = Perturbation(line_length=79, quotes="single", magic_trailing_comma=False)
BARE = Perturbation(strip_comments=True, blank_lines="none")
EVERYTHING = Perturbation(
    line_length=100,
    comment_rate=0.3,
    blank_lines="more",
    join_rate=1.0,
    suite_rate=1.0,
    paren_rate=0.3,
    seed=1,
)


#: ``normalized_ast`` of the texts every example of a release compares against (its upstream
#: files and its outputs), computed once per text.
normalized_once = functools.lru_cache(maxsize=512)(normalized_ast)


def perturbed(up: Upstream, p: Perturbation) -> Upstream:
    """``up`` with both files rewritten by ``p`` (and their digests, as a local file would have)."""
    modeling, configuration = p.apply(up.modeling), p.apply(up.configuration)
    return dataclasses.replace(
        up,
        modeling=modeling,
        configuration=configuration,
        modeling_sha256=hashlib.sha256(modeling.encode()).hexdigest(),
        configuration_sha256=hashlib.sha256(configuration.encode()).hexdigest(),
    )


#: Shapes recognised in comments (upstream's modular banner): a perturbation that strips
#: comments takes them away with the comments, and rightly leaves nothing to drop.
COMMENT_SHAPES = {"modular-banner"}


def shapes(output: Output, p: Perturbation) -> list[tuple[str, tuple[str, ...]]]:
    """Each codemod's shapes, less those seen in comments when ``p`` strips the comments."""
    unseen = COMMENT_SHAPES if p.strip_comments else set()
    return [(r.codemod, tuple(s for s in r.shapes if s not in unseen)) for r in output.reports]


def assert_same_up_to_formatting(version: str, p: Perturbation) -> None:
    up, expected = fetch(version), generated(version)
    changed = perturbed(up, p)
    for before, after in ((up.modeling, changed.modeling), (up.configuration, changed.configuration)):
        assert normalized_ast(after) == normalized_once(before), f"{p} is not formatting-only"
    try:
        output = generate(changed, SERIES)
    except DriftError as exc:
        pytest.fail(f"drift on {version}'s upstream reformatted by {p}:\n{exc}")
    assert shapes(output, p) == shapes(expected, p)
    assert output.files.keys() == expected.files.keys()
    for name, text in expected.files.items():
        assert normalized_ast(output.files[name]) == normalized_once(text), (
            f"{name} of {version} differs under {p}"
        )
    header = notice(changed, MODELING, changed.modeling_sha256, MODELING_NAMES)
    assert header in output.files["modeling_gemma_vacc.py"]


@pytest.mark.parametrize("version", DISTINCT_SUPPORTED)
@PROFILE
@given(p=perturbations)
@example(p=RUFF_ONLY)
@example(p=BARE)
@example(p=EVERYTHING)
def test_reformatted_upstream_gives_the_same_output(version: str, p: Perturbation) -> None:
    assert_same_up_to_formatting(version, p)


@pytest.mark.parametrize("version", DISTINCT_SUPPORTED[::5])
@settings(PROFILE, max_examples=1)
@given(p=perturbations)
@example(p=EVERYTHING)
def test_series_on_its_own_reformatted_output_changes_nothing(version: str, p: Perturbation) -> None:
    """Idempotence does not depend on formatting either: the output, reformatted, comes back
    from the series as the same code."""
    output = generated(version).files["modeling_gemma_vacc.py"]
    up = fetch(version)
    again = engine.run(
        p.apply(output), SERIES, notice=notice(up, MODELING, up.modeling_sha256, MODELING_NAMES)
    )
    assert normalized_ast(again.code) == normalized_once(output)
    assert all(r.shapes for r in again.reports)


def test_the_perturbations_change_the_layout() -> None:
    """The rewrites used above really rewrite (a no-op perturbation would prove nothing)."""
    source = fetch(DISTINCT_SUPPORTED[0]).modeling
    for p in (RUFF_ONLY, BARE, EVERYTHING):
        text = p.apply(source)
        assert text != source
        assert normalized_ast(text) == normalized_ast(source)
    assert "; " in EVERYTHING.apply(source) and "# perturbed" in EVERYTHING.apply(source)
    bare = BARE.apply(source)
    tokens = tokenize.generate_tokens(io.StringIO(bare).readline)
    assert not [t for t in tokens if t.type == tokenize.COMMENT]
    assert "\n\n" not in bare.split('"""')[0]


@pytest.mark.verify
def test_output_of_a_reformatted_upstream_verifies(tmp_path) -> None:
    """The whole chain on a reformatted copy: `patcher apply --upstream` (unpinned), then the
    SPEC §6 checks in the release's own environment against upstream's Gemma."""
    from patcher.cli import main
    from patcher.verify import release

    version = "4.40.2"
    up = fetch(version)
    p = Perturbation(line_length=88, quotes="single", comment_rate=0.3, join_rate=0.5, suite_rate=0.5, seed=7)
    (tmp_path / "modeling_gemma.py").write_text(p.apply(up.modeling))
    (tmp_path / "configuration_gemma.py").write_text(p.apply(up.configuration))
    out = tmp_path / "out"
    argv = ["apply", "--upstream", str(tmp_path / "modeling_gemma.py"), "--out", str(out)]
    assert main(argv) == 0
    assert "UNPINNED" in (out / "modeling_gemma_vacc.py").read_text()
    report = release.verify_output(version, out)
    assert not report.crashed, report.stderr_tail
    assert report.ok, release.render_table(report)
