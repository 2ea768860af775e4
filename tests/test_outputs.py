"""Writing an output directory: the old set or the new, never a mix, whatever interrupts it.

``write_output`` stages the files in a hidden sibling and swaps it in (``patcher.deploy.atomicdir``).
These tests interrupt it at every step — an exception raised by a write or a rename, and a
process killed with SIGKILL — and check that the directory then holds exactly the old set (or,
after the swap, exactly the new one), and that the next write cleans up what the dead
process left.  No upstream file is needed: the "outputs" are small texts carrying the notice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from patcher.deploy import atomicdir
from patcher.deploy.write import write_output
from patcher.errors import UsageError
from patcher.series.contract import NOTICE_MARK

ROOT = Path(__file__).resolve().parent.parent


def output(tag: str) -> dict[str, str]:
    """A set of the three output files, each saying which set it belongs to."""
    return {
        "modeling_gemma_vacc.py": f"{NOTICE_MARK} from transformers {tag}\nMODEL = {tag!r}\n",
        "configuration_gemma_vacc.py": f"{NOTICE_MARK} from transformers {tag}\nCONFIG = {tag!r}\n",
        "quantization_vacc.py": f"{NOTICE_MARK}: shipped unchanged\nQUANTIZE = {tag!r}\n",
    }


def contents(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.iterdir())}


def siblings(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.parent.iterdir() if p.name != directory.name)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    directory = tmp_path / "out"
    write_output(output("old"), directory)
    assert contents(directory) == output("old")
    return directory


@pytest.fixture(params=["exchange", "two-renames"])
def swap(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test with the one-step swap and with the fallback for systems without it."""
    if request.param == "exchange" and atomicdir._renameat2() is None:
        pytest.skip("renameat2 is not available here")
    if request.param == "two-renames":
        monkeypatch.setattr(atomicdir, "exchange", lambda a, b: False)
    return request.param


def test_new_directory(tmp_path: Path) -> None:
    write_output(output("new"), tmp_path / "a" / "b" / "out")
    assert contents(tmp_path / "a" / "b" / "out") == output("new")
    assert siblings(tmp_path / "a" / "b" / "out") == []


def test_replacing_leaves_only_the_new_set(out: Path, swap: str) -> None:
    os.chmod(out, 0o750)
    write_output(output("new"), out)
    assert contents(out) == output("new")
    assert siblings(out) == []
    assert out.stat().st_mode & 0o777 == 0o750  # the directory keeps its mode


def test_a_symlinked_out_replaces_the_directory_it_points_to(tmp_path: Path) -> None:
    real = tmp_path / "real"
    write_output(output("old"), real)
    (tmp_path / "link").symlink_to(real)
    write_output(output("new"), tmp_path / "link")
    assert (tmp_path / "link").is_symlink()
    assert contents(real) == output("new")


@pytest.mark.parametrize("failing_write", [1, 2, 3])
def test_a_failing_write_leaves_the_old_set(out: Path, swap: str, failing_write: int, monkeypatch) -> None:
    write = atomicdir._write_file
    calls = []

    def flaky(path: Path, text: str) -> None:
        calls.append(path)
        if len(calls) == failing_write:
            raise OSError(28, "No space left on device", str(path))
        write(path, text)

    monkeypatch.setattr(atomicdir, "_write_file", flaky)
    with pytest.raises(UsageError, match="No space left on device"):
        write_output(output("new"), out)
    assert contents(out) == output("old")
    assert siblings(out) == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_write_leaves_the_old_set(out: Path, swap: str, exc: type, monkeypatch) -> None:
    write = atomicdir._write_file

    def interrupted(path: Path, text: str) -> None:
        write(path, text)
        raise exc()

    monkeypatch.setattr(atomicdir, "_write_file", interrupted)
    with pytest.raises(exc):
        write_output(output("new"), out)
    assert contents(out) == output("old")
    assert siblings(out) == []


