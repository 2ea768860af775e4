"""Hostile files, shared caches, signals and encodings (issue 9), through the command line:
141 cases (with the 110 of ``test_errors.py``, 251).

One section per class of failure the issue names: values read from repository files and
caches used as paths (1), files patcher did not write (2), permissions (3), concurrency and
interruption (4), resource limits (5), git edge cases (6), text encodings (7), and the small
items (9), and ``--model``: unknown family names and another family's files (10).  (Class 8,
the dependency floors, is the lowest-direct tier of ``.ci/run``, checked in
``test_ci_files.py``.)  A refusal is asserted as in ``test_errors.py``: the documented exit
code, one ``patcher:`` line naming the problem and the fix, no traceback, and the tree as it
was; a case that must work is asserted by what it writes.

Everything runs against a private cache and pins directory.  The real 4.40.2 upstream files
(from the user cache, never changed) are copied into it where a case needs a real output.
Directories are made read-only with ``chattr +i`` when the tests run as root (root ignores
file modes), with ``chmod`` otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from fake_index import FakePip, pin_for, wheel_bytes
from releases import fetch
from test_errors import refused, tree
from trees import copy_tree

from patcher import console
from patcher.cli import main
from patcher.deploy import atomicdir, write
from patcher.series.contract import NOTICE_MARK, OUTPUT_FILES
from patcher.series.lockfile import lock_path
from patcher.series.reuse import output_key
from patcher.upstream import pypi
from patcher.upstream.cache import BlobCache
from patcher.upstream.fetch import Upstream
from patcher.upstream.pins import load_pins

ROOT = Path(__file__).resolve().parent.parent
VERSION = "4.40.2"
OTHER = "4.38.0"  # another upstream file, for swapped records


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real() -> dict[str, Upstream]:
    """Real upstream files from the user cache (read before any test points the cache elsewhere)."""
    return {v: fetch(v) for v in (VERSION, OTHER)}


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache and pins directory (4.40.2 and 4.38.0 pinned), pip offline, and a
    working directory."""
    monkeypatch.setenv("PATCHER_CACHE_DIR", str(tmp_path / "cache"))
    pins = tmp_path / "pins"
    pins.mkdir()
    for version in (VERSION, OTHER):
        shutil.copy(ROOT / "upstream_pins" / f"{version}.json", pins)
    monkeypatch.setenv("PATCHER_PINS_DIR", str(pins))
    monkeypatch.setattr(pypi, "run_pip", FakePip(offline=True))
    directory = tmp_path / "work"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


@pytest.fixture
def cached(work: Path, tmp_path: Path, real: dict[str, Upstream]) -> BlobCache:
    """The private cache holding the real upstream files of both pinned releases."""
    blobs = BlobCache(tmp_path / "cache")
    for up in real.values():
        blobs.put(up.modeling.encode())
        blobs.put(up.configuration.encode())
    return blobs


@contextmanager
def read_only(*paths: Path):
    """Make directories read-only for the length of the block, even for root."""
    dirs = [d for p in paths for d in [p, *p.rglob("*")] if d.is_dir() and not d.is_symlink()]
    if os.geteuid() == 0:
        proc = subprocess.run(["chattr", "+i", *map(str, dirs)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot make a directory read-only as root here: {proc.stderr.strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", *map(str, dirs)], check=True)
    else:
        modes = {d: d.stat().st_mode for d in dirs}
        for d in dirs:
            d.chmod(0o555)
        try:
            yield
        finally:
            for d, mode in modes.items():
                d.chmod(mode)


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    """``python -m patcher ARGS`` in a fresh process with this environment (plus ``env``)."""
    environ = {**os.environ, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "patcher", *args],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        **kw,
    )


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".*") if ".new-" in p.name or ".old-" in p.name)


# == 1. values from repository files and caches ==================================================
def write_lock(releases: dict, work: Path) -> Path:
    path = lock_path()
    path.write_text(json.dumps({"format": 1, "series_digest": "", "releases": releases}))
    return path


GOOD_ENTRY = {
    "outputs": {name: "a" * 64 for name in OUTPUT_FILES},
    "codemods": {"attention": "b" * 16},
}
HOSTILE_LOCK_ENTRIES = {
    # case: (version, entry, fragment naming the entry)
    "digest-traversal": (
        VERSION,
        {**GOOD_ENTRY, "outputs": {"modeling_gemma_vacc.py": "../../victim"}},
        "has '../../victim' for modeling_gemma_vacc.py, not a sha256",
    ),
    "digest-absolute": (
        VERSION,
        {**GOOD_ENTRY, "outputs": {"modeling_gemma_vacc.py": "{victim}"}},
        "for modeling_gemma_vacc.py, not a sha256",
    ),
    "digest-uppercase": (
        VERSION,
        {**GOOD_ENTRY, "outputs": {"modeling_gemma_vacc.py": "A" * 64}},
        "not a sha256",
    ),
    "digest-not-a-string": (
        VERSION,
        {**GOOD_ENTRY, "outputs": {"modeling_gemma_vacc.py": 7}},
        "not a sha256",
    ),
    "output-name-traversal": (
        VERSION,
        {**GOOD_ENTRY, "outputs": {"../../evil.py": "a" * 64}},
        "names an output '../../evil.py' patcher does not write",
    ),
    "codemod-digest": (
        VERSION,
        {**GOOD_ENTRY, "codemods": {"attention": "../x"}},
        "for codemod attention, not a 16-digit hex digest",
    ),
    "codemod-name": (
        VERSION,
        {**GOOD_ENTRY, "codemods": {"../x": "b" * 16}},
        "names a codemod '../x'",
    ),
    "drift-not-names": (
        VERSION,
        {"drift": ["attention", "../x"]},
        "drift that is not a list of codemod names",
    ),
    "version-traversal": ("../../victim", GOOD_ENTRY, "entry '../../victim' is not a release version"),
    "version-post": ("4.40.2.post1", GOOD_ENTRY, "entry '4.40.2.post1' is not a release version"),
    "version-before-gemma": ("4.30.0", GOOD_ENTRY, "entry '4.30.0' is not a release version"),
    "extra-keys": (VERSION, {**GOOD_ENTRY, "drift": []}, "has neither outputs and codemods nor drift"),
}


