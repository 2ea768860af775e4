"""Warm check processes (``patcher.verify.warm``, ``forkserver.py``): a child forked from
the warm server must be the fresh process it replaces, or not be used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from patcher.verify import warm

SCRIPT = """\
import json, os, sys
print(json.dumps({"path1": sys.path[1], "cwd": os.getcwd(), "env": os.environ.get("MARK"),
                  "argv": sys.argv[1:], "main": __name__, "stdin": sys.stdin.read()}))
print("to stderr", file=sys.stderr)
if "--sleep" in sys.argv:
    import time; time.sleep(60)
sys.exit(int(sys.argv[1]) if sys.argv[1:] and sys.argv[1].isdigit() else 0)
"""


def _dist(directory: Path, name: str, version: str, files: dict[str, str], points: str = "") -> None:
    """A fake installed distribution: its files and a RECORD with their "hashes"."""
    info = directory / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    record = []
    for path, content in files.items():
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_text(content)
        record.append(f"{path},sha256={abs(hash(content))},{len(content)}")
    record.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(record) + "\n")
    if points:
        (info / "entry_points.txt").write_text(points)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    warm._tops.cache_clear()
    warm._dists.cache_clear()
    mine, theirs = tmp_path / "t0", tmp_path / "t1"
    for d in (mine, theirs):
        _dist(d, "numpy", "2.4.6", {"numpy/__init__.py": "N2"})
        _dist(d, "transformers", "4.0", {"transformers/__init__.py": "T"})
    return mine, theirs


READY = {
    "loaded": {
        "numpy": "{t0}/numpy/__init__.py",
        "torch": "/base/site-packages/torch/__init__.py",
        "json": "",
    },
    "missed": ["rich", "torch._rocm_init"],
    "metadata": ["dist:tqdm", "group:torch.backends"],
}


def _ready(mine: Path) -> dict:
    return {**READY, "loaded": {k: v.format(t0=mine) for k, v in READY["loaded"].items()}}


def test_a_target_dir_with_the_same_files_is_compatible(dirs) -> None:
    mine, theirs = dirs
    assert warm.incompatibility(_ready(mine), str(mine), str(theirs)) is None
    assert warm.incompatibility(_ready(mine), str(mine), str(mine)) is None


def test_another_build_of_a_module_the_warm_up_took_from_the_server_target_is_not(dirs) -> None:
    mine, theirs = dirs
    for d in theirs.glob("numpy*"):
        __import__("shutil").rmtree(d)
    _dist(theirs, "numpy", "1.26.4", {"numpy/__init__.py": "N1"})
    reason = warm.incompatibility(_ready(mine), str(mine), str(theirs))
    assert reason and "numpy" in reason and "numpy-1.26.4.dist-info" in reason


@pytest.mark.parametrize(
    "provided",
    ["torch/__init__.py", "json.py", "rich/__init__.py", "json.cpython-311-x86_64-linux-gnu.so"],
)
def test_a_module_shadowing_the_base_or_found_where_the_warm_up_missed_it_is_not(dirs, provided) -> None:
    mine, theirs = dirs
    (theirs / provided).parent.mkdir(parents=True, exist_ok=True)
    (theirs / provided).write_text("")
    reason = warm.incompatibility(_ready(mine), str(mine), str(theirs))
    assert reason and provided.split("/")[0].split(".")[0] in reason


def test_distributions_and_entry_points_the_warm_up_read_must_match(dirs) -> None:
    mine, theirs = dirs
    _dist(theirs, "tqdm", "4.70", {"tqdm/__init__.py": "Q"})
    assert "tqdm" in warm.incompatibility(_ready(mine), str(mine), str(theirs))
    warm._dists.cache_clear()
    _dist(mine, "tqdm", "4.70", {"tqdm/__init__.py": "Q"})
    assert warm.incompatibility(_ready(mine), str(mine), str(theirs)) is None
    warm._dists.cache_clear()
    _dist(theirs, "plugin", "1", {"plugin/__init__.py": "P"}, "[torch.backends]\nx = plugin:load\n")
    assert "entry points" in warm.incompatibility(_ready(mine), str(mine), str(theirs))


# -- the server itself, on patcher's own interpreter (its warm-up imports fail: no torch) -----


@pytest.fixture
def server(tmp_path: Path):
    target = tmp_path / "target0"
    target.mkdir()
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    srv = warm.Server(sys.executable, environ, str(target))
    yield srv, environ, tmp_path
    srv.close()


def test_the_child_runs_the_script_as_a_fresh_process_would(server) -> None:
    srv, environ, tmp = server
    script = tmp / "script.py"
    script.write_text(SCRIPT)
    target = tmp / "target1"
    target.mkdir()
    env = {**environ, "MARK": "seen", "PYTHONPATH": str(target)}
    got = srv.run([str(script), "3", "x"], cwd=str(tmp), environ=env, target=str(target), timeout=60)
    fresh = subprocess.run(
        [sys.executable, str(script), "3", "x"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        stdin=subprocess.DEVNULL,
    )
    assert got.returncode == fresh.returncode == 3
    assert json.loads(got.stdout) == json.loads(fresh.stdout)
    assert json.loads(got.stdout)["path1"] == str(target) and json.loads(got.stdout)["main"] == "__main__"
    assert got.stderr.endswith("to stderr\n")
    again = srv.run([str(script)], cwd=str(tmp), environ=env, target=str(target), timeout=60)
    assert again.returncode == 0  # the server forks from the same state, run after run


def test_a_child_past_its_timeout_is_killed_and_the_server_lives_on(server) -> None:
    srv, environ, tmp = server
    script = tmp / "script.py"
    script.write_text(SCRIPT)
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        srv.run([str(script), "--sleep"], cwd=str(tmp), environ=environ, target=str(tmp), timeout=2)
    assert "to stderr" in expired.value.stderr
    assert srv.alive()
    assert srv.run([str(script)], cwd=str(tmp), environ=environ, target=str(tmp), timeout=60).returncode == 0


def test_ctrl_c_stops_the_children_not_the_server(server) -> None:
    """Ctrl-C reaches the whole process group: the server ignores it (and reports how its
    child ended), while the child gets Python's KeyboardInterrupt as a fresh process would."""
    import signal

    srv, environ, tmp = server
    os.kill(srv.proc.pid, signal.SIGINT)
    script = tmp / "script.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGINT)\n")
    done = srv.run([str(script)], cwd=str(tmp), environ=environ, target=str(tmp), timeout=60)
    fresh = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=environ)
    assert srv.alive() and "KeyboardInterrupt" in done.stderr and "KeyboardInterrupt" in fresh.stderr
    assert done.returncode == fresh.returncode == -signal.SIGINT  # ended by the signal, as CPython does