def test_a_failing_swap_leaves_the_old_set(out: Path, swap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if swap == "exchange":

        def failing(a: Path, b: Path) -> bool:
            raise OSError(5, "Input/output error", str(a))

        monkeypatch.setattr(atomicdir, "exchange", failing)
    else:  # the second rename (new set into place) fails: the first one is undone
        rename = os.rename
        calls = []

        def failing_second(src, dst):
            calls.append(src)
            if len(calls) == 2:
                raise OSError(5, "Input/output error", str(src))
            rename(src, dst)

        monkeypatch.setattr(atomicdir.os, "rename", failing_second)
    with pytest.raises(UsageError, match="Input/output error"):
        write_output(output("new"), out)
    assert contents(out) == output("old")
    assert siblings(out) == []


# -- killed processes ------------------------------------------------------------------------------
KILLER = """
import os, signal, sys
from pathlib import Path
from patcher.deploy import atomicdir
from patcher.series.contract import NOTICE_MARK
from patcher.deploy.write import write_output

out, point, swap = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if swap == "two-renames":
    atomicdir.exchange = lambda a, b: False
files = {
    "modeling_gemma_vacc.py": f"{NOTICE_MARK} from transformers new\\nMODEL = 'new'\\n",
    "configuration_gemma_vacc.py": f"{NOTICE_MARK} from transformers new\\nCONFIG = 'new'\\n",
    "quantization_vacc.py": f"{NOTICE_MARK}: shipped unchanged\\nQUANTIZE = 'new'\\n",
}

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "after-first-file":
    write = atomicdir._write_file
    calls = []
    def write_then_die(path, text):
        write(path, text)
        calls.append(path)
        if len(calls) == 1:
            die()
    atomicdir._write_file = write_then_die
elif point == "between-renames":
    rename = os.rename
    def rename_then_die(src, dst):
        rename(src, dst)
        die()
    atomicdir.os.rename = rename_then_die
elif point == "after-swap":
    exchange, fsync_dir = atomicdir.exchange, atomicdir._fsync_dir
    def fsync_then_die(path):
        fsync_dir(path)
        if path == out.parent:
            die()
    atomicdir._fsync_dir = fsync_then_die
write_output(files, out)
"""


def kill_while_writing(out: Path, point: str, swap: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(out), point, swap], env=env, capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_killed_while_writing_the_files(out: Path, swap: str) -> None:
    kill_while_writing(out, "after-first-file", swap)
    assert contents(out) == output("old")  # what a reader sees: the old set, whole
    leftover = siblings(out)
    assert len(leftover) == 1 and leftover[0].startswith(".out.new-")
    write_output(output("newer"), out)  # the next run cleans up after the dead one
    assert contents(out) == output("newer")
    assert siblings(out) == []


def test_killed_right_after_the_swap(out: Path) -> None:
    if atomicdir._renameat2() is None:
        pytest.skip("renameat2 is not available here")
    kill_while_writing(out, "after-swap", "exchange")
    assert contents(out) == output("new")  # the swap happened: the new set, whole
    atomicdir.recover(out)
    assert siblings(out) == []


def test_killed_between_the_two_renames_of_the_fallback(out: Path) -> None:
    """The one window of the fallback swap: the old set has been renamed aside and the new one
    not yet in.  The old set is beside the path, whole, and the next run puts it back."""
    kill_while_writing(out, "between-renames", "two-renames")
    assert not out.exists()
    new, old = siblings(out)
    assert old.startswith(".out.old-") and contents(out.parent / old) == output("old")
    assert new.startswith(".out.new-")
    assert atomicdir.recover(out) is True
    assert contents(out) == output("old")
    assert siblings(out) == []


def test_leftovers_of_a_running_writer_are_left_alone(out: Path) -> None:
    busy = out.parent / f".out.new-{os.getpid()}-0123abcd"
    busy.mkdir()
    atomicdir.recover(out)
    assert busy.exists()


# -- readers ----------------------------------------------------------------------------------------
def test_readers_see_one_whole_set_at_every_moment(out: Path) -> None:
    """A reader opening the directory while it is replaced again and again always finds it,
    and finds in it the three files of one set, never a mix.  (A reader that is slow enough
    may find its set retired — the replaced directory is deleted — and reads again.)"""
    if atomicdir._renameat2() is None:
        pytest.skip("renameat2 is not available here")
    stop = threading.Event()
    seen: set[str] = set()
    problems: list[str] = []

    def read_once() -> dict[str, str] | None:
        try:
            fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            problems.append("no directory")
            return None
        try:
            texts = {}
            for name in output("x"):
                with open(os.open(name, os.O_RDONLY, dir_fd=fd)) as handle:
                    texts[name] = handle.read()
            return texts
        except FileNotFoundError:
            return None  # this set was retired while being read
        finally:
            os.close(fd)

    def read() -> None:
        while not stop.is_set():
            texts = read_once()
            if texts is None:
                continue
            tags = {text.rsplit("= ", 1)[1].strip() for text in texts.values()}
            if len(tags) != 1:
                problems.append(str(tags))
            seen.update(tags)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(60):
            write_output(output(f"set{i % 2}"), out)
    finally:
        stop.set()
        reader.join()
    assert problems == []
    assert len(seen) >= 2


# -- foreign files and --force ----------------------------------------------------------------------
def test_foreign_files_are_refused_and_kept(out: Path) -> None:
    (out / "weights.safetensors").write_text("precious")
    with pytest.raises(UsageError, match="holds files patcher did not write \\(weights.safetensors\\)"):
        write_output(output("new"), out)
    assert contents(out) == {**output("old"), "weights.safetensors": "precious"}


def test_force_writes_beside_foreign_files_and_keeps_them(out: Path) -> None:
    (out / "weights.safetensors").write_text("precious")
    (out / "modeling_gemma_vacc.py").write_text("# hand-edited\n")
    write_output(output("new"), out, force=True)
    assert contents(out) == {**output("new"), "weights.safetensors": "precious"}
    assert siblings(out) == []


def test_force_with_a_failing_write_keeps_every_old_file(out: Path, monkeypatch) -> None:
    (out / "weights.safetensors").write_text("precious")
    write = atomicdir._write_file
    calls = []

    def flaky(path: Path, text: str) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(path))
        write(path, text)

    monkeypatch.setattr(atomicdir, "_write_file", flaky)
    with pytest.raises(UsageError):
        write_output(output("new"), out, force=True)
    assert contents(out) == {**output("old"), "weights.safetensors": "precious"}


