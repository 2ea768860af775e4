"""The command line, called in-process through ``main(argv) -> int``."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from releases import fetch

from patcher.cli import main
from patcher.series import engine

SPEC_ORDER = [
    "library-imports",
    "mask-helpers",
    "rotary-embedding",
    "attention",
    "decoder-layer-forward",
    "pretrained-model",
    "mask-generation",
    "strided-slice",
    "prepare-inputs-for-generation",
    "quantize",
    "sequence-lengths",
]


def test_list_json_has_the_eleven_codemods_in_spec_order(capsys):
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in data["codemods"]]
    assert names[:11] == SPEC_ORDER
    assert names[11:] == ["config-imports"]
    for entry in data["codemods"]:
        assert entry["description"] and entry["targets"]
    attention = data["codemods"][3]
    assert "GemmaAttention" in attention["targets"] and "GEMMA_ATTENTION_CLASSES" in attention["targets"]


def test_list_text(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(" 1. library-imports")


def test_help_explains_specs_and_exit_codes(capsys):
    assert main(["apply", "--help"]) == 0
    out = capsys.readouterr().out
    assert "4.40 (the newest pinned 4.40.x)" in out and "3 drift" in out


def test_no_command_is_usage(capsys):
    assert main([]) == 2


@pytest.mark.parametrize("spec", ["", "latest", "4", "4.40.x", "v4.40", "4.37", "5.0.0rc1", "nonsense"])
def test_bad_spec_is_one_line_exit_2_nothing_written(spec, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["apply", "--transformers", spec, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("patcher: ")
    assert not out.exists()


def test_unknown_codemod_is_usage(capsys, tmp_path):
    assert main(["apply", "--transformers", "4.40", "--codemod", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown codemod 'nope'" in capsys.readouterr().err


@pytest.mark.network
def test_apply_writes_the_three_files_and_reports_each_codemod(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["apply", "--transformers", "4.40", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "configuration_gemma_vacc.py",
        "modeling_gemma_vacc.py",
        "quantization_vacc.py",
    ]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 13
    for name, line in zip([*SPEC_ORDER, "config-imports"], lines, strict=False):
        assert re.match(rf"{name}\s+\S.*\+\d+ -\d+$", line), line
    assert "4.40.2" in (out / "modeling_gemma_vacc.py").read_text().split('"""')[0]


@pytest.mark.network
def test_apply_json(tmp_path, capsys):
    assert main(["apply", "--transformers", "4.40.2", "--out", str(tmp_path / "o"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["release"] == "4.40.2"
    assert [c["name"] for c in data["codemods"]] == [*SPEC_ORDER, "config-imports"]
    assert set(data["files"]) == {
        "modeling_gemma_vacc.py",
        "configuration_gemma_vacc.py",
        "quantization_vacc.py",
    }


@pytest.mark.network
def test_apply_refuses_a_directory_with_foreign_files(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "weights.bin").write_text("precious")
    assert main(["apply", "--transformers", "4.40", "--out", str(out)]) == 2
    assert "did not write" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["weights.bin"]
    assert main(["apply", "--transformers", "4.40", "--out", str(out), "--force"]) == 0


@pytest.mark.network
def test_apply_twice_replaces_its_own_files(tmp_path):
    out = tmp_path / "out"
    assert main(["apply", "--transformers", "4.39", "--out", str(out)]) == 0
    assert main(["apply", "--transformers", "4.40", "--out", str(out)]) == 0
    assert "transformers 4.40.2" in (out / "modeling_gemma_vacc.py").read_text()


@pytest.mark.network
def test_apply_subset_of_codemods(tmp_path, capsys):
    assert (
        main(
            [
                "apply",
                "--transformers",
                "4.40",
                "--codemod",
                "quantize",
                "--codemod",
                "library-imports",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[:-1]] == ["library-imports", "quantize"]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "modeling_gemma_vacc.py",
        "quantization_vacc.py",
    ]


@pytest.mark.network
def test_diff_labels_every_hunk_with_its_codemods(capsys):
    assert main(["diff", "--transformers", "4.40.2"]) == 0
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("@@")]
    assert headers
    known = {c.NAME for c in engine.load_series()}
    for header in headers:
        owners = re.search(r"@@ \[(.*)\]$", header).group(1).split(", ")
        assert set(owners) <= known, header
    assert any("[strided-slice]" in h for h in headers)


@pytest.mark.network
def test_diff_codemod_filter_and_stat(capsys, tmp_path):
    assert main(["diff", "--transformers", "4.40.2", "--codemod", "quantize"]) == 0
    out = capsys.readouterr().out
    assert "+    def quantize(self, weight_bit_width):" in out
    assert all("quantize" in line for line in out.splitlines() if line.startswith("@@"))
    assert main(["diff", "--transformers", "4.40.2", "--stat"]) == 0
    stat = capsys.readouterr().out
    rows = {
        m.group(1): (int(m.group(2)), m.group(3), int(m.group(4)), int(m.group(5)))
        for m in re.finditer(r"^(\S.*?)\s+(\d+) (hunks?)\s+\+(\d+)\s+-(\d+)$", stat, re.M)
    }
    assert all((n == 1) == (word == "hunk") for n, word, _, _ in rows.values())
    # the lines per codemod are apply's own counts
    assert main(["apply", "--transformers", "4.40.2", "--json", "--out", str(tmp_path / "o")]) == 0
    reports = json.loads(capsys.readouterr().out)["codemods"]
    for r in reports:
        if r["added"] or r["removed"]:
            assert rows[r["name"]][2:] == (r["added"], r["removed"]), r
    total = rows.pop("total (upstream -> output)")
    assert main(["diff", "--transformers", "4.40.2"]) == 0
    diff = capsys.readouterr().out
    headers = [x for x in diff.splitlines() if x.startswith("@@")]
    assert total[0] == len(headers)
    # a hunk two codemods share counts once for each of them
    assert sum(n for n, *_ in rows.values()) == sum(h.split("@@ [")[1].count(",") + 1 for h in headers)
    assert total[2] == len([x for x in diff.splitlines() if x.startswith("+") and not x.startswith("+++")])


@pytest.mark.network
def test_diff_applies_back_to_the_output(tmp_path, capsys):
    """The diff is a real unified diff: applying it to upstream gives the output."""
    up = fetch("4.40.2")
    assert main(["diff", "--transformers", "4.40.2"]) == 0
    patch = capsys.readouterr().out
    work = tmp_path / "w"
    work.mkdir()
    (work / "modeling_gemma.py").write_text(up.modeling)
    (work / "configuration_gemma.py").write_text(up.configuration)
    (work / "d.patch").write_text(patch)
    proc = subprocess.run(["patch", "-p1", "-i", "d.patch"], cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert main(["apply", "--transformers", "4.40.2", "--out", str(tmp_path / "o")]) == 0
    for name in ("modeling_gemma", "configuration_gemma"):
        assert (work / f"{name}.py").read_text() == (tmp_path / "o" / f"{name}_vacc.py").read_text()


def test_python_dash_m_patcher():
    proc = subprocess.run([sys.executable, "-m", "patcher", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("patcher ")


def test_internal_errors_are_one_line_without_debug(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("kaput")

    monkeypatch.setattr("patcher.cli.cmd_list", boom)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: kaput" in err and "Traceback" not in err


def test_diff_of_unpinned_release_is_exit_2(capsys):
    assert main(["diff", "--transformers", "4.99.0"]) == 2
    assert "not pinned" in capsys.readouterr().err


def test_out_dir_that_is_a_file_is_usage(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    code = main(["apply", "--transformers", "4.40", "--out", str(target)])
    assert code == 2