@pytest.mark.parametrize("case", HOSTILE_LOCK_ENTRIES)
def test_hostile_lock_entry_is_refused_and_deletes_nothing(case: str, work: Path, tmp_path: Path, capsys):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    version, entry, fragment = HOSTILE_LOCK_ENTRIES[case]
    entry = json.loads(json.dumps(entry).replace("{victim}", str(victim)))
    path = write_lock({version: entry}, work)
    before = tree(tmp_path)
    code = main(["check", "--diff"])
    refused(capsys, code, 2, f"{path} is not a valid lock", fragment, "restore it from git")
    assert victim.read_text() == "precious"
    assert tree(tmp_path) == before


def test_deeply_nested_lock_is_refused(work: Path, tmp_path: Path, capsys) -> None:
    lock_path().write_text("[" * 100_000 + "]" * 100_000)
    before = tree(tmp_path)
    refused(capsys, main(["check"]), 2, "is not a valid lock (nested too deeply)")
    assert tree(tmp_path) == before


HOSTILE_PINS = {
    "post-release": ("4.40.2.post1", {}, "4.40.2.post1"),
    "wheel-path": (VERSION, {"wheel": "../../transformers-4.40.2-py3-none-any.whl"}, "is not the file name"),
    "wheel-other-release": (
        VERSION,
        {"wheel": "transformers-4.38.0-py3-none-any.whl"},
        "is not the file name",
    ),
    "digest-traversal": (
        VERSION,
        {"files": {"modeling_gemma.py": "../../victim", "configuration_gemma.py": "a" * 64}},
        "'../../victim' is not a lowercase hex sha256",
    ),
    "nested": (VERSION, "deep", "nested too deeply"),
}


@pytest.mark.parametrize("case", HOSTILE_PINS)
def test_hostile_pin_is_refused(case: str, work: Path, tmp_path: Path, capsys) -> None:
    version, change, fragment = HOSTILE_PINS[case]
    data = json.loads((ROOT / "upstream_pins" / f"{VERSION}.json").read_text())
    path = tmp_path / "pins" / f"{version}.json"
    if change == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
    else:
        path.write_text(json.dumps({**data, "version": version, **change}))
    before = tree(tmp_path)
    code = main(["apply", "--transformers", VERSION, "--out", "out"])
    refused(capsys, code, 2, f"pin file {path} is invalid", fragment, "restore it from git")
    assert tree(tmp_path) == before