@pytest.mark.parametrize("parent", ["default", "ignore"])
def test_a_child_takes_ctrl_c_as_a_fresh_one_would(server, parent) -> None:
    """A fresh process inherits an ignored SIGINT (a background job's, say) and then ignores
    Ctrl-C; otherwise Python gives it KeyboardInterrupt.  The warm child must do the same
    whatever the server itself does with SIGINT, or a Ctrl-C that never stops a fresh check
    would fail a warm one."""
    import signal

    srv, environ, tmp = server
    script = tmp / "script.py"
    script.write_text(
        "import os, signal\nprint(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)\n"
        "os.kill(os.getpid(), signal.SIGINT)\nprint('went on')\n"
    )
    handler = signal.SIG_IGN if parent == "ignore" else signal.default_int_handler
    previous = signal.signal(signal.SIGINT, handler)
    try:
        done = srv.run([str(script)], cwd=str(tmp), environ=environ, target=str(tmp), timeout=60)
        fresh = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=environ)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (done.returncode, done.stdout) == (fresh.returncode, fresh.stdout)
    if parent == "ignore":
        assert done.stdout == "True\nwent on\n" and done.returncode == 0
    else:
        assert done.stdout == "False\n" and done.returncode == -signal.SIGINT


def test_an_interpreter_that_cannot_serve_runs_fresh_and_is_not_asked_again(tmp_path, monkeypatch) -> None:
    """A stand-in for the environment's python (as the tests use) says something else than
    the server's first line, or nothing before the timeout: the run goes to a fresh process."""
    monkeypatch.setattr(warm, "POOL", warm.Pool())
    python = tmp_path / "stand-in"
    python.write_text(f"#!{sys.executable}\nimport sys, time\nprint('hello', sys.argv[1:])\ntime.sleep(30)\n")
    python.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    start = __import__("time").monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        warm.run([str(python), "checks.py"], environ=env, cwd=str(tmp_path), timeout=1)
    assert __import__("time").monotonic() - start < 10 and str(python) in warm.POOL.broken
    assert warm.POOL.fresh == 1 and warm.POOL.warm == 0


def test_warm_starts_can_be_turned_off(tmp_path: Path, monkeypatch) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    monkeypatch.setenv("PATCHER_WARM_CHECKS", "0")
    before = warm.POOL.started
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = warm.run([sys.executable, str(script), "5"], environ=env, cwd=str(tmp_path), timeout=60)
    assert done.returncode == 5 and warm.POOL.started == before


