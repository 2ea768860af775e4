"""The test run's heartbeat (``tests/conftest.py``): what it prints after a silence."""

from __future__ import annotations

from conftest import heartbeat_line


def test_heartbeat_names_the_tests_in_flight_longest_first() -> None:
    line = heartbeat_line({"tests/b.py::t": 100.0, "tests/a.py::t": 30.0}, now=160.0, started=0.0)
    assert line == "[2m40s] still running: tests/a.py::t (2m10s), tests/b.py::t (1m00s)"


def test_heartbeat_between_tests() -> None:
    assert heartbeat_line({}, now=59.0, started=0.0) == "[59s] still running: (between tests)"
