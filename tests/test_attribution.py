"""Line provenance through a series, and base→head hunks attributed to codemods."""

from __future__ import annotations

from patcher.series.attribution import attributed_hunks, contributions, trace

UPSTREAM = "import torch\nclass A:\n    x = 1\nclass B:\n    y = 2\n"


def series(x_line: str, drop_b: bool) -> tuple[list[str], list[str]]:
    """Two codemods: ``rewrite-a`` replaces A's body line, ``drop-b`` removes class B."""
    step1 = UPSTREAM.replace("    x = 1\n", x_line)
    step2 = step1.replace("class B:\n    y = 2\n", "") if drop_b else step1
    return [UPSTREAM, step1, step2], ["rewrite-a", "drop-b"]


def test_trace_records_writers_origins_and_removals():
    steps, names = series("    x = 2  # vacc\n", drop_b=True)
    prov = trace(steps, names)
    assert prov.lines == ["import torch\n", "class A:\n", "    x = 2  # vacc\n"]
    assert prov.wrote == [None, None, "rewrite-a"]
    assert prov.origin == [0, 1, None]
    assert prov.removed == {2: "rewrite-a", 3: "drop-b", 4: "drop-b"}


def test_a_changed_template_is_attributed_to_its_codemod():
    base_steps, names = series("    x = 2  # vacc\n", drop_b=True)
    head_steps, _ = series("    x = 3  # vacc\n", drop_b=True)
    hunks = attributed_hunks(
        base_steps[-1],
        head_steps[-1],
        base_prov=trace(base_steps, names),
        head_prov=trace(head_steps, names),
        fromfile="a/m.py",
        tofile="b/m.py",
        order=names,
    )
    assert [h.owners for h in hunks] == [("rewrite-a",)]
    assert hunks[0].text.startswith("@@ -1,3 +1,3 @@ [rewrite-a]\n")


def test_upstream_lines_a_codemod_stops_removing_are_its_own():
    base_steps, names = series("    x = 2\n", drop_b=True)
    head_steps, _ = series("    x = 2\n", drop_b=False)
    hunks = attributed_hunks(
        base_steps[-1],
        head_steps[-1],
        base_prov=trace(base_steps, names),
        head_prov=trace(head_steps, names),
        fromfile="a",
        tofile="b",
    )
    assert [h.owners for h in hunks] == [("drop-b",)] and hunks[0].added == 2


def test_without_base_provenance_removed_only_hunks_get_the_fallback():
    base_steps, names = series("    x = 2\n    z = 0\n", drop_b=True)
    head_steps, _ = series("    x = 2\n", drop_b=True)
    hunks = attributed_hunks(
        base_steps[-1],
        head_steps[-1],
        base_prov=None,
        head_prov=trace(head_steps, names),
        fromfile="a",
        tofile="b",
        fallback=("rewrite-a",),
    )
    assert [h.owners for h in hunks] == [("rewrite-a",)]


def test_contributions_change_only_for_the_codemod_that_changed():
    one, names = series("    x = 2\n", drop_b=True)
    two, _ = series("    x = 3\n", drop_b=True)
    a, b = contributions(trace(one, names), UPSTREAM), contributions(trace(two, names), UPSTREAM)
    assert set(a) == {"rewrite-a", "drop-b"}
    assert a["drop-b"] == b["drop-b"] and a["rewrite-a"] != b["rewrite-a"]


def test_contributions_blank_the_release_version():
    steps = [UPSTREAM, "# from transformers 4.40.1\n" + UPSTREAM]
    other = [UPSTREAM, "# from transformers 4.40.2\n" + UPSTREAM]
    assert contributions(trace(steps, ["notice"]), UPSTREAM, "4.40.1") == contributions(
        trace(other, ["notice"]), UPSTREAM, "4.40.2"
    )