def test_out_holding_the_working_directory_is_written_in_place(out: Path, monkeypatch) -> None:
    """Swapping the directory a shell sits in would leave it in a deleted directory."""
    monkeypatch.chdir(out)
    inode = out.stat().st_ino
    write_output(output("new"), Path("."))
    assert contents(out) == output("new")
    assert out.stat().st_ino == inode
    assert siblings(out) == []


def test_force_leaves_no_file_of_an_earlier_run_beside_the_new_set(out: Path) -> None:
    """In place as in a swap, patcher's files are exactly this run's (a --codemod selection that
    writes no configuration removes the earlier one)."""
    (out / "weights.safetensors").write_text("precious")
    partial = {k: v for k, v in output("new").items() if k != "configuration_gemma_vacc.py"}
    write_output(partial, out, force=True)
    assert contents(out) == {**partial, "weights.safetensors": "precious"}


def test_the_output_key_is_of_the_code_imported_not_of_files_edited_since(tmp_path):
    """A codemod edited on disk while a run goes on must not give that run's outputs (made by
    the code imported before) the key of the edited code: the cache would serve them later as
    the edited code's outputs."""
    import shutil

    from patcher.series import contract, engine

    copy = tmp_path / "patches"
    shutil.copytree(engine.PATCHES_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    engine.load_series(copy)  # takes the digest of what it imports
    series, output = contract._DIGESTS[copy.resolve()]
    (copy / "quantize.py").write_text((copy / "quantize.py").read_text() + "\n# edited\n")
    assert contract.series_digest(copy) == series
    assert contract.output_digest(copy) == output
    assert contract._series_digest(copy.resolve()) != series  # the files did change


def test_the_output_key_covers_the_runner_and_the_lock_digest_does_not():
    """The lock's series digest is of the codemods alone; the output key adds patcher's runner
    modules, so a runner change makes cached outputs stale without touching the lock."""
    from patcher.series import contract

    assert contract.output_digest() != contract.series_digest()
    assert contract._output_digest(contract.series_digest()) == contract.output_digest()
    assert contract._output_digest("0" * 64) != contract.output_digest()
    here = Path(contract.__file__).parent
    assert all((here / name).is_file() for name in contract.RUNNER)
