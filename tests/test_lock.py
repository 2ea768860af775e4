"""The output lock: its file format, comparison, and ``patcher check``/``patcher lock``."""

from __future__ import annotations

import json

import pytest
from trees import QUANTIZE_EDIT, copy_tree, edit, run_patcher

from patcher.cli import main
from patcher.errors import DriftError
from patcher.series import lockfile
from patcher.series.lockfile import Difference, Entry, Lock, compare, release_spans

A = {"modeling_gemma_vacc.py": "a" * 64, "quantization_vacc.py": "e" * 64}
B = {"modeling_gemma_vacc.py": "b" * 64, "quantization_vacc.py": "e" * 64}


# -- the file --------------------------------------------------------------------------------------
def test_lock_text_is_deterministic_in_version_order(tmp_path):
    lock = Lock(
        {
            "4.100.0": Entry(drift=("attention",)),
            "4.99.1": Entry(outputs=A, codemods={"quantize": "1" * 16, "attention": "2" * 16}),
        },
        "d" * 64,
    )
    text = lock.to_json()
    assert text.index('"4.99.1"') < text.index('"4.100.0"')
    assert text.index('"attention"') < text.index('"quantize"')
    path = tmp_path / "lock.json"
    assert lockfile.write_lock(lock, path) is True
    assert lockfile.write_lock(lock, path) is False  # same text: not rewritten
    again = lockfile.read_lock(path)
    assert again.releases == lock.releases and again.to_json() == text


@pytest.mark.parametrize(
    "text", ["", "[]", '{"format": 2, "releases": {}}', '{"format": 1, "releases": {"4.38.0": {}}}']
)
def test_malformed_locks_are_usage_errors(tmp_path, text):
    path = tmp_path / "lock.json"
    path.write_text(text)
    with pytest.raises(lockfile.UsageError, match="not a valid lock"):
        lockfile.read_lock(path)


def test_missing_lock_says_how_to_make_one(tmp_path):
    with pytest.raises(lockfile.UsageError, match="patcher lock"):
        lockfile.read_lock(tmp_path / "lock.json")


def test_drifting_codemods_are_read_from_the_drift_message():
    error = DriftError(
        "drift: codemod mask-generation, target X at f:1: it does not know (known shapes: a, b)\n"
        "drift: codemod attention, target Y at f:2: found codemod z\n"
        "drift: codemod mask-generation, target Z at f:3: again"
    )
    assert lockfile.drifting_codemods(error) == ("mask-generation", "attention")


def test_release_spans_compress_consecutive_pinned_releases():
    pinned = ["4.38.0", "4.38.1", "4.38.2", "4.39.0", "4.40.0", "4.40.1"]
    assert release_spans(["4.38.0", "4.38.1", "4.38.2", "4.40.0"], pinned) == "4.38.0–4.38.2, 4.40.0"
    assert release_spans(["4.39.0"], pinned) == "4.39.0"


# -- comparing -------------------------------------------------------------------------------------
def test_compare_names_the_kind_of_difference_and_the_codemods():
    locked = Lock(
        {
            "1.0.0": Entry(outputs=A, codemods={"attention": "1", "quantize": "2"}),
            "1.1.0": Entry(drift=("attention", "mask-generation")),
            "1.2.0": Entry(outputs=A, codemods={"attention": "1"}),
            "1.3.0": Entry(drift=("attention",)),
            "1.4.0": Entry(outputs=A, codemods={}),
            "1.5.0": Entry(drift=("attention",)),
        }
    )
    current = {
        "1.0.0": Entry(outputs=B, codemods={"attention": "1", "quantize": "3"}),
        "1.1.0": Entry(outputs=A, codemods={}),
        "1.2.0": Entry(drift=("mask-generation",)),
        "1.3.0": Entry(drift=("attention", "quantize")),
        "1.5.0": Entry(drift=("attention",)),
        "1.6.0": Entry(outputs=A, codemods={}),
    }
    found = compare(locked, current, order=["attention", "mask-generation", "quantize"])
    assert found == [
        Difference("1.0.0", "outputs", ("modeling_gemma_vacc.py",), ("quantize",)),
        Difference("1.1.0", "now-generates", (), ("attention", "mask-generation")),
        Difference("1.2.0", "now-drifts", (), ("mask-generation",)),
        Difference("1.3.0", "drift", (), ("quantize",)),
        Difference("1.4.0", "unpinned"),
        Difference("1.6.0", "unlocked"),
    ]
    assert found[0].describe() == "modeling_gemma_vacc.py differs; codemods: quantize"