def test_runs_differing_only_in_the_running_test_share_a_server(tmp_path: Path, monkeypatch) -> None:
    """pytest names the running test in PYTEST_CURRENT_TEST: a server serves runs whatever
    that name (each child still sees its own), while any other variable needs a server of its
    own, since the warm-up may have read it."""
    monkeypatch.setattr(warm, "POOL", warm.Pool())
    script = tmp_path / "script.py"
    script.write_text("import os\nprint(os.environ.get('PYTEST_CURRENT_TEST'), os.environ.get('MARK'))\n")
    base = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    seen = []
    for test, mark in (("t.py::a (call)", "1"), ("t.py::b (call)", "1"), ("t.py::b (call)", "2")):
        env = {**base, "PYTHONPATH": str(tmp_path), "PYTEST_CURRENT_TEST": test, "MARK": mark}
        done = warm.run([sys.executable, str(script)], environ=env, cwd=str(tmp_path), timeout=60)
        seen.append(done.stdout.split())
    assert seen == [["t.py::a", "(call)", "1"], ["t.py::b", "(call)", "1"], ["t.py::b", "(call)", "2"]]
    assert (warm.POOL.started, warm.POOL.warm, warm.POOL.fresh) == (2, 3, 0)
    warm.POOL.close()


# -- real releases: warm and fresh reports are the same --------------------------------------


@pytest.mark.verify
@pytest.mark.network
def test_warm_and_fresh_check_runs_report_the_same(tmp_path: Path, monkeypatch) -> None:
    """Two releases whose target dirs share the warm-up's files: the second runs in a child
    of the server warmed up for the first.  Every check's status and detail (the measured
    differences included) must equal a fresh process's."""
    from releases import fetch

    from patcher.deploy.write import write_output
    from patcher.series import engine
    from patcher.series.generate import generate
    from patcher.verify import release

    monkeypatch.setattr(warm, "POOL", warm.Pool())
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "1")
    series = engine.load_series()
    reports = {}
    for version in ("4.46.1", "4.46.2"):
        out = tmp_path / version
        write_output(dict(generate(fetch(version), series).files), out)
        for mode in ("1", "0"):
            monkeypatch.setenv("PATCHER_WARM_CHECKS", mode)
            report = release.verify_output(version, out)
            reports[version, mode] = (
                [(c.name, c.config, c.status, c.detail) for c in report.checks],
                report.versions,
            )
        assert reports[version, "1"] == reports[version, "0"]
        assert all(status == "pass" for _, _, status, _ in reports[version, "1"][0])
    assert (warm.POOL.started, warm.POOL.warm, warm.POOL.fresh) == (1, 2, 2)  # one server, reused
    warm.POOL.close()


def test_ctrl_c_in_another_thread_stops_a_waiting_check_without_a_fresh_rerun(tmp_path, monkeypatch) -> None:
    """verify --all --jobs N: only the main thread gets KeyboardInterrupt; ``interrupt`` must
    stop the check a worker thread waits on (and its server), and that thread must end with
    KeyboardInterrupt, not start the check again in a fresh process."""
    import threading
    import time

    monkeypatch.setattr(warm, "POOL", warm.Pool())
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    outcome: list[BaseException | subprocess.CompletedProcess] = []

    def worker() -> None:
        try:
            outcome.append(
                warm.run([sys.executable, str(script), "--sleep"], environ=env, cwd=str(tmp_path), timeout=60)
            )
        except BaseException as error:  # noqa: BLE001 (what the thread ends with is the point)
            outcome.append(error)

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 30
    while not any(s.child for s in list(warm._LIVE)) and time.monotonic() < deadline:
        time.sleep(0.05)
    servers = [s for s in list(warm._LIVE) if s.child]
    assert servers, "the check never started"
    started = time.monotonic()
    warm.POOL.interrupt()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert len(outcome) == 1 and isinstance(outcome[0], KeyboardInterrupt), outcome
    assert warm.POOL.fresh == 0 and not any(s.alive() for s in servers)
    with pytest.raises(KeyboardInterrupt):  # and nothing starts afterwards
        warm.run([sys.executable, str(script)], environ=env, cwd=str(tmp_path), timeout=60)


def test_patcher_ended_by_ctrl_c_leaves_no_check_server(monkeypatch) -> None:
    """After Ctrl-C patcher ends with os._exit (no atexit): its servers are stopped first."""
    from patcher import console

    calls = []
    monkeypatch.setattr(warm.POOL, "interrupt", lambda: calls.append("interrupt"))
    monkeypatch.setattr(console.os, "_exit", lambda code: calls.append(code))
    console.exit_now(130)
    assert calls == ["interrupt", 130]