def test_blob_names_must_be_digests(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("x")
    blobs = BlobCache(tmp_path / "cache")
    for bad in ("../../victim", str(victim), "A" * 64, "a" * 63, "", "a" * 64 + "/.."):
        with pytest.raises(ValueError, match="is not a sha256 digest"):
            blobs.get(bad)
    assert victim.read_text() == "x"


def records(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "outputs"


@pytest.mark.network
def test_swapped_output_cache_record_is_detected_by_its_key(
    cached: BlobCache, work: Path, tmp_path: Path, real: dict[str, Upstream]
) -> None:
    """Another release's record copied over this one's is not reused: the series runs again."""
    assert main(["apply", "--transformers", VERSION, "--out", "a"]) == 0
    assert main(["apply", "--transformers", OTHER, "--out", "b"]) == 0
    mine = records(tmp_path) / f"{output_key(real[VERSION], None)}.json"
    other = records(tmp_path) / f"{output_key(real[OTHER], None)}.json"
    shutil.copy(other, mine)
    assert main(["apply", "--transformers", VERSION, "--out", "c"]) == 0
    assert tree(work / "c") == tree(work / "a")
    assert json.loads(mine.read_text())["key"] == output_key(real[VERSION], None)  # rewritten


@pytest.mark.network
@pytest.mark.parametrize(
    "change",
    [
        lambda r, victim: {**r, "files": {**r["files"], "../../evil.py": r["files"]["quantization_vacc.py"]}},
        lambda r, victim: {**r, "files": {**r["files"], "modeling_gemma_vacc.py": "../../victim"}},
        lambda r, victim: {**r, "files": {**r["files"], "modeling_gemma_vacc.py": str(victim)}},
        lambda r, victim: {k: v for k, v in r.items() if k != "key"},
        lambda r, victim: "[" * 100_000,
    ],
    ids=["unknown-file-name", "digest-traversal", "digest-absolute", "no-key", "nested"],
)
def test_hostile_output_cache_record_is_not_used(
    change, cached: BlobCache, work: Path, tmp_path: Path, real: dict[str, Upstream]
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    assert main(["apply", "--transformers", VERSION, "--out", "a"]) == 0
    record = records(tmp_path) / f"{output_key(real[VERSION], None)}.json"
    changed = change(json.loads(record.read_text()), victim)
    record.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    assert main(["apply", "--transformers", VERSION, "--out", "b"]) == 0
    assert tree(work / "b") == tree(work / "a")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "evil.py").exists() and not (work / "evil.py").exists()


# == 2. files patcher did not write ===============================================================
@pytest.mark.network
@pytest.mark.parametrize(
    "name, content",
    [
        ("quantization_vacc.py", b"# my own quantizer\n"),
        ("quantization_vacc.py", b'"""Weight-only int8 quantization (W8A16)"""\n'),  # an old-looking copy
        ("__pycache__", None),  # a file, not Python's cache directory
    ],
    ids=["foreign-companion", "edited-companion", "pycache-file"],
)
def test_foreign_file_among_patchers_names_is_refused(name, content, cached, work: Path, capsys) -> None:
    assert main(["apply", "--transformers", VERSION, "--out", "out"]) == 0
    (work / "out" / name).write_bytes(content if content is not None else b"not a directory")
    before = tree(work)
    capsys.readouterr()
    code = main(["apply", "--transformers", VERSION, "--out", "out"])
    refused(capsys, code, 2, "out holds files patcher did not write", name, "--force")
    assert tree(work) == before


@pytest.mark.network
def test_pycache_is_kept_when_the_output_is_replaced(cached, work: Path) -> None:
    assert main(["apply", "--transformers", VERSION, "--out", "out"]) == 0
    cache = work / "out" / "__pycache__"
    cache.mkdir()
    (cache / "modeling_gemma_vacc.cpython-311.pyc").write_bytes(b"compiled")
    (cache / "notes.txt").write_bytes(b"somebody's")
    assert main(["apply", "--transformers", OTHER, "--out", "out"]) == 0
    assert "transformers 4.38.0" in (work / "out" / "modeling_gemma_vacc.py").read_text()
    assert tree(cache) == {"modeling_gemma_vacc.cpython-311.pyc": b"compiled", "notes.txt": b"somebody's"}
    assert leftovers(work) == []


@pytest.mark.network
def test_every_written_file_carries_the_notice(cached, work: Path) -> None:
    assert main(["apply", "--transformers", VERSION, "--out", "out"]) == 0
    for path in (work / "out").iterdir():
        assert NOTICE_MARK in path.read_text()[:4096], path.name


@pytest.mark.network
@pytest.mark.parametrize("selection", [["attention"], ["quantize", "sequence-lengths"], ["config-imports"]])
def test_codemod_subset_outputs_are_recognised_as_patchers_own(selection, cached, work: Path) -> None:
    argv = ["apply", "--transformers", VERSION, "--out", "out"]
    for name in selection:
        argv += ["--codemod", name]
    assert main(argv) == 0
    written = sorted(p.name for p in (work / "out").iterdir())
    for name in written:
        head = (work / "out" / name).read_text()[:4096]
        assert NOTICE_MARK in head, name
        if name != "quantization_vacc.py":
            command = f"patcher apply --transformers {VERSION}" + "".join(
                f" --codemod {n}" for n in selection
            )
            assert f"# Regenerate: {command}\n" in head
    assert main(argv) == 0  # a second run recognises the first one's files
    assert main(["apply", "--transformers", VERSION, "--out", "out"]) == 0  # so does the whole series
    assert sorted(p.name for p in (work / "out").iterdir()) == sorted(OUTPUT_FILES)


@pytest.mark.network
def test_legacy_companion_is_recognised(cached, work: Path) -> None:
    """A quantization_vacc.py of an earlier patcher (before the notice) is patcher's own."""
    assert main(["apply", "--transformers", VERSION, "--out", "out"]) == 0
    companion = (work / "out" / "quantization_vacc.py").read_text()
    legacy = companion[companion.index('"""') :]  # the companion as it was shipped before
    if hashlib.sha256(legacy.encode()).hexdigest() not in write.LEGACY_COMPANIONS:
        pytest.fail("the companion's body changed: add the digest of the old one to LEGACY_COMPANIONS")
    (work / "out" / "quantization_vacc.py").write_text(legacy)
    assert main(["apply", "--transformers", VERSION, "--out", "out"]) == 0
    assert (work / "out" / "quantization_vacc.py").read_text() == companion


# == 3. permissions ===============================================================================
@pytest.mark.network
def test_read_only_cache_holding_everything(cached, work: Path, tmp_path: Path) -> None:
    assert main(["apply", "--transformers", VERSION, "--out", "first"]) == 0
    before = tree(tmp_path / "cache")
    with read_only(tmp_path / "cache"):
        assert main(["apply", "--transformers", VERSION, "--out", "second"]) == 0
    assert tree(work / "second") == tree(work / "first")
    assert tree(tmp_path / "cache") == before


@pytest.mark.network
def test_read_only_cache_holding_only_the_upstream_files(cached, work: Path, tmp_path: Path) -> None:
    """The series runs and its output is written; only the cache record cannot be."""
    before = tree(tmp_path / "cache")
    with read_only(tmp_path / "cache"):
        assert main(["apply", "--transformers", VERSION, "--out", "out"]) == 0
    assert NOTICE_MARK in (work / "out" / "modeling_gemma_vacc.py").read_text()
    assert tree(tmp_path / "cache") == before


def test_read_only_cache_with_a_damaged_entry_and_no_network(work: Path, tmp_path: Path, capsys) -> None:
    pin = load_pins()[VERSION]
    blobs = BlobCache(tmp_path / "cache")
    blobs.blobs.mkdir(parents=True)
    blobs.path(pin.files["modeling_gemma.py"]).write_bytes(b"junk")
    before = tree(tmp_path)
    with read_only(tmp_path / "cache"):
        code = main(["apply", "--transformers", VERSION, "--out", "out"])
    refused(capsys, code, 4, "cannot download transformers==4.40.2 (no network?)")
    assert tree(tmp_path) == before


@pytest.mark.network
def test_read_only_out_is_refused(cached, work: Path, capsys) -> None:
    assert main(["apply", "--transformers", VERSION, "--out", "out"]) == 0
    (work / "out").chmod(0o555)
    try:
        before = tree(work)
        capsys.readouterr()
        code = main(["apply", "--transformers", OTHER, "--out", "out"])
        refused(capsys, code, 2, "--out out is read-only", "chmod u+w", "choose another --out")
        assert tree(work) == before
        assert leftovers(work) == []
    finally:
        (work / "out").chmod(0o755)


@pytest.mark.network
def test_lock_into_unwritable_pins_directory(cached, work: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "pins" / f"{OTHER}.json").unlink()  # one release: a quick lock
    before = tree(tmp_path / "pins")
    with read_only(tmp_path / "pins"):
        code = main(["lock"])
    refused(capsys, code, 2, "cannot write", "lock.json", "writable", "PATCHER_PINS_DIR")
    assert tree(tmp_path / "pins") == before


def test_lock_over_a_directory_named_lock_json(work: Path, tmp_path: Path, capsys) -> None:
    """A lock that cannot be replaced (a directory in its place) is the same one-line error."""
    for pin in (tmp_path / "pins").glob("*.json"):
        pin.unlink()
    (tmp_path / "pins" / "lock.json").mkdir()
    before = tree(tmp_path / "pins")
    refused(capsys, main(["lock"]), 2, "cannot write", "lock.json", "PATCHER_PINS_DIR")
    assert tree(tmp_path / "pins") == before


def test_pin_into_unwritable_pins_directory_downloads_nothing(
    work: Path, tmp_path: Path, monkeypatch, capsys
):
    index = FakePip({"4.41.0": wheel_bytes(tmp_path / "w", "4.41.0")})
    monkeypatch.setattr(pypi, "run_pip", index)
    monkeypatch.setattr("patcher.upstream.pins._refuse_yanked", lambda version: None)
    before = tree(tmp_path / "pins")
    with read_only(tmp_path / "pins"):
        code = main(["pin", "4.41.0"])
    refused(capsys, code, 2, "cannot write", "writable", "PATCHER_PINS_DIR")
    assert index.calls == []
    assert tree(tmp_path / "pins") == before


# == 4. concurrency and interruption ==============================================================
def test_concurrent_creation_of_the_same_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another run creates --out between this run's check and its rename: this run replaces
    that output like any old one, instead of failing with "Directory not empty"."""
    target = tmp_path / "a" / "out"
    theirs = {name: f"{NOTICE_MARK} theirs\n" for name in OUTPUT_FILES}
    ours = {name: f"{NOTICE_MARK} ours\n" for name in OUTPUT_FILES}
    rename = os.rename

    def racing_rename(src, dst):
        if Path(dst) == target and not target.exists():
            target.mkdir()
            for name, text in theirs.items():
                (target / name).write_text(text)
        return rename(src, dst)

    monkeypatch.setattr(atomicdir.os, "rename", racing_rename)
    write.write_output(ours, target)
    assert {p.name: p.read_text() for p in target.iterdir()} == ours
    assert leftovers(tmp_path) == []


@pytest.mark.network
def test_concurrent_applies_into_the_same_absent_out(cached, work: Path) -> None:
    assert main(["apply", "--transformers", VERSION, "--out", "warm"]) == 0  # fills the output cache
    expected = tree(work / "warm")
    for round_ in range(2):
        procs = [
            run_cli("apply", "--transformers", VERSION, "--out", f"shared{round_}/x/out", cwd=work)
            for _ in range(4)
        ]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
        assert [code for code, _ in results] == [0] * 4, results
        assert tree(work / f"shared{round_}" / "x" / "out") == expected
    assert leftovers(work) == []


@pytest.fixture
def restore_sigint(monkeypatch: pytest.MonkeyPatch):
    """Keep this process alive and interruptible: ``exit_now`` raises instead of ending it."""

    def exit_now(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(console, "exit_now", exit_now)
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


class _Interrupting:
    """An import hook standing for Ctrl-C while the command modules load."""

    def find_spec(self, name, path=None, target=None):
        if name == "patcher.cli":
            raise KeyboardInterrupt
        return None


def test_ctrl_c_while_loading_is_one_line_and_130(monkeypatch, capsys, restore_sigint) -> None:
    monkeypatch.delitem(sys.modules, "patcher.cli")
    monkeypatch.setattr(sys, "meta_path", [_Interrupting(), *sys.meta_path])
    monkeypatch.setattr(sys, "argv", ["patcher", "list"])
    with pytest.raises(SystemExit) as info:
        console.entry()
    assert info.value.code == 130
    assert capsys.readouterr().err == "patcher: interrupted\n"


def test_ctrl_c_during_a_command_is_one_line_and_130(monkeypatch, capsys, restore_sigint) -> None:
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("patcher.cli.cmd_list", interrupted)
    monkeypatch.setattr(sys, "argv", ["patcher", "list"])
    with pytest.raises(SystemExit) as info:
        console.entry()
    assert info.value.code == 130
    assert capsys.readouterr().err == "patcher: interrupted\n"


SIX = ["4.38.0", "4.39.3", "4.40.2", "4.48.0", "5.0.0", "5.24.0"]  # distinct upstream files


@pytest.fixture(scope="module")
def six() -> dict[str, Upstream]:
    """Six distinct upstream files, from the user cache."""
    return {v: fetch(v) for v in SIX}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.network
@pytest.mark.parametrize("when", ["start-up", "pool-start", "working"])
def test_ctrl_c_during_check_fresh_stops_within_a_second(when: str, six, work: Path, tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group, as from a terminal: while the modules load,
    as the worker pool starts, and with both workers busy.  The queued jobs (six distinct
    upstream files, seconds each) are not waited for, and no worker outlives the command."""
    pins = tmp_path / "many-pins"
    pins.mkdir()
    for version in SIX:
        shutil.copy(ROOT / "upstream_pins" / f"{version}.json", pins)
    blobs = BlobCache(tmp_path / "cache")
    for up in six.values():
        blobs.put(up.modeling.encode())
        blobs.put(up.configuration.encode())
    (pins / "lock.json").write_text(json.dumps({"format": 1, "releases": {}}))
    env = {"PATCHER_PINS_DIR": str(pins), "PATCHER_CACHE_DIR": str(tmp_path / "cache")}
    # as from a terminal: Ctrl-C's default disposition, whatever this test process inherited
    # (a Python started with SIGINT ignored keeps ignoring it and never sees KeyboardInterrupt)
    proc = run_cli(
        "check",
        "--fresh",
        "--jobs",
        "2",
        cwd=work,
        env=env,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    line = ""
    if when == "start-up":
        time.sleep(0.3)
    else:
        line = proc.stderr.readline()
        assert line.startswith("regenerating 6 releases"), line + proc.stderr.read()
        time.sleep(0.1 if when == "pool-start" else 1.5)
    assert proc.poll() is None
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait(timeout=30)
    took = time.monotonic() - started
    err = line + proc.stderr.read()
    assert code == 130, err
    assert took < 1.5, f"exited {took:.1f}s after Ctrl-C"
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("patcher: ")] == ["patcher: interrupted"]
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("worker processes were left running")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.network
def test_install_recovers_what_a_killed_install_left(cached, work: Path) -> None:
    ckpt = work / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"model_type": "gemma"}\n')
    pid = dead_pid()
    dead = [
        f".modeling_gemma_vacc.py.new-{pid}-0a1b2c3d",
        f".config.json.new-{pid}-00ff00ff",
        ".quantization_vacc.py.k3j_9x0a.tmp",  # as patcher named them before the PID was in
    ]
    alive = [f".configuration_gemma_vacc.py.new-{os.getpid()}-12345678", ".weights.bin.new-1-00000000"]
    for name in dead + alive:
        (ckpt / name).write_text("staged")
    old = time.time() - 3600
    os.utime(ckpt / dead[2], (old, old))
    assert main(["install", "--transformers", VERSION, "--weights", "ckpt"]) == 0
    names = {p.name for p in ckpt.iterdir()}
    assert not names & set(dead)
    assert set(alive) <= names  # a running install's files, and files of other names, stay


def test_out_recovers_a_read_only_leftover(tmp_path: Path) -> None:
    target = tmp_path / "out"
    staged = tmp_path / f".out.new-{dead_pid()}-0a1b2c3d"
    staged.mkdir()
    (staged / "modeling_gemma_vacc.py").write_text("half")
    staged.chmod(0o555)
    write.write_output({name: f"{NOTICE_MARK}\n" for name in OUTPUT_FILES}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# == 5. resource limits ===========================================================================
def test_upstream_over_the_size_limit_is_refused_quickly(work: Path, capsys) -> None:
    (work / "modeling_gemma.py").write_bytes(b"x = 1\n" * 200_000)  # 1.2 MB of valid Python
    (work / "configuration_gemma.py").write_bytes(b"y = 1\n")
    before = tree(work)
    started = time.monotonic()
    code = main(["apply", "--upstream", "modeling_gemma.py", "--out", "out"])
    refused(capsys, code, 2, "modeling_gemma.py is 1,200,000 bytes", "at most 1 MiB", "about 60 KB")
    assert time.monotonic() - started < 5
    assert tree(work) == before


def test_endless_upstream_is_refused(work: Path, capsys) -> None:
    code = main(["apply", "--upstream", "/dev/zero", "--config-upstream", "/dev/null", "--out", "out"])
    refused(capsys, code, 2, "/dev/zero", "at most 1 MiB")
    assert tree(work) == {}


def test_wheel_member_over_the_size_limit(work: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    big = b"x = 1\n" * 200_000
    wheel = wheel_bytes(tmp_path / "w", "4.41.0", modeling=big)
    from patcher.upstream.pins import write_pin

    write_pin(pin_for("4.41.0", wheel, modeling=big), tmp_path / "pins")
    monkeypatch.setattr(pypi, "run_pip", FakePip({"4.41.0": wheel}))
    code = main(["apply", "--transformers", "4.41.0", "--out", "out"])
    refused(capsys, code, 4, "modeling_gemma.py in wheel transformers-4.41.0", "at most 1 MiB")
    assert tree(work) == {}


@pytest.mark.parametrize(
    "source",
    [
        "x = " + "(" * 100_000 + ")" * 100_000,
        "x = 1" + " + 1" * 200_000,
        "x = " + "-" * 300_000 + "1",
        "x = " + "[" * 100_000 + "]" * 100_000,
    ],
    ids=["parentheses", "long-sum", "unary-chain", "brackets"],
)
def test_deeply_nested_upstream_is_refused(source: str, work: Path, capsys) -> None:
    (work / "m.py").write_text(source + "\n")
    (work / "configuration_gemma.py").write_text("y = 1\n")
    before = tree(work)
    code = main(["apply", "--upstream", "m.py", "--out", "out"])
    refused(capsys, code, 2, "m.py")
    assert tree(work) == before


def test_deeply_nested_config_json(work: Path, capsys) -> None:
    (work / "ckpt").mkdir()
    (work / "ckpt" / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    before = tree(work)
    code = main(["install", "--transformers", VERSION, "--weights", "ckpt"])
    refused(capsys, code, 2, "config.json is not a readable JSON object (nested too deeply)")
    assert tree(work) == before


# == 6. git =======================================================================================
def git(repo: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    """A repository whose first commit predates the series, then two commits with it."""
    root = tmp_path_factory.mktemp("history") / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "README.md").write_text("patcher, before the codemods\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "skeleton")
    copy_tree(root, ["4.40.2"])
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "series")
    (root / "README.md").write_text("patcher\n")
    git(root, "commit", "-q", "-am", "readme")
    return root


def test_review_against_a_ref_from_before_the_series(history: Path, capsys) -> None:
    before = tree(history)
    code = main(["review", "--repo", str(history), "--base", "HEAD~2"])
    refused(capsys, code, 2, "git ref 'HEAD~2'", "has no series (patches/series)", "give a later ref")
    assert tree(history) == before


@pytest.mark.parametrize(
    "ref, fragments",
    [
        ("HEAD~1", ["git ref 'HEAD~1' names commit", "not present in this clone", "git fetch --unshallow"]),
        ("HEAD~2", ["git ref 'HEAD~2'", "fetch-depth: 0"]),
        ("origin/nosuchbranch", ["unknown git ref 'origin/nosuchbranch'", "git fetch --unshallow"]),
    ],
)
def test_review_in_a_shallow_clone(ref: str, fragments, history: Path, tmp_path: Path, capsys) -> None:
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{history}", str(clone)],
        check=True,
        capture_output=True,
    )
    before = tree(clone)
    refused(capsys, main(["review", "--repo", str(clone), "--base", ref]), 2, *fragments)
    assert tree(clone) == before


# == 7. text encodings ============================================================================
def without_notice(text: str) -> str:
    """An output without the notice lines that name the local file and its digest."""
    return "".join(
        line
        for line in text.splitlines(keepends=True)
        if not line.startswith(("# Upstream:", "# Regenerate:"))
    )


@pytest.fixture
def local_upstream(work: Path, real: dict[str, Upstream]) -> Path:
    """The real 4.40.2 files as local files, generated once as the reference output."""
    (work / "plain").mkdir()
    (work / "plain" / "modeling_gemma.py").write_text(real[VERSION].modeling)
    (work / "plain" / "configuration_gemma.py").write_text(real[VERSION].configuration)
    assert main(["apply", "--upstream", "plain/modeling_gemma.py", "--out", "reference"]) == 0
    return work / "reference"


@pytest.mark.network
def test_upstream_with_a_byte_order_mark(local_upstream: Path, work: Path, real) -> None:
    (work / "bom").mkdir()
    (work / "bom" / "modeling_gemma.py").write_bytes(b"\xef\xbb\xbf" + real[VERSION].modeling.encode())
    (work / "bom" / "configuration_gemma.py").write_bytes(
        b"\xef\xbb\xbf" + real[VERSION].configuration.encode()
    )
    assert main(["apply", "--upstream", "bom/modeling_gemma.py", "--out", "out"]) == 0
    for name in ("modeling_gemma_vacc.py", "configuration_gemma_vacc.py"):
        data = (work / "out" / name).read_bytes()
        assert not data.startswith(b"\xef\xbb\xbf")
        assert without_notice(data.decode()) == without_notice((local_upstream / name).read_text())


@pytest.mark.network
def test_upstream_with_windows_line_endings(local_upstream: Path, work: Path, real) -> None:
    (work / "crlf").mkdir()
    for name, text in (
        ("modeling_gemma.py", real[VERSION].modeling),
        ("configuration_gemma.py", real[VERSION].configuration),
    ):
        (work / "crlf" / name).write_bytes(text.replace("\n", "\r\n").encode())
    assert main(["apply", "--upstream", "crlf/modeling_gemma.py", "--out", "out"]) == 0
    for name in ("modeling_gemma_vacc.py", "configuration_gemma_vacc.py"):
        data = (work / "out" / name).read_bytes().decode()
        assert data.count("\n") == data.count("\r\n") > 100  # CRLF throughout, no bare LF
        reference = (local_upstream / name).read_bytes().decode()
        assert without_notice(data.replace("\r\n", "\n")) == without_notice(reference)


def test_mixed_line_endings_become_lf() -> None:
    from patcher.series.engine import split_newlines

    assert split_newlines("a\r\nb\nc\rd\r\n") == ("a\nb\nc\nd\n", "\n")
    assert split_newlines("a\r\nb\r\n") == ("a\nb\n", "\r\n")
    assert split_newlines("a\nb\n") == ("a\nb\n", "\n")


@pytest.mark.network
@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_output_names_the_terminal_cannot_show(encoding: str, cached, work: Path, tmp_path: Path) -> None:
    name = "sortie-é-输出"
    env = {"PYTHONIOENCODING": encoding, "PATCHER_CACHE_DIR": str(tmp_path / "cache")}
    proc = run_cli("apply", "--transformers", VERSION, "--out", name, cwd=work, env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert sorted(p.name for p in (work / name).iterdir()) == sorted(OUTPUT_FILES)
    assert out.splitlines()[-1].startswith("wrote modeling_gemma_vacc.py")


# == 9. small items ==============================================================================
@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.delitem(sys.modules, "transformers", raising=False)
    monkeypatch.syspath_prepend(str(site))
    return site


def install_fake(site: Path, version: str, modeling: bytes, configuration: bytes) -> Path:
    gemma = site / "transformers" / "models" / "gemma"
    gemma.mkdir(parents=True)
    (site / "transformers" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    (gemma / "modeling_gemma.py").write_bytes(modeling)
    (gemma / "configuration_gemma.py").write_bytes(configuration)
    meta = site / f"transformers-{version}.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: transformers\nVersion: {version}\n")
    return gemma


@pytest.mark.parametrize("version", ["4.40.2.post1", "4.40.2+vacc", "4.41.0.dev0"])
def test_installed_non_final_release_is_told_what_works(version, site, work: Path, capsys) -> None:
    gemma = install_fake(site, version, b"x = 1\n", b"y = 1\n")
    code = main(["apply", "--transformers", "installed", "--out", "out"])
    line = refused(capsys, code, 2, f"installed transformers {version}", "not a final release", "--upstream")
    assert str(gemma / "modeling_gemma.py") in line
    assert "patcher pin" not in line  # `pin` would refuse this version
    assert tree(work) == {}


@pytest.mark.network
def test_installed_post_release_with_the_pinned_files(site, cached, work: Path, real) -> None:
    up = real[VERSION]
    install_fake(site, "4.40.2.post1", up.modeling.encode(), up.configuration.encode())
    assert main(["apply", "--transformers", "installed", "--out", "out"]) == 0
    assert "from transformers 4.40.2;" in (work / "out" / "modeling_gemma_vacc.py").read_text()


@pytest.mark.network
@pytest.mark.parametrize("length", [236, 250, 255])
def test_out_names_up_to_the_longest_file_name(length: int, cached, work: Path) -> None:
    name = "o" * length
    assert main(["apply", "--transformers", VERSION, "--out", name]) == 0
    assert main(["apply", "--transformers", OTHER, "--out", name]) == 0  # the swap, with its old set
    assert sorted(p.name for p in (work / name).iterdir()) == sorted(OUTPUT_FILES)
    assert sorted(p.name for p in work.iterdir()) == [name]


@pytest.mark.network
@pytest.mark.parametrize("out", ["a/b/" + "o" * 300, "a/" + "o" * 256 + "/c"])
def test_failed_out_leaves_no_parents_behind(out: str, cached, work: Path, capsys) -> None:
    code = main(["apply", "--transformers", VERSION, "--out", out])
    refused(capsys, code, 2, "cannot write", "File name too long", "choose another --out")
    assert tree(work) == {}


@pytest.mark.network
def test_failed_out_keeps_parents_that_existed(cached, work: Path, capsys) -> None:
    (work / "a").mkdir()
    code = main(["apply", "--transformers", VERSION, "--out", "a/b/" + "o" * 300])
    refused(capsys, code, 2, "File name too long")
    assert tree(work) == {"a": None}


# == 10. --model: family names and another family's files =========================================
FAMILY_BASE = "5.24.0"  # both families' files of one release, from the user cache


@pytest.fixture(scope="module")
def families() -> dict[str, Upstream]:
    """The real 5.24.0 upstream files of both families (read before any test moves the cache)."""
    from patcher.upstream import fetch as upstream

    return {m: upstream.fetch(FAMILY_BASE, model=m) for m in ("gemma", "mistral")}


@pytest.fixture
def family_files(work: Path, tmp_path: Path, families: dict[str, Upstream]) -> Path:
    """Both families' 5.24.0 files as local files (``g/``, ``m/``), pinned and cached in the
    private pins and cache; a Mistral file with Gemma's names mixed in, a binary and an empty
    one; a Gemma and a Mistral checkpoint."""
    for model, folder in (("gemma", "g"), ("mistral", "m")):
        up = families[model]
        (work / folder).mkdir()
        (work / folder / up.family.modeling).write_text(up.modeling)
        (work / folder / up.family.configuration).write_text(up.configuration)
        pinned = ROOT / "upstream_pins" / up.family.pins_subdir / f"{FAMILY_BASE}.json"
        (tmp_path / "pins" / up.family.pins_subdir).mkdir(parents=True, exist_ok=True)
        shutil.copy(pinned, tmp_path / "pins" / up.family.pins_subdir)
        BlobCache(tmp_path / "cache").put(up.modeling.encode())
        BlobCache(tmp_path / "cache").put(up.configuration.encode())
    mistral = families["mistral"]
    for folder, modeling in (
        ("mixed", mistral.modeling + "\n\nclass GemmaRMSNorm(MistralRMSNorm):\n    pass\n"),
        ("empty", ""),
        ("comment", "# adapted from the gemma port\n" + mistral.modeling),
    ):
        (work / folder).mkdir()
        (work / folder / "modeling_mistral.py").write_text(modeling)
        (work / folder / "configuration_mistral.py").write_text(mistral.configuration)
    (work / "bin").mkdir()
    (work / "bin" / "modeling_mistral.py").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8)
    for model in ("gemma", "mistral"):
        (work / f"ckpt-{model}").mkdir()
        (work / f"ckpt-{model}" / "config.json").write_text(json.dumps({"model_type": model}))
    return work


COMMANDS_WITH_MODEL = (
    "list",
    "diff",
    "apply",
    "matrix",
    "verify",
    "install",
    "check",
    "lock",
    "review",
    "pin",
    "update",
)


@pytest.mark.parametrize("name", ["llama", "", "MISTRAL", "gemma,mistral"])
@pytest.mark.parametrize("command", COMMANDS_WITH_MODEL)
def test_unknown_family_is_refused_by_every_command(command: str, name: str, work: Path, tmp_path, capsys):
    before = tree(tmp_path)
    code = main([command, "--model", name])
    refused(capsys, code, 2, f"{command}: argument --model: invalid choice: {name!r}", "'gemma', 'mistral'")
    assert tree(tmp_path) == before


M, G = "m/modeling_mistral.py", "g/modeling_gemma.py"
HOSTILE_FAMILY_INPUTS = {
    # case: (argv, exit code, fragments of the one error line)
    "gemma-file-as-mistral": (
        ["apply", "--model", "mistral", "--upstream", G, "--out", "out"],
        2,
        [f"{G} defines GemmaPreTrainedModel, not MistralPreTrainedModel", "use --model gemma"],
    ),
    "mistral-file-as-gemma": (
        ["apply", "--upstream", M, "--out", "out"],
        2,
        [f"{M} defines MistralPreTrainedModel, not GemmaPreTrainedModel", "use --model mistral"],
    ),
    "gemma-config-with-mistral": (
        ["apply", "--model", "mistral", "--upstream", M, "--config-upstream", "g/configuration_gemma.py"],
        2,
        ["g/configuration_gemma.py defines GemmaConfig, not MistralConfig", "use --model gemma"],
    ),
    "mistral-config-with-gemma": (  # was a drift error (exit 3) naming config-imports
        ["apply", "--upstream", G, "--config-upstream", "m/configuration_mistral.py", "--out", "out"],
        2,
        ["m/configuration_mistral.py defines MistralConfig, not GemmaConfig", "use --model mistral"],
    ),
    "gemma-names-mixed-in": (
        ["apply", "--model", "mistral", "--upstream", "mixed/modeling_mistral.py", "--out", "out"],
        2,
        ["already uses Gemma", "cannot be mapped to them and back exactly"],
    ),
    "gemma-in-a-comment": (  # the names are mapped as text: the line is named
        ["apply", "--model", "mistral", "--upstream", "comment/modeling_mistral.py", "--out", "out"],
        2,
        ["modeling_mistral.py:1 already uses gemma", "cannot be mapped"],
    ),
    "binary-mistral-upstream": (
        ["apply", "--model", "mistral", "--upstream", "bin/modeling_mistral.py", "--out", "out"],
        2,
        ["bin/modeling_mistral.py is not UTF-8 text"],
    ),
    "verify-upstream-gemma-as-mistral": (
        ["verify", "--model", "mistral", "--upstream", G, "--transformers", FAMILY_BASE],
        2,
        [f"{G} defines GemmaPreTrainedModel, not MistralPreTrainedModel", "use --model gemma"],
    ),
    "diff-mistral-unpinned-series": (  # the hint pinned gemma's files before
        ["diff", "--model", "mistral", "--transformers", "4.99"],
        2,
        ["no transformers 4.99.x release is pinned for mistral", "`patcher pin --model mistral 4.99.N`"],
    ),
    "apply-mistral-unpinned-release": (
        ["apply", "--model", "mistral", "--transformers", "4.41.5", "--out", "out"],
        2,
        ["transformers 4.41.5 is not pinned for mistral", "`patcher pin --model mistral 4.41.5` first"],
    ),
    "pin-mistral-before-4.38": (  # said "has no Gemma"
        ["pin", "--model", "mistral", "4.37.2"],
        2,
        ["transformers 4.37.2 is older than patcher's Mistral support", "starts at transformers 4.38.0"],
    ),
    "install-mistral-into-gemma-checkpoint": (
        ["install", "--model", "mistral", "--transformers", FAMILY_BASE, "--weights", "ckpt-gemma"],
        2,
        ["config.json says model_type 'gemma', not 'mistral'", "--force"],
    ),
    "install-gemma-into-mistral-checkpoint": (
        ["install", "--transformers", FAMILY_BASE, "--weights", "ckpt-mistral"],
        2,
        ["config.json says model_type 'mistral', not 'gemma'", "--force"],
    ),
    "gemma-pin-in-mistral-dir": (  # the hint was `patcher pin`, which pins Gemma's files
        ["apply", "--model", "mistral", "--transformers", FAMILY_BASE, "--out", "out"],
        2,
        [
            "files must name exactly configuration_mistral.py, modeling_mistral.py",
            "`patcher pin --model mistral`",
        ],
    ),
    "check-mistral-without-its-lock": (  # the hint was `patcher lock`, which writes Gemma's
        ["check", "--model", "mistral"],
        2,
        ["there is no lock at ", "mistral/lock.json", "run `patcher lock --model mistral` to write one"],
    ),
    "verify-dir-mistral-as-gemma": (
        ["verify", "--model", "gemma", "--dir", "built-mistral"],
        2,
        ["--model gemma: built-mistral has no modeling_gemma_vacc.py", "use --model mistral"],
    ),
}


@pytest.mark.network
@pytest.mark.parametrize("case", HOSTILE_FAMILY_INPUTS)
def test_hostile_family_input_is_one_line(case: str, family_files: Path, tmp_path: Path, capsys) -> None:
    argv, expected, fragments = HOSTILE_FAMILY_INPUTS[case]
    if case == "gemma-pin-in-mistral-dir":
        shutil.copy(ROOT / "upstream_pins" / f"{FAMILY_BASE}.json", tmp_path / "pins" / "mistral")
    if case.startswith("verify-dir"):
        assert (
            main(["apply", "--model", "mistral", "--transformers", FAMILY_BASE, "--out", "built-mistral"])
            == 0
        )
        capsys.readouterr()
    before = tree(tmp_path)
    refused(capsys, main(argv), expected, *fragments)
    assert tree(tmp_path) == before


@pytest.mark.network
def test_an_empty_mistral_upstream_drifts_and_writes_nothing(
    family_files: Path, tmp_path: Path, capsys
) -> None:
    before = tree(tmp_path)
    assert (
        main(["apply", "--model", "mistral", "--upstream", "empty/modeling_mistral.py", "--out", "out"]) == 3
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err and "drift: codemod attention, target MistralAttention" in err
    assert tree(tmp_path) == before


@pytest.mark.network
def test_mistral_upstream_with_windows_line_endings(family_files: Path, families) -> None:
    """Every line of the outputs ends in CRLF, the notice's too (its lines came out LF before)."""
    (family_files / "crlf").mkdir()
    for folder in ("m", "crlf"):
        for name in ("modeling_mistral.py", "configuration_mistral.py"):
            text = (family_files / "m" / name).read_text()
            if folder == "crlf":
                (family_files / "crlf" / name).write_bytes(text.replace("\n", "\r\n").encode())
        assert (
            main(
                [
                    "apply",
                    "--model",
                    "mistral",
                    "--upstream",
                    f"{folder}/modeling_mistral.py",
                    "--out",
                    f"o-{folder}",
                ]
            )
            == 0
        )
    for name in ("modeling_mistral_vacc.py", "configuration_mistral_vacc.py"):
        data = (family_files / "o-crlf" / name).read_bytes().decode()
        assert data.count("\n") == data.count("\r\n") > 10  # CRLF throughout, no bare LF
        plain = (family_files / "o-m" / name).read_text()
        assert without_notice(data.replace("\r\n", "\n")) == without_notice(plain)


def test_list_describes_the_codemods_in_the_familys_names(capsys) -> None:
    assert main(["list", "--model", "mistral", "--json"]) == 0
    described = " ".join(c["description"] for c in json.loads(capsys.readouterr().out)["codemods"])
    assert "MistralConfig" in described and "Gemma" not in described
    assert main(["list", "--model", "mistral"]) == 0
    assert "Gemma" not in capsys.readouterr().out


def test_a_local_mistral_overlay_is_named_as_mistral(tmp_path: Path) -> None:
    """``verify --model mistral --upstream FILE``: the overlay is written where transformers keeps
    Mistral's files, and the report (text and --json) names Mistral's files (it said
    modeling_gemma.py and "not its own Gemma" before)."""
    from patcher.upstream.fetch import from_files
    from patcher.verify.release import Overlay, VerifyReport

    (tmp_path / "modeling_mistral.py").write_text("class MistralPreTrainedModel:\n    pass\n")
    (tmp_path / "configuration_mistral.py").write_text("class MistralConfig:\n    pass\n")
    local = from_files(tmp_path / "modeling_mistral.py", tmp_path / "configuration_mistral.py", "mistral")
    overlay = Overlay.from_upstream(local)
    modeling, configuration = overlay.write(tmp_path / "overlay")
    assert modeling == tmp_path / "overlay" / "models" / "mistral" / "modeling_mistral.py"
    assert configuration == tmp_path / "overlay" / "models" / "mistral" / "configuration_mistral.py"
    assert set(overlay.as_dict()) == {"modeling_mistral.py", "configuration_mistral.py"}
    report = VerifyReport(FAMILY_BASE, [], overlay=overlay)
    assert report.reference.endswith("(not its own Mistral)")
    assert set(report.as_dict()["upstream"]) == {"modeling_mistral.py", "configuration_mistral.py"}
