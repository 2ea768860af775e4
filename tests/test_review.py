"""``patcher review --base REF`` on a throwaway git repository: a commit that changes one
codemod is reported with that codemod and the releases it affects; a commit that changes no
output is one line."""

from __future__ import annotations

import json
import subprocess

import pytest
from trees import QUANTIZE_EDIT, SUBSET, copy_tree, edit

from patcher import progress
from patcher.ci import review_render
from patcher.ci.review import review as run_review
from patcher.cli import main
from patcher.errors import DriftError
from patcher.series import regen

pytestmark = pytest.mark.network

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def git(repo, *args):
    import os

    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def commit_all(repo, message):
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture(scope="module")
def generating():
    """The releases of SUBSET the working tree's series generates (the rest drift)."""
    results = regen.regenerate(SUBSET)
    return [v for v in SUBSET if not isinstance(results[v], DriftError)]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A repository whose last commit changes the quantize codemod's template."""
    root = copy_tree(tmp_path_factory.mktemp("review") / "repo")
    git(root, "init", "-q")
    commit_all(root, "base")
    edit(root / "patches" / "quantize.py", *QUANTIZE_EDIT)
    commit_all(root, "quantize: say what the method is for")
    return root


class RecordingBars:
    """Stands in for ``progress.Bars``: records the progress lines each side reported."""

    seen: list[tuple[str, str, str]] = []

    def __init__(self, title: str) -> None:
        self.title = title

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def step(self, name: str, line: str) -> None:
        self.seen.append((self.title, name, line))


@pytest.fixture(scope="module")
def report(repo):
    """The review of the quantize commit, computed once for the format tests (and the
    progress it reported)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("patcher.ci.review.Bars", RecordingBars)
        mp.setenv("PATCHER_OUTPUT_CACHE", "0")  # every release run, so every step reported
        return run_review(repo, "HEAD~1")


def test_both_sides_report_progress_to_the_end(report):
    for title in ("regenerating", "attributing"):
        for side in ("HEAD~1", "working tree"):
            lines = [line for t, name, line in RecordingBars.seen if (t, name) == (title, side)]
            steps = [s for s in map(progress.parse_step, lines) if s]
            assert steps, (title, side, lines)
            done, total, _ = steps[-1]
            assert done == total, (title, side, lines[-1])


def test_bars_are_quiet_off_a_terminal(capsys):
    with progress.Bars("x", live=False) as bars:
        bars.step("side", "[1/2] 4.40.0: ok")
    assert capsys.readouterr() == ("", "")
    assert progress.parse_step("[12/40] 4.45.0 (+2 sharing its files): ok") == (
        12,
        40,
        "4.45.0 (+2 sharing its files): ok",
    )
    assert progress.parse_step("regenerating 115 releases") is None


def review(repo, capsys, *args):
    capsys.readouterr()
    code = main(["review", "--repo", str(repo), *args])
    return code, capsys.readouterr()


def test_markdown_names_the_codemod_and_the_releases(repo, generating, capsys):
    code, out = review(repo, capsys, "--base", "HEAD~1")
    assert code == 0, out.err
    text = out.out
    assert text.startswith("<!-- patcher-review -->\n### patcher review: `HEAD~1`")
    assert f"**{len(generating)} of {len(SUBSET)}** pinned releases change" in text
    assert "`patches/quantize.py` (quantize)" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "outputs differ" in line]
    assert len(rows) == 1  # every generating release changes alike: one group
    assert "`quantize`" in rows[0] and generating[0] in rows[0]
    assert "<details><summary>" in text and "```diff" in text
    assert "@@ [quantize]" in text
    assert (
        '+        """Replace the attention and MLP projections with per-channel int8 weight-only linears for '
        in text
    )


def test_json_groups_releases_and_attributes_every_hunk(report, generating):
    data = json.loads(review_render.render(report, "json"))
    assert data["changed_sources"] == ["patches/quantize.py"]
    assert [g["releases"] for g in data["groups"]] == [generating]
    group = data["groups"][0]
    assert group["status"] == "changed" and group["codemods"] == ["quantize"]
    hunks = [h for f in group["files"] for h in f["hunks"]]
    assert [f["name"] for f in group["files"]] == ["modeling_gemma_vacc.py"]
    assert hunks and all(h["codemods"] == ["quantize"] for h in hunks)


def test_github_annotations_point_at_the_codemod(report):
    lines = review_render.render(report, "github").splitlines()
    assert lines[0].startswith(
        "::notice file=patches/quantize.py,title=patcher review%3A quantize::transformers "
    )
    assert lines[-1].startswith("::notice title=patcher review::")


def test_markdown_stays_under_the_comment_limit(report, monkeypatch):
    full = review_render.render(report, "markdown")
    monkeypatch.setattr(review_render, "BUDGET", len(full) - 100)
    text = review_render.render(report, "markdown")
    assert len(text) < len(full) and "*Cut: " in text and "run `patcher review --base HEAD~1`" in text
    assert text.count("```") % 2 == 0 and text.rstrip().endswith("</details>")


def test_a_commit_changing_no_output_is_one_line(repo, capsys):
    edit(
        repo / "patches" / "quantize.py",
        "int8 weight-only projections.",
        "int8 weight-only projections (W8A16).",
    )
    commit_all(repo, "quantize: docstring only")
    try:
        code, out = review(repo, capsys, "--base", "HEAD~1")
        assert code == 0, out.err
        assert (
            out.out == f"patcher review: no output changes against HEAD~1 ({len(SUBSET)} pinned releases)\n"
        )
        code, out = review(repo, capsys, "--base", "HEAD~1", "--format", "json")
        assert len(out.out.splitlines()) == 1 and json.loads(out.out)["groups"] == []
    finally:
        git(repo, "reset", "-q", "--hard", "HEAD~1")


def test_the_same_tree_needs_no_generation(repo, capsys):
    code, out = review(repo, capsys, "--base", "HEAD")
    assert code == 0 and out.out.startswith("patcher review: no output changes against HEAD")


def test_unknown_ref_is_a_usage_error(repo, capsys):
    code, out = review(repo, capsys, "--base", "no-such-branch")
    assert code == 2
    assert (
        out.err.strip()
        == "patcher: unknown git ref 'no-such-branch'; fetch it first (e.g. `git fetch origin`)"
    )


def test_outside_a_repository(tmp_path, capsys):
    code, out = review(tmp_path, capsys, "--base", "HEAD")
    assert code == 2 and "not inside a git repository" in out.err
