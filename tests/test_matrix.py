"""``patcher matrix``: the release × codemod map of shapes and drift."""

from __future__ import annotations

import json

import pytest
from releases import PINNED, generated

from patcher.ci import matrix
from patcher.cli import main
from patcher.errors import DriftError
from patcher.series import engine
from patcher.series.contract import MODELING

SERIES = engine.load_series()
NAMES = [c.NAME for c in SERIES]


# -- pieces ----------------------------------------------------------------------------------
def test_ranges_are_runs_of_consecutive_releases():
    order = ["1.0.0", "1.0.1", "1.1.0", "1.2.0", "2.0.0"]
    assert matrix.ranges(["1.0.0", "1.0.1", "1.1.0", "2.0.0"], order) == "1.0.0–1.1.0, 2.0.0"
    assert matrix.ranges(["1.2.0"], order) == "1.2.0"
    assert matrix.ranges([], order) == ""


def _tiny() -> matrix.Matrix:
    def rel(version, sha, cells):
        return matrix.Release(version, sha, "c", cells)

    a = {"one": {"shapes": ["old", "extra"]}, "two": {"shapes": []}}
    b = {"one": {"drift": "drift: codemod one, target X at modeling_gemma.py:3: no"}, "two": {"shapes": []}}
    releases = [rel("1.0.0", "aaaa" * 16, a), rel("1.0.1", "aaaa" * 16, a), rel("1.1.0", "bbbb" * 16, b)]
    releases.append(rel("1.2.0", "aaaa" * 16, a))  # same file again, but not consecutive
    known = {"one": ["old", "new", "extra"], "two": ["only"]}
    return matrix.Matrix(releases, {"one": MODELING, "two": MODELING}, known, distinct=2)


def test_another_familys_matrix_says_the_toolchain_table_is_gemmas():
    tiny = _tiny()
    assert "toolchains_measured_for" not in tiny.as_dict()
    assert "), as measured:" in matrix.render_text(tiny)
    tiny.model = "mistral"
    assert tiny.as_dict()["toolchains_measured_for"] == "gemma" and tiny.as_dict()["model"] == "mistral"
    assert "as measured for Gemma (not measured for Mistral: " in matrix.render_text(tiny)


def test_text_groups_consecutive_releases_and_keys_each_shape():
    text = matrix.render_text(_tiny())
    lines = text.splitlines()
    assert lines[0].split() == ["release", "modeling", "1", "2"]
    assert lines[1].split() == ["1.0.0–1.0.1", "aaaaaaaa", "a+c", "-"]
    assert lines[2].split() == ["1.1.0", "bbbbbbbb", "DRIFT", "-"]
    assert lines[3].split() == ["1.2.0", "aaaaaaaa", "a+c", "-"]
    assert " 1 one (modeling_gemma.py)" in lines
    assert "     a old    1.0.0–1.0.1, 1.2.0 (3)" in lines
    assert "     b new    never met" in lines
    assert "       DRIFT  1.1.0 (1)" in lines
    assert lines[-1] == "4 releases, 2 distinct upstream files; 3 apply cleanly, 1 drift."


def test_json_lists_every_release_and_where_each_shape_is():
    data = _tiny().as_dict()
    assert data["series"] == ["one", "two"]
    assert [r["version"] for r in data["releases"]] == ["1.0.0", "1.0.1", "1.1.0", "1.2.0"]
    assert set(data["releases"][0]) == {"version", "modeling_sha256", "configuration_sha256", "codemods"}
    assert data["releases"][2]["codemods"]["one"] == {"drift": _tiny().releases[2].codemods["one"]["drift"]}
    assert data["codemods"]["one"] == {
        "file": MODELING,
        "known_shapes": ["old", "new", "extra"],
        "shapes": {"old": ["1.0.0", "1.0.1", "1.2.0"], "new": [], "extra": ["1.0.0", "1.0.1", "1.2.0"]},
        "drift": ["1.1.0"],
    }
    json.dumps(data)


def test_cli_prints_text_or_json(monkeypatch, capsys):
    monkeypatch.setattr(matrix, "build_matrix", lambda **kw: _tiny())
    assert main(["matrix"]) == 0
    captured = capsys.readouterr()
    assert captured.out == matrix.render_text(_tiny())
    assert "matrix of 4 releases" in captured.err
    assert main(["matrix", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == _tiny().as_dict()


# -- on the real pins ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real() -> matrix.Matrix:
    """The whole matrix (cached outputs reused: the test below checks that this is harmless)."""
    return matrix.build_matrix(jobs=2)


@pytest.mark.network
def test_every_release_and_codemod_has_shapes_or_a_drift_line(real):
    assert [r.version for r in real.releases] == PINNED
    assert real.distinct == 40
    for rel in real.releases:
        assert list(rel.codemods) == NAMES, rel.version
        for name, cell in rel.codemods.items():
            assert list(cell) in (["shapes"], ["drift"]), (rel.version, name, cell)
            if "drift" in cell:
                assert cell["drift"].startswith(f"drift: codemod {name}, target ")
                assert "\n" not in cell["drift"]
            else:
                assert set(cell["shapes"]) <= set(real.known[name])


@pytest.mark.network
def test_a_drifting_release_still_shows_the_other_codemods_shapes(real):
    for rel in real.releases:
        drifting = [n for n, c in rel.codemods.items() if "drift" in c]
        if drifting:
            assert len(drifting) < len(NAMES)
            assert any(c.get("shapes") for c in rel.codemods.values())


@pytest.mark.network
@pytest.mark.parametrize("version", ["4.40.2", PINNED[-1]])
def test_the_matrix_agrees_with_generate(real, version):
    rel = next(r for r in real.releases if r.version == version)
    try:
        output = generated(version)
    except DriftError as exc:
        lines = [c["drift"] for c in rel.codemods.values() if "drift" in c]
        assert lines == str(exc).splitlines()
        return
    assert rel.codemods == {r.codemod: {"shapes": list(r.shapes)} for r in output.reports}


@pytest.mark.network
def test_text_on_the_real_pins(real):
    text = matrix.render_text(real)
    rows = [line.split()[0] for line in text.splitlines()[1:] if line[:1].isdigit()]
    assert "4.40.0–4.40.1" in rows and "4.42.0–4.42.4" in rows and "4.57.2–4.57.3" in rows
    assert "4.40.0" not in rows and "4.40.1" not in rows
    for i, name in enumerate(NAMES, 1):
        assert f"{i:>2} {name} (" in text
    assert text.splitlines()[-1].startswith("115 releases, 40 distinct upstream files; ")


@pytest.mark.network
def test_reused_outputs_give_the_same_matrix(real):
    fresh = matrix.build_matrix(["4.40.0", "4.40.1", "4.40.2"], jobs=1, reuse=False)
    for rel in fresh.releases:
        assert rel.codemods == next(r for r in real.releases if r.version == rel.version).codemods


def test_text_and_json_state_what_each_toolchain_accepts():
    from patcher.verify import toolchains

    text = matrix.render_text(_tiny())
    assert "Verification toolchains (`patcher verify --toolchain NAME`), as measured:" in text
    for toolchain in toolchains.TOOLCHAINS.values():
        assert f"  {toolchain.name}: {toolchain.summary}" in text
        assert f"    accepts {toolchain.accepts or 'not measured'}" in text
    assert set(_tiny().as_dict()["toolchains"]) == {"current", "vacc"}