# -- the commands, on a throwaway tree ---------------------------------------------------------------
@pytest.mark.network
def test_lock_check_change_check_lock_check(tmp_path):
    """The cycle of issue 4: check passes on a fresh lock, a codemod change makes it exit 5
    naming the releases and the codemod, and lock brings it back to 0."""
    tree = copy_tree(tmp_path / "tree")
    done = run_patcher(tree, "lock")
    assert done.returncode == 0, done.stderr
    lock = json.loads((tree / "upstream_pins" / "lock.json").read_text())
    generating = [v for v, e in lock["releases"].items() if "outputs" in e]
    assert "4.40.2" in generating
    assert run_patcher(tree, "check").returncode == 0

    edit(tree / "patches" / "quantize.py", *QUANTIZE_EDIT)
    failed = run_patcher(tree, "check", "--diff")
    assert failed.returncode == 5
    lines = [
        line.removeprefix("patcher: ") for line in failed.stderr.splitlines() if line.startswith("patcher: ")
    ]
    assert lines[0].startswith(f"check: {len(generating)} of {len(lock['releases'])} pinned releases differ")
    spans = release_spans(generating, list(lock["releases"]))
    assert f"  {spans}: modeling_gemma_vacc.py differs; codemods: quantize" in lines
    headers = [line for line in failed.stdout.splitlines() if line.startswith("@@ ")]
    assert headers and all(line.endswith("@@ [quantize]") for line in headers)
    assert "per-channel int8 weight-only linears for the vacc compiler." in failed.stdout

    relocked = run_patcher(tree, "lock")
    assert relocked.returncode == 0 and "codemods: quantize" in relocked.stdout
    assert run_patcher(tree, "check").returncode == 0


@pytest.mark.network
def test_check_names_codemods_from_the_locked_contributions(tmp_path, monkeypatch, capsys):
    tree = copy_tree(tmp_path / "tree", ["4.39.3", "4.40.2"])
    monkeypatch.setenv("PATCHER_PINS_DIR", str(tree / "upstream_pins"))
    assert main(["lock"]) == 0
    path = tree / "upstream_pins" / "lock.json"
    data = json.loads(path.read_text())
    entry = data["releases"]["4.39.3"]
    entry["outputs"]["modeling_gemma_vacc.py"] = "0" * 64
    entry["codemods"]["attention"] = "0" * 16
    path.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["check"]) == 5
    err = capsys.readouterr().err
    assert "patcher: check: 1 of 2 pinned releases differ" in err
    assert "patcher:   4.39.3: modeling_gemma_vacc.py differs; codemods: attention" in err


@pytest.mark.network
def test_an_unlocked_release_is_a_difference(tmp_path, monkeypatch, capsys):
    tree = copy_tree(tmp_path / "tree", ["4.40.1", "4.40.2"])
    monkeypatch.setenv("PATCHER_PINS_DIR", str(tree / "upstream_pins"))
    assert main(["lock"]) == 0
    data = json.loads((tree / "upstream_pins" / "lock.json").read_text())
    del data["releases"]["4.40.1"]
    (tree / "upstream_pins" / "lock.json").write_text(json.dumps(data))
    assert main(["check"]) == 5
    assert "4.40.1: is pinned but not in the lock" in capsys.readouterr().err


@pytest.mark.network
def test_the_committed_lock_matches_the_codemods():
    """Whoever changes a codemod's output re-locks in the same commit (`patcher lock`)."""
    assert main(["check"]) == 0


@pytest.mark.network
def test_check_diff_on_a_cold_cache_regenerates_the_locked_text_from_git(tmp_path):
    """In CI the locked outputs are not cached: --diff regenerates them with the codemods of
    the commit that last wrote the lock."""
    import shutil
    import subprocess

    from patcher.upstream import pins
    from patcher.upstream.cache import BlobCache

    versions = ["4.40.1", "4.40.2"]
    tree = copy_tree(tmp_path / "tree", versions)

    def cold_cache():  # the upstream files only, as a CI cache of blobs would hold
        cache = tmp_path / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        for pin in pins.load_pins(tree / "upstream_pins").values():
            for sha in pin.files.values():
                BlobCache(cache).put(BlobCache().get(sha))
        return {"PATCHER_CACHE_DIR": str(cache)}

    assert run_patcher(tree, "lock", env=cold_cache()).returncode == 0
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "lock"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=tree, check=True
        )
    edit(tree / "patches" / "quantize.py", *QUANTIZE_EDIT)
    shown = run_patcher(tree, "check", "--diff", env=cold_cache())
    assert shown.returncode == 5, shown.stderr
    assert "--- a/modeling_gemma_vacc.py (locked, transformers 4.40.1)" in shown.stdout
    assert '-        """Replace the attention and MLP projections' in shown.stdout
    assert 'int8 weight-only linears (vacc)."""\n+' in shown.stdout
