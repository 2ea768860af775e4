"""Check processes started warm: forked from a server that imported torch once (SPEC §6).

A release's check process spends seconds importing torch, numpy, onnx, onnxruntime and
onnxsim, the same files for every release of a toolchain.  ``forkserver.py``, run by the
toolchain's base python with one release's target dir on ``PYTHONPATH``, imports them once
and forks a child per check run.  The child is the fresh process it replaces only when the
release's target dir could not have changed what the warm-up imported, which
:func:`incompatibility` decides from the server's report:

* each module the warm-up loaded from the base venv or the standard library must not be
  provided by the target dir (which ``PYTHONPATH`` puts in front);
* each module it loaded from the server's own target dir must come, in the release's, from
  a distribution with the very same files (the ``RECORD`` hashes);
* each module it looked for and did not find must be absent from the target dir too;
* each distribution or entry-point group it asked ``importlib.metadata`` about must be the
  same in both target dirs.

Otherwise another server is started for that target dir (a few per run: the releases'
target dirs fall into a handful of such classes), or, when warm starts are off
(``PATCHER_WARM_CHECKS=0``) or a server fails, the check runs in a fresh process as before.
``tests/test_warm.py`` checks that warm and fresh runs give the same report.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import signal
import subprocess
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path

from packaging.utils import canonicalize_name

FORKSERVER = Path(__file__).with_name("forkserver.py")
#: Idle servers kept for reuse; more are closed, the least recently used first.
KEEP = 4
READY_TIMEOUT = 300.0
#: After Ctrl-C, how long a check child may take to end on its own KeyboardInterrupt (its
#: scratch directory removed) before it is killed: what ``subprocess.run`` allows a fresh one.
GRACE = 0.25


def enabled() -> bool:
    return os.environ.get("PATCHER_WARM_CHECKS", "1") != "0"


# -- what a target dir provides --------------------------------------------------------------

_SUFFIX = re.compile(r"^([A-Za-z_][\w]*)(\.py|\..*\.(so|pyd)|\.so|\.pyd)?$")


@lru_cache(maxsize=512)
def _tops(directory: str) -> frozenset[str]:
    """The top-level module names importable from ``directory`` (packages, namespace
    packages, ``.py`` files and extension modules)."""
    names = set()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return frozenset()
    for entry in entries:
        if entry.name.endswith((".dist-info", ".egg-info", ".data")) or entry.name == "__pycache__":
            continue
        match = _SUFFIX.match(entry.name)
        if not match:
            continue
        if entry.is_dir() and match.group(2) is None:
            names.add(entry.name)
        elif entry.is_file() and match.group(2) is not None:
            names.add(match.group(1))
    return frozenset(names)


@lru_cache(maxsize=512)
def _dists(directory: str) -> dict[str, tuple[str, frozenset[str], str]]:
    """Per distribution in ``directory`` (normalised name): its ``.dist-info`` name, its
    files with their hashes (``RECORD``, without the dist-info's own files) and its
    ``entry_points.txt``."""
    found = {}
    try:
        entries = [e for e in os.scandir(directory) if e.name.endswith(".dist-info") and e.is_dir()]
    except OSError:
        return {}
    for entry in entries:
        path = Path(entry.path)
        try:
            record = (path / "RECORD").read_text(encoding="utf-8", errors="replace")
        except OSError:
            record = ""
        files = frozenset(
            line
            for line in record.splitlines()
            if "," in line and ".dist-info/" not in line.split(",")[0] and line.split(",")[1]
        )
        try:
            points = (path / "entry_points.txt").read_text(encoding="utf-8", errors="replace")
        except OSError:
            points = ""
        name = entry.name[: -len(".dist-info")].rpartition("-")[0] or entry.name
        found[canonicalize_name(name)] = (entry.name, files, points)
    return found


def _owner(directory: str, top: str) -> tuple[str, frozenset[str]] | None:
    """The distribution of ``directory`` that installed module ``top``: (name, files)."""
    for name, files, _ in _dists(directory).values():
        for line in files:
            first = line.split(",")[0].split("/")[0]
            if first == top or first == f"{top}.py" or first.startswith(f"{top}."):
                return name, files
    return None


def _group(points: str, group: str) -> list[str]:
    lines, inside = [], False
    for line in points.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            inside = stripped == f"[{group}]"
        elif inside and stripped:
            lines.append(stripped)
    return lines


def incompatibility(ready: dict, server_target: str, target: str) -> str | None:
    """Why a child of a server warmed up with ``server_target`` on its path would not be
    the fresh process of ``target`` (None: it would be)."""
    if os.path.realpath(server_target) == os.path.realpath(target):
        return None
    tops, root = _tops(target), os.path.realpath(server_target) + os.sep
    for top, origin in sorted(ready.get("loaded", {}).items()):
        inside = bool(origin) and os.path.realpath(origin).startswith(root)
        if not inside:
            if top in tops:
                return (
                    f"{target} provides {top}, which the warm-up imported from {origin or 'the interpreter'}"
                )
            continue
        mine, theirs = _owner(server_target, top), _owner(target, top)
        if mine is None or theirs is None or mine[1] != theirs[1]:
            what = theirs[0] if theirs else "nothing"
            return f"{top}: {mine[0] if mine else 'no distribution'} was imported, {target} has {what}"
    for name in ready.get("missed", []):
        top = name.partition(".")[0]
        if top not in ready.get("loaded", {}) and top in tops:
            return f"{target} provides {top}, which the warm-up looked for in vain"
    mine_dists, their_dists = _dists(server_target), _dists(target)
    for asked in ready.get("metadata", []):
        kind, _, what = asked.partition(":")
        if asked == "*":
            if {k: v[1] for k, v in mine_dists.items()} != {k: v[1] for k, v in their_dists.items()}:
                return "the warm-up listed every distribution, and the two target dirs differ"
        elif kind == "dist":
            mine, theirs = mine_dists.get(canonicalize_name(what)), their_dists.get(canonicalize_name(what))
            if (mine and mine[1]) != (theirs and theirs[1]):
                return f"the warm-up asked for distribution {what}, which differs in {target}"
        elif kind == "group":

            def points(dists, group=what):
                return sorted(p for _, _, text in dists.values() for p in _group(text, group))

            if what == "*" or points(mine_dists) != points(their_dists):
                return f"the warm-up read entry points ({what}), which differ in {target}"
    return None


# -- one server ------------------------------------------------------------------------------


class ServerError(RuntimeError):
    """The server died or spoke nonsense; the run falls back to a fresh process."""


class Server:
    """``forkserver.py`` run by ``python`` with ``environ`` and ``target`` on PYTHONPATH."""

    def __init__(
        self, python: str, environ: dict[str, str], target: str, ready_timeout: float = READY_TIMEOUT
    ) -> None:
        self.python, self.target = python, target
        self.key = _key(python, environ)
        self._scratch = tempfile.TemporaryDirectory(prefix="patcher-warm-")
        self._stderr = Path(self._scratch.name) / "warm-up.stderr"
        env = {**environ, "PYTHONPATH": target}
        with open(self._stderr, "w") as err:
            self.proc = subprocess.Popen(
                [python, str(FORKSERVER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                cwd=self._scratch.name,
            )
        self.child: int | None = None  # the pid of the check running now
        self._closed = False
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._buffer = b""
        try:
            message = self._read(time.monotonic() + ready_timeout)
            if not isinstance(message, dict) or not isinstance(message.get("ready"), dict):
                raise ServerError(f"the warm check server began with {str(message)[:200]!r}")
        except BaseException:
            self.close()
            raise
        self.ready = message["ready"]
        self.warm_up_stderr = self._stderr.read_text(errors="replace")

    def _read(self, deadline: float | None) -> dict:
        """The next JSON line of the server; ``TimeoutError`` past ``deadline``."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if wait is not None and wait == 0.0:
                raise TimeoutError
            readable, _, _ = select.select([fd], [], [], wait)
            if not readable:
                raise TimeoutError
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ServerError(f"the warm check server ended: {self._stderr_tail()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError as error:
            raise ServerError(f"the warm check server said {line[:200]!r}") from error

    def _stderr_tail(self) -> str:
        lines = self._stderr.read_text(errors="replace").strip().splitlines() if self._stderr.exists() else []
        return lines[-1] if lines else "no message"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, argv: list[str], *, cwd: str, environ: dict[str, str], target: str, timeout: float | None):
        """Run ``python argv`` with ``PYTHONPATH=target`` as a child: a ``CompletedProcess``
        with text stdout and stderr, or ``subprocess.TimeoutExpired``."""
        with tempfile.TemporaryDirectory(prefix="patcher-warm-run-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {
                "argv": argv,
                "path": target,
                "replace": self.target,
                "cwd": cwd,
                "env": environ,
                "stdout": str(out),
                "stderr": str(err),
                "sigint": "ignore" if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else "default",
            }
            try:
                self.proc.stdin.write((json.dumps(request) + "\n").encode())
                self.proc.stdin.flush()
                pid = self.child = self._read(time.monotonic() + 60)["pid"]
            except (OSError, TimeoutError, KeyError) as error:
                raise ServerError(f"the warm check server did not fork: {error}") from error
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                done = self._read(deadline)
            except TimeoutError:
                _kill(pid)
                self._read(time.monotonic() + 60)
                raise subprocess.TimeoutExpired(
                    [self.python, *argv], timeout, output=_text(out), stderr=self.warm_up_stderr + _text(err)
                ) from None
            except BaseException:  # interrupted: the child must not outlive us
                try:  # but it may finish its own Ctrl-C first, as a fresh one would
                    self._read(time.monotonic() + GRACE)
                except BaseException:
                    pass
                _kill(pid)
                self.close()
                raise
            finally:
                self.child = None
            return subprocess.CompletedProcess(
                [self.python, *argv], done["returncode"], _text(out), self.warm_up_stderr + _text(err)
            )

    def kill(self) -> None:
        """Kill the running check, if any, and the server (from any thread: one waiting on
        this server then finds it ended)."""
        if self.child is not None:
            _kill(self.child)
        try:
            self.proc.kill()
        except OSError:
            pass

    def close(self) -> None:
        """End the server (killed: an idle one holds nothing worth a clean exit, and its
        interpreter's shutdown with torch loaded takes a second or more) and remove its scratch."""
        if self._closed:
            return
        self._closed = True
        with _LIVE_LOCK:
            _LIVE.discard(self)
        self.proc.kill()
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._scratch.cleanup()


#: Every server not closed yet, idle or busy or starting: what Ctrl-C must stop.
_LIVE: set[Server] = set()
_LIVE_LOCK = threading.Lock()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


#: Variables a server's warm-up cannot have read, so a server serves runs whatever their
#: values: ``PYTHONPATH`` (the release's, put in place by the child) and ``PYTEST_CURRENT_TEST``,
#: which pytest sets to the running test's name, a new value for every test (only
#: ``torch.testing._internal`` and ``transformers.testing_utils`` read it, neither imported by
#: the warm-up).  The child still runs with every variable as given.
_KEYLESS = frozenset({"PYTHONPATH", "PYTEST_CURRENT_TEST"})


def _key(python: str, environ: dict[str, str]) -> tuple:
    return (python, tuple(sorted((k, v) for k, v in environ.items() if k not in _KEYLESS)))


# -- the pool --------------------------------------------------------------------------------


class Pool:
    """Idle servers, taken by one run at a time (``verify --all --jobs N`` runs N at once)."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self.idle: list[Server] = []
        self.lock = threading.Lock()
        self.started = self.warm = self.fresh = 0
        #: interpreters that could not start a server (not a python, a stand-in): run fresh
        self.broken: set[str] = set()
        #: set by ``interrupt``: no check starts any more
        self.interrupted = False

    def stop_if_interrupted(self) -> None:
        if self.interrupted:
            raise KeyboardInterrupt

    def take(self, python: str, environ: dict[str, str], target: str, timeout: float | None = None) -> Server:
        """An idle server whose children are ``target``'s fresh processes, or a new one
        (started within ``timeout``).  Raises ``ServerError`` when ``python`` cannot run one."""
        key = _key(python, environ)
        with self.lock:
            self.stop_if_interrupted()
            if python in self.broken:
                raise ServerError(f"{python} could not start a warm check server before")
            for server in reversed(self.idle):
                if (
                    server.key == key
                    and server.alive()
                    and incompatibility(server.ready, server.target, target) is None
                ):
                    self.idle.remove(server)
                    return server
            self.started += 1
        try:
            return Server(python, environ, target, min(READY_TIMEOUT, timeout or READY_TIMEOUT))
        except (ServerError, TimeoutError, OSError):
            with self.lock:
                self.stop_if_interrupted()  # killed by interrupt(), not broken
                self.broken.add(python)
            raise

    def give(self, server: Server) -> None:
        with self.lock:
            if not server.alive():
                server.close()
                return
            self.idle.append(server)
            surplus = self.idle[: -self.keep] if len(self.idle) > self.keep else []
            del self.idle[: len(surplus)]
        for old in surplus:
            old.close()

    def close(self) -> None:
        """Close the idle servers (killed: see ``Server.close``)."""
        with self.lock:
            idle, self.idle = self.idle, []
        for server in idle:
            server.close()

    def interrupt(self) -> None:
        """After Ctrl-C: no check starts any more, and every server is killed with the check
        it runs.  A check that Ctrl-C reached is ending anyway, but one a server was still
        starting for, or one forked just after the signal, would run to its end; and threads
        waiting on a server (``verify --all --jobs N``) then return at once, with
        KeyboardInterrupt."""
        with self.lock:
            self.interrupted = True
            idle, self.idle = self.idle, []
        with _LIVE_LOCK:
            live = list(_LIVE)
        # the checks Ctrl-C reached end on their own, their scratch removed, as fresh ones would
        deadline = time.monotonic() + GRACE
        while any(server.child is not None for server in live) and time.monotonic() < deadline:
            time.sleep(0.01)
        for server in live:
            server.kill()
        for server in idle:  # a busy or starting one is closed by the thread using it, which
            server.close()  # finds it ended (closing it here would pull its pipe from under it)


POOL = Pool()


def _close_at_exit() -> None:
    try:
        POOL.close()
    except KeyboardInterrupt:  # Ctrl-C while patcher ends: stop what is left, quietly
        POOL.interrupt()


atexit.register(_close_at_exit)


def run(
    cmd: list[str], *, environ: dict[str, str], cwd: str, timeout: float | None
) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True, env=environ, cwd=cwd,
    timeout=timeout)``, forked from a warm server when warm starts are on and ``environ``
    has a ``PYTHONPATH`` (the release's target dir)."""
    target = environ.get("PYTHONPATH", "")
    if not enabled() or not target or os.pathsep in target:
        return _fresh(cmd, environ, cwd, timeout)
    try:
        server = POOL.take(cmd[0], environ, target, timeout)
    except (ServerError, TimeoutError, OSError):
        return _fresh(cmd, environ, cwd, timeout)
    try:
        result = server.run(cmd[1:], cwd=cwd, environ=environ, target=target, timeout=timeout)
    except ServerError:
        server.close()
        return _fresh(cmd, environ, cwd, timeout)
    except subprocess.TimeoutExpired:
        POOL.give(server)
        raise
    POOL.give(server)
    with POOL.lock:
        POOL.warm += 1
    return result


def _fresh(cmd, environ, cwd, timeout) -> subprocess.CompletedProcess:
    with POOL.lock:
        POOL.stop_if_interrupted()  # a server killed by Ctrl-C is not a reason to run fresh
        POOL.fresh += 1
    return subprocess.run(cmd, capture_output=True, text=True, env=environ, cwd=cwd, timeout=timeout)
