"""``patcher.series.stack.roomy``: deep recursion costs the same at any call depth."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from patcher.errors import DriftError
from patcher.series import claims, engine, stack

#: In a fresh interpreter (pytest's own depth, and conftest running the tests roomy, would
#: hide what is measured): a recursion 150 frames deep, 2,000 times, from caller depths 0 to
#: 140, called plainly and through ``roomy``; the minor page faults of each, at the worst depth.
#: Each chunk CPython maps for the frames and unmaps again costs at least one fault.
SCRIPT = """
import json, resource
from patcher.series.stack import roomy

def down(n):
    return 0 if n == 0 else 1 + down(n - 1)

def work():
    for _ in range(2000):
        down(150)

def at(depth, call):
    return call() if depth == 0 else at(depth - 1, call)

def faults(call):
    worst = 0
    for depth in range(0, 141, 7):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        at(depth, call)
        worst = max(worst, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return worst

print(json.dumps({"plain": faults(work), "roomy": faults(lambda: roomy(work))}))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="counts page faults with the resource module")
def test_a_deep_recursion_does_not_churn_frame_chunks_at_any_call_depth() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    worst = json.loads(done.stdout)
    if worst["plain"] < 1000:
        pytest.skip(f"this Python does not churn frame chunks ({worst})")  # nothing to guard
    assert worst["roomy"] < 200, worst  # seen: plain 10,000, roomy 7


def test_roomy_is_the_call_it_wraps() -> None:
    def f(a, b=0, *rest, **named):
        if named.get("fail"):
            raise KeyError(a)
        return a, b, rest, named

    assert stack.roomy(f, 1, 2, 3, x=4) == (1, 2, (3,), {"x": 4})
    assert stack.roomy(dict, fn=1) == {"fn": 1}  # any keyword reaches the callee
    with pytest.raises(KeyError):
        stack.roomy(f, 1, fail=True)

    def endless(n):
        return endless(n + 1)

    with pytest.raises(RecursionError):  # the recursion limit still holds, past the chunk too
        stack.roomy(endless, 0)
    assert stack.roomy(f, 5) == (5, 0, (), {})  # and the thread's frames are fine afterwards


def test_the_series_and_the_claims_run_roomy(monkeypatch) -> None:
    """The libcst-heavy entry points go through ``roomy`` (where it measurably matters)."""
    seen = []

    def recording(fn, *args, **kwargs):
        seen.append(fn.__name__)
        return fn(*args, **kwargs)

    monkeypatch.setattr(engine, "roomy", recording)
    monkeypatch.setattr(claims, "roomy", recording)
    series = engine.load_series()
    source = "import torch\n"
    with pytest.raises(DriftError):  # not a Gemma file; roomy was on the way
        engine.run(source, series)
    assert claims.unclaimed_changes(source, source, series) == []
    assert seen == ["_run", "_unclaimed"]
