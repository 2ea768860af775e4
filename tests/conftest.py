"""Progress for the slow tiers: a line naming the tests still running whenever the run has been
silent for ``PATCHER_TEST_HEARTBEAT`` seconds (default 45; 0 turns it off).

With ``-n 2`` xdist prints a dot when a test ends, so one long test (a release-matrix check, a
verification, a file of the mutation tier) leaves the terminal still for minutes, which looks
like a hang.  The controller learns when each worker starts and ends a test
(``pytest_runtest_logstart``/``logreport``); a daemon thread prints the tests in flight and how
long each has run.  Without xdist the test's own output is captured, so nothing is printed:
``-v`` names each test as it starts instead.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time

import pytest


def _seconds(value: float) -> str:
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def heartbeat_line(running: dict[str, float], now: float, started: float) -> str:
    """``[12m30s] still running: tests/test_x.py::test_y (1m05s), …`` (longest first)."""
    tests = sorted(running.items(), key=lambda item: item[1])
    shown = ", ".join(f"{nodeid} ({_seconds(now - since)})" for nodeid, since in tests)
    return f"[{_seconds(now - started)}] still running: {shown or '(between tests)'}"


class Heartbeat:
    """The controller-side plugin: tracks the tests in flight, speaks up after a silence."""

    def __init__(self, terminal, every: float) -> None:
        self.terminal = terminal
        self.every = every
        self.started = self.last = time.monotonic()
        self.running: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        threading.Thread(target=self._beat, name="test-heartbeat", daemon=True).start()

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        with self.lock:
            self.running[nodeid] = time.monotonic()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        with self.lock:
            self.last = time.monotonic()
            if report.when == "teardown" or (report.when == "setup" and report.skipped):
                self.running.pop(report.nodeid, None)

    def pytest_sessionfinish(self) -> None:
        self.stopped.set()

    def _beat(self) -> None:
        while not self.stopped.wait(min(5.0, self.every)):
            with self.lock:
                now = time.monotonic()
                if now - self.last < self.every:
                    continue
                self.last = now
                line = heartbeat_line(dict(self.running), now, self.started)
            if getattr(self.terminal._tw, "width_of_current_line", 0):  # after xdist's dots
                self.terminal.write("\n")
            self.terminal.write_line(line)
            self.terminal.flush()


@pytest.fixture(autouse=True)
def _sigint_disposition_is_per_test():
    """No test leaves Ctrl-C's handler changed for the next: a command run in-process that was
    interrupted ignores SIGINT afterwards (``console.interrupted``), and every process a later
    test starts would inherit that and never see Ctrl-C."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    if signal.getsignal(signal.SIGINT) is not handler:
        signal.signal(signal.SIGINT, handler)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    """Each test body runs through ``patcher.series.stack.roomy``: pytest calls it some 60
    frames deep, where CPython's frame chunks churn under libcst's recursion (the perturbations,
    the mutants, the claims); the formatting tests took 1.6 times as long there as from a shallow
    script.  patcher's own series runs are roomy already; this covers what the tests add."""
    from patcher.series.stack import roomy

    test = pyfuncitem.obj
    pyfuncitem.obj = functools.partial(roomy, test)
    try:
        return (yield)
    finally:
        pyfuncitem.obj = test


#: Check processes the tests start run with one torch thread, as ``verify --all`` runs them:
#: with two xdist workers each verifying with a thread per core, the whole run took 20m31s and
#: 37.6 CPU-minutes, with one thread 18m17s and 33.4 (2 cores, back to back).  A value you
#: set is kept.
ONE_THREAD = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.hookimpl(trylast=True)  # after the terminal reporter is registered
def pytest_configure(config: pytest.Config) -> None:
    for name in ONE_THREAD:
        os.environ.setdefault(name, "1")
    if hasattr(config, "workerinput"):  # an xdist worker: the controller reports
        return
    if not getattr(config.option, "numprocesses", None) or getattr(config.option, "dist", "no") == "no":
        return
    every = float(os.environ.get("PATCHER_TEST_HEARTBEAT", "45"))
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if every > 0 and terminal is not None:
        config.pluginmanager.register(Heartbeat(terminal, every), "patcher-heartbeat")
