"""``patcher update`` against a fake package index: nothing new, pre-releases and yanked releases
skipped, a supported release pinned and locked, a drifting one, one that fails verification
and one whose environment cannot be built (none of those pinned or locked), and the exit
code of each; verification on every toolchain: passed on both, refused by vacc but passed on
current (supported), failed on vacc only (fails verification), refused by current (error),
and ``--toolchain`` restricting them.

The unit tests serve tiny fake wheels (whose Gemma files drift in every codemod).  The tests
marked ``network`` serve the real 5.24.0 upstream files (from the user cache, fetched once),
as they are or with one unit reshaped (``tests/next_release.py``); generation and locking are
real there, verification is replaced by a fake at ``patcher.verify.release.verify_output``, below
the command's own ``verify_release`` (so no toolchain is ever built or downloaded).  The test
marked ``verify`` runs the real verification on the current toolchain on 5.24.0 as if it were
new, with the real index; its ``vacc`` twin runs both toolchains for real.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fake_index import FakePip, wheel_bytes
from next_release import BASE, Index, releases, without_post_init
from packaging.version import Version

from patcher.ci import update
from patcher.cli import main
from patcher.errors import UsageError
from patcher.series import lockfile
from patcher.series.lockfile import Entry, Lock
from patcher.upstream import pins, pypi
from patcher.verify import release, toolchains
from patcher.verify.envs import EnvError, ToolchainRefused
from patcher.verify.release import CHECK_NAMES, CONFIGS, CheckResult, VerifyReport

N_CHECKS = len(CHECK_NAMES) * len(CONFIGS)
ALL_PASS = f"{N_CHECKS}/{N_CHECKS}"
ALL = list(toolchains.TOOLCHAINS)  # the toolchains update verifies on by default
REASON = "it requires torch>=2.2, the toolchain has torch 2.1.0; its Gemma does not run there (x)"


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Verification replaced where it would start the check process (so no environment of any
    toolchain is built): every check passes, unless the test names failing checks, a release
    a toolchain refuses, or a release whose environment cannot be built.  ``fail``, ``refuse``
    and ``env`` are keyed by version (every toolchain) or by (version, toolchain name)."""
    state: dict = {"calls": [], "models": [], "fail": {}, "refuse": {}, "env": set()}

    def verify_output(version, out_dir, *, progress=None, toolchain=toolchains.CURRENT, model="gemma", **kw):
        files = sorted(p.name for p in Path(out_dir).iterdir())
        state["calls"].append((version, toolchain.name, files, os.environ.get("OMP_NUM_THREADS")))
        state["models"].append(model)
        key = (version, toolchain.name)
        if version in state["env"] or key in state["env"]:
            raise EnvError(f"could not build the environment for transformers {version}: no wheel")
        if key in state["refuse"]:
            raise ToolchainRefused(version, toolchain.name, state["refuse"][key])
        failing = state["fail"].get(key, state["fail"].get(version, {}))
        checks = [CheckResult(n, c, failing.get(n, "pass"), "detail") for n in CHECK_NAMES for c in CONFIGS]
        report = VerifyReport(version, checks, seconds=0.1)
        report.toolchain = toolchain.name
        return report

    monkeypatch.setattr(release, "verify_output", verify_output)
    return state


def results(release: dict) -> list[tuple[str, str]]:
    """A release's verification per toolchain, from ``update --json``."""
    return [(t["toolchain"], t["result"]) for t in release["toolchains"]]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["update", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- unit: tiny fake wheels, no network ----------------------------------------------------------


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Pins dir with 5.24.0 (a tiny fake release) and a lock; a fake index listing it."""
    monkeypatch.setenv("PATCHER_PINS_DIR", str(tmp_path / "pins"))
    monkeypatch.setenv("PATCHER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(pypi, "_releases_memo", None)
    wheels = {v: wheel_bytes(tmp_path / "w" / v, v) for v in ("5.24.0", "5.25.0", "5.25.1", "5.26.0rc1")}
    fake = FakePip(wheels)
    monkeypatch.setattr(pypi, "run_pip", fake)
    listed = releases(("5.23.0", False), ("5.24.0", False))
    monkeypatch.setattr(pypi, "pypi_releases", lambda: dict(listed))
    pins.pin_release("5.24.0")
    lockfile.write_lock(Lock({"5.24.0": Entry(drift=("attention",))}, "0" * 64), lockfile.lock_path())
    fake.calls.clear()
    pins_dir = tmp_path / "pins"
    return {"listed": listed, "pip": fake, "before": {p.name: p.read_bytes() for p in pins_dir.iterdir()}}


def unchanged(tiny: dict, tmp_path: Path) -> bool:
    return {p.name: p.read_bytes() for p in (tmp_path / "pins").iterdir()} == tiny["before"]


def test_nothing_new_exits_0_and_touches_nothing(tiny, tmp_path, checks, capsys):
    code, out, err = run(capsys)
    assert code == 0, err
    assert (
        out == "update: nothing new: 5.24.0 is the newest pin and the index lists no newer release to pin\n"
    )
    assert tiny["pip"].calls == [] and checks["calls"] == []
    assert unchanged(tiny, tmp_path)


def test_pre_releases_and_yanked_releases_are_skipped(tiny, tmp_path, checks, capsys):
    tiny["listed"].update(releases(("5.25.0", True), ("5.26.0rc1", False), ("5.26.0.dev3", False)))
    code, out, _ = run(capsys, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["releases"] == [] and doc["exit_code"] == 0 and doc["lock_changed"] is False
    assert doc["skipped"] == [
        {"version": "5.25.0", "reason": "yanked (broken)"},
        {"version": "5.26.0.dev3", "reason": "pre-release"},
        {"version": "5.26.0rc1", "reason": "pre-release"},
    ]
    assert tiny["pip"].calls == [] and checks["calls"] == []
    assert unchanged(tiny, tmp_path)
    code, out, _ = run(capsys)
    assert out.startswith("update: nothing new: 5.24.0 is the newest pin")
    assert "(skipped: 5.25.0 yanked (broken), 5.26.0.dev3 pre-release, 5.26.0rc1 pre-release)" in out


def test_a_drifting_release_exits_3_and_is_neither_pinned_nor_locked(tiny, tmp_path, checks, capsys):
    tiny["listed"].update(releases(("5.25.0", False)))
    code, out, err = run(capsys, "--json")
    assert code == 3
    (release,) = json.loads(out)["releases"]
    assert release["version"] == "5.25.0" and release["state"] == "drift"
    assert release["pinned"] is False and release["locked"] is False and release["pin"] is None
    assert "attention" in release["drift"]
    assert release["drift_report"].startswith("drift: codemod library-imports")
    assert tiny["pip"].calls and "transformers==5.25.0" in tiny["pip"].calls[0]
    assert checks["calls"] == []  # drift is never verified
    assert unchanged(tiny, tmp_path)
    assert "[1/1] transformers 5.25.0: drift: " in err


def test_the_text_report_shows_the_drift_lines(tiny, tmp_path, checks, capsys):
    tiny["listed"].update(releases(("5.25.0", False)))
    code, out, _ = run(capsys)
    lines = out.splitlines()
    assert code == 3
    assert lines[0] == "update: 1 new release after 5.24.0; toolchains: current, vacc"
    assert lines[1].startswith("5.25.0  drift               library-imports, ")
    assert lines[1].endswith("; not pinned, not locked")
    assert lines[2].startswith("    drift: codemod library-imports, target ")
    assert lines[-1] == "update: 0 supported, 1 drift, 0 fail verification, 0 could not be looked at"


def test_the_index_unreachable_is_one_line_exit_4(tiny, tmp_path, monkeypatch, capsys):
    def unreachable():
        raise OSError("no route to host")

    monkeypatch.setattr(pypi, "pypi_releases", unreachable)
    monkeypatch.setattr(pypi, "run_pip", FakePip(offline=True))
    code, out, err = run(capsys)
    assert code == 4 and out == ""
    errors = [line for line in err.splitlines() if not line.startswith("patcher: warning:")]
    assert errors == [
        "patcher: cannot list transformers releases (no network?): No matching distribution found "
        "for transformers==1; connect to the package index, or pin an exact version"
    ]
    assert unchanged(tiny, tmp_path)


def test_without_a_lock_it_refuses_before_downloading(tiny, tmp_path, checks, capsys):
    tiny["listed"].update(releases(("5.25.0", False)))
    (tmp_path / "pins" / "lock.json").unlink()
    code, out, err = run(capsys)
    assert code == 2 and out == ""
    assert err.startswith("patcher: there is no lock at ") and len(err.splitlines()) == 1
    assert tiny["pip"].calls == []


@pytest.mark.parametrize(
    ("states", "code"),
    [
        ((), 0),
        (("supported",), 0),
        (("supported", "error"), 4),
        (("error", "drift"), 3),
        (("drift", "failed", "error", "supported"), 6),
    ],
)
def test_the_worst_state_decides_the_exit_code(states, code):
    run = update.Update("5.24.0", [update.Outcome(f"5.25.{i}", s, "") for i, s in enumerate(states)])
    assert run.exit_code == code


def test_update_is_in_the_help_with_its_exit_codes(capsys):
    assert main(["--help"]) == 0
    assert "update" in capsys.readouterr().out
    assert main(["update", "--help"]) == 0
    out = capsys.readouterr().out
    assert "3 a new release drifts" in out and "6 a new release fails verification" in out


def checked(toolchain: str, result: str) -> update.Checked:
    """One toolchain's result; a report only where checks ran (every check passed or failed)."""
    report = None
    if result in ("passed", "failed"):
        status = "pass" if result == "passed" else "fail"
        report = VerifyReport("5.25.0", [CheckResult(n, c, status, "") for n in CHECK_NAMES for c in CONFIGS])
    return update.Checked(toolchain, result, reason="why" if report is None else None, report=report)


@pytest.mark.parametrize(
    ("current", "vacc", "state"),
    [
        ("passed", "passed", "supported"),
        ("passed", "refused", "supported"),  # vacc cannot run the release: not a failure
        ("passed", "failed", "failed"),  # a failure on any accepting toolchain
        ("failed", "passed", "failed"),
        ("failed", "refused", "failed"),
        ("failed", "error", "failed"),  # a wrong output outranks an environment error
        ("passed", "error", "error"),  # vacc's verdict unknown: not supported
        ("refused", "passed", "error"),  # it must pass on the current toolchain
        ("refused", "refused", "error"),
        ("error", "passed", "error"),
    ],
)
def test_a_release_is_supported_when_it_passes_on_current_and_every_accepting_toolchain(current, vacc, state):
    assert update.judge([checked("current", current), checked("vacc", vacc)]) == state


def test_current_alone_may_decide():
    assert update.judge([checked("current", "passed")]) == "supported"
    assert update.judge([checked("current", "refused")]) == "error"


def test_toolchain_selection_keeps_current_first_and_refuses_to_leave_it_out():
    names = lambda chosen: [t.name for t in chosen]  # noqa: E731
    assert names(update.select_toolchains(None)) == names(update.select_toolchains([])) == ALL
    assert names(update.select_toolchains(["vacc", "current", "vacc"])) == ["current", "vacc"]
    assert names(update.select_toolchains(["current"])) == ["current"]
    with pytest.raises(UsageError, match="passes on the current toolchain: add --toolchain current"):
        update.select_toolchains(["vacc"])


def test_toolchain_without_current_is_bad_usage_before_any_download(tiny, tmp_path, checks, capsys):
    tiny["listed"].update(releases(("5.25.0", False)))
    code, out, err = run(capsys, "--toolchain", "vacc")
    assert code == 2 and out == ""
    assert err == (
        "patcher: update pins a release only when it passes on the current toolchain: "
        "add --toolchain current\n"
    )
    assert tiny["pip"].calls == [] and checks["calls"] == []
    code, out, err = run(capsys, "--toolchain", "nightly")
    assert code == 2 and "invalid choice: 'nightly'" in err
    assert unchanged(tiny, tmp_path)


# --- network: the real 5.24.0 files behind the fake index -----------------------------------------


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Index:
    from releases import fetch

    base = fetch(BASE)  # the user cache (downloaded once); everything else stays in tmp_path
    return Index(tmp_path, monkeypatch, base.modeling, base.configuration)


@pytest.mark.network
def test_a_supported_release_is_pinned_locked_and_checks_clean(index, checks, capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # update sets it (conftest's default aside)
    index.publish("5.25.0")
    index.publish("5.25.1", yanked=True)
    index.publish("5.26.0rc1")
    code, out, err = run(capsys, "--json")
    assert code == 0, err
    doc = json.loads(out)
    (release,) = doc["releases"]
    assert release["state"] == "supported" and release["locked"] and release["pinned"]
    assert release["detail"] == f"verified: current passed {ALL_PASS}; vacc passed {ALL_PASS}"
    assert doc["toolchains"] == ALL == ["current", "vacc"]
    assert [(t["toolchain"], t["result"]) for t in release["toolchains"]] == [
        ("current", "passed"),
        ("vacc", "passed"),
    ]
    assert release["refused_by"] == [] and release["verify"]["toolchain"] == "current"
    assert release["shape_changes"] == {}  # the same shapes as 5.24.0
    assert release["shapes"]["strided-slice"] == ["post-init"]
    assert [s["version"] for s in doc["skipped"]] == ["5.25.1", "5.26.0rc1"]
    assert doc["lock_changed"] is True
    assert index.downloads() == ["5.25.0"]
    # verified once per toolchain, through the command's own verify_release: three files, one
    # torch thread
    files = sorted(release["outputs"])
    assert checks["calls"] == [("5.25.0", "current", files, "1"), ("5.25.0", "vacc", files, "1")]
    # pinned: the wheel's digests; locked: the outputs, and the same codemod lines as 5.24.0
    pin = index.pinned()["5.25.0"]
    assert pin.wheel == "transformers-5.25.0-py3-none-any.whl"
    assert pin.files == index.pinned()[BASE].files
    lock = lockfile.read_lock(index.lock)
    assert lock.releases[BASE] == index.base_entry
    assert lock.releases["5.25.0"].outputs == release["outputs"]
    assert lock.releases["5.25.0"].codemods == index.base_entry.codemods
    # what update locked is what `patcher lock` would lock: check finds no difference
    assert main(["check"]) == 0
    assert "all 2 pinned releases match" in capsys.readouterr().out
    # a second run the same day finds nothing new and changes nothing
    before = index.state()
    code, out, _ = run(capsys)
    assert code == 0 and out.startswith("update: nothing new: 5.25.0 is the newest pin")
    assert index.state() == before and len(checks["calls"]) == 2


@pytest.mark.network
def test_each_state_in_one_run(index, checks, capsys):
    index.publish("5.25.0")  # supported
    index.publish("5.26.0", without_post_init(index.modeling))  # drift
    index.publish("5.27.0")  # fails verification
    index.publish("5.28.0")  # its environment cannot be built
    index.publish("5.28.1rc1")  # pre-release
    index.publish("5.28.1", yanked=True)
    checks["fail"]["5.27.0"] = {"logits": "fail", "generate": "exception"}
    checks["env"].add("5.28.0")
    before = index.state()
    code, out, err = run(capsys, "--json")
    assert code == 6, err
    doc = json.loads(out)
    states = {r["version"]: r["state"] for r in doc["releases"]}
    assert states == {"5.25.0": "supported", "5.26.0": "drift", "5.27.0": "failed", "5.28.0": "error"}
    assert doc["counts"] == {"supported": 1, "drift": 1, "failed": 1, "error": 1}
    assert [s["version"] for s in doc["skipped"]] == ["5.28.1rc1", "5.28.1"]
    by = {r["version"]: r for r in doc["releases"]}
    drift = by["5.26.0"]
    assert drift["drift"] == ["strided-slice"]
    assert drift["drift_report"].startswith(
        "drift: codemod strided-slice, target GemmaModel.__init__ at modeling_gemma.py:"
    )
    assert "no top-level `self.post_init()` call in __init__" in drift["drift_report"]
    failed = by["5.27.0"]
    checks_failed = "logits: mqa, mha; generate: exception mqa, exception mha"
    assert (
        failed["failed_checks"]
        == f"on toolchain current: {checks_failed}\non toolchain vacc: {checks_failed}"
    )
    assert failed["detail"] == (
        f"current FAILED {N_CHECKS - 4}/{N_CHECKS} ({checks_failed}); "
        f"vacc FAILED {N_CHECKS - 4}/{N_CHECKS} ({checks_failed})"
    )
    assert failed["verify"]["ok"] is False
    assert "could not build the environment for transformers 5.28.0" in by["5.28.0"]["error"]
    assert [(v, t) for v, t, *_ in checks["calls"]] == [
        (v, t) for v in ("5.25.0", "5.27.0", "5.28.0") for t in ALL
    ]
    # only the supported release is pinned and locked; the base entry is as it was
    assert list(index.pinned()) == [BASE, "5.25.0"]
    lock = lockfile.read_lock(index.lock)
    assert list(lock.releases) == [BASE, "5.25.0"] and lock.releases[BASE] == index.base_entry
    assert set(index.state()) == set(before) | {"5.25.0.json"}
    for r in doc["releases"]:
        assert r["pinned"] == r["locked"] == (r["state"] == "supported")


@pytest.mark.network
def test_the_text_report_names_each_state(index, checks, capsys):
    index.publish("5.25.0", without_post_init(index.modeling))
    index.publish("5.26.0")
    code, out, _ = run(capsys)
    assert code == 3
    lines = out.splitlines()
    assert lines[0] == "update: 2 new releases after 5.24.0; toolchains: current, vacc"
    assert lines[1] == "5.25.0  drift               strided-slice; not pinned, not locked"
    assert lines[2].startswith(
        "    drift: codemod strided-slice, target GemmaModel.__init__ at modeling_gemma.py:"
    )
    assert lines[3] == (
        f"5.26.0  supported           verified: current passed {N_CHECKS}/{N_CHECKS}; "
        f"vacc passed {N_CHECKS}/{N_CHECKS}; pinned {os.path.relpath(index.pins / '5.26.0.json')}, locked"
    )
    assert lines[-1] == "update: 1 supported, 1 drift, 0 fail verification, 0 could not be looked at"


@pytest.mark.network
def test_refused_by_vacc_but_passed_on_current_is_supported(index, checks, capsys):
    index.publish("5.25.0")
    checks["refuse"][("5.25.0", "vacc")] = REASON
    code, out, err = run(capsys, "--json")
    assert code == 0, err
    doc = json.loads(out)
    (release,) = doc["releases"]
    assert release["state"] == "supported" and release["pinned"] and release["locked"]
    assert release["detail"] == f"verified: current passed {N_CHECKS}/{N_CHECKS}; vacc refuses it"
    assert release["refused_by"] == [{"toolchain": "vacc", "reason": REASON}]
    vacc = release["toolchains"][1]
    assert (vacc["toolchain"], vacc["result"], vacc["reason"], vacc["verify"]) == (
        "vacc",
        "refused",
        REASON,
        None,
    )
    assert list(index.pinned()) == [BASE, "5.25.0"]
    assert "5.25.0" in lockfile.read_lock(index.lock).releases
    assert "[1/1] transformers 5.25.0: vacc refuses it" in err
    # the text report names the toolchain and its reason under the release's line
    index.publish("5.26.0")
    checks["refuse"][("5.26.0", "vacc")] = REASON
    code, out, _ = run(capsys)
    lines = out.splitlines()
    assert code == 0
    assert lines[1].startswith(
        f"5.26.0  supported           verified: current passed {ALL_PASS}; vacc refuses it; pinned "
    )
    assert lines[2] == f"    vacc refuses it: {REASON}"


@pytest.mark.network
def test_failing_on_vacc_only_fails_verification_naming_vacc(index, checks, capsys):
    index.publish("5.25.0")
    checks["fail"][("5.25.0", "vacc")] = {"onnx_simplified": "fail"}
    before = index.state()
    code, out, err = run(capsys, "--json")
    assert code == 6, err
    (release,) = json.loads(out)["releases"]
    assert release["state"] == "failed" and not release["pinned"] and not release["locked"]
    assert release["failed_checks"] == "on toolchain vacc: onnx_simplified: mqa, mha"
    assert release["detail"] == (
        f"current passed {ALL_PASS}; vacc FAILED {N_CHECKS - 2}/{N_CHECKS} (onnx_simplified: mqa, mha)"
    )
    assert [(t["toolchain"], t["result"]) for t in release["toolchains"]] == [
        ("current", "passed"),
        ("vacc", "failed"),
    ]
    assert release["toolchains"][1]["verify"]["ok"] is False and release["verify"]["ok"] is True
    assert index.state() == before  # nothing pinned, nothing locked
    code, out, _ = run(capsys)
    assert code == 6
    assert out.splitlines()[1] == (
        f"5.25.0  fails verification  current passed {ALL_PASS}; vacc FAILED {N_CHECKS - 2}/{N_CHECKS} "
        "(onnx_simplified: mqa, mha); not pinned, not locked"
    )


@pytest.mark.network
def test_refused_by_current_or_an_environment_on_vacc_is_an_error(index, checks, capsys):
    index.publish("5.25.0")  # the current toolchain refuses it: nothing says the output works
    index.publish("5.26.0")  # vacc's environment cannot be built: its verdict is unknown
    checks["refuse"][("5.25.0", "current")] = "it requires torch>=3"
    checks["env"].add(("5.26.0", "vacc"))
    before = index.state()
    code, out, err = run(capsys, "--json")
    assert code == 4, err
    by = {r["version"]: r for r in json.loads(out)["releases"]}
    assert by["5.25.0"]["state"] == by["5.26.0"]["state"] == "error"
    assert by["5.25.0"]["error"] == "toolchain current refuses it: it requires torch>=3"
    assert by["5.25.0"]["refused_by"] == [{"toolchain": "current", "reason": "it requires torch>=3"}]
    assert by["5.26.0"]["error"].startswith("vacc: cannot verify it: could not build the environment")
    assert by["5.26.0"]["detail"].startswith(f"current passed {N_CHECKS}/{N_CHECKS}; vacc: cannot verify it")
    assert index.state() == before


@pytest.mark.network
def test_toolchain_current_alone_leaves_vacc_out(index, checks, capsys):
    index.publish("5.25.0")
    code, out, err = run(capsys, "--json", "--toolchain", "current")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["toolchains"] == ["current"]
    (release,) = doc["releases"]
    assert release["state"] == "supported"
    assert release["detail"] == f"verified: current passed {N_CHECKS}/{N_CHECKS}"
    assert [t for _, t, *_ in checks["calls"]] == ["current"]


# --- verify: the real verification --------------------------------------------------------------


_INDEX = pypi.pypi_releases  # the real one, whatever a test puts in its place


def as_if_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, newest: str, new: str) -> Path:
    """A pins dir whose newest pin is ``newest`` (its committed pin and lock entry), and the
    real index cut at ``new``: ``new`` looks like the one new release."""
    committed = pins.load_pins(pins.PINS_DIR)
    locked = lockfile.read_lock(lockfile.lock_path(pins.PINS_DIR))
    folder = tmp_path / "pins"
    pins.write_pin(committed[newest], folder)
    lockfile.write_lock(Lock({newest: locked.releases[newest]}, locked.series_digest), folder / "lock.json")
    monkeypatch.setenv("PATCHER_PINS_DIR", str(folder))
    monkeypatch.setattr(pypi, "_releases_memo", None)
    real = _INDEX()
    cut = {v: r for v, r in real.items() if pypi.is_final(v) and Version(v) <= Version(new)}
    monkeypatch.setattr(pypi, "pypi_releases", lambda: cut)
    return folder


@pytest.mark.verify
@pytest.mark.network
def test_update_verifies_for_real_and_locks_what_the_committed_lock_says(tmp_path, monkeypatch, capsys):
    """5.24.0 looked at as if it were new: the newest pin is 5.23.0 and the real index is cut
    at 5.24.0.  pip downloads the real wheel, the real check script runs in 5.24.0's own
    environment on the current toolchain, and the lock entry written equals the committed one."""
    folder = as_if_new(tmp_path, monkeypatch, "5.23.0", "5.24.0")
    code, out, err = run(capsys, "--json", "--toolchain", "current")
    (release,) = json.loads(out)["releases"]
    assert code == 0, (release["detail"], err[-2000:])
    assert release["version"] == "5.24.0" and release["state"] == "supported"
    assert release["verify"]["versions"]["transformers"] == "5.24.0"
    assert pins.load_pins(folder)["5.24.0"] == pins.load_pins(pins.PINS_DIR)["5.24.0"]
    locked = lockfile.read_lock(lockfile.lock_path(pins.PINS_DIR))
    assert lockfile.read_lock(folder / "lock.json").releases["5.24.0"] == locked.releases["5.24.0"]


@pytest.mark.vacc
@pytest.mark.verify
@pytest.mark.network
def test_update_on_both_toolchains_for_real(tmp_path, monkeypatch, capsys, request):
    """As above with every toolchain, 4.55.4 and 5.24.0 as the new releases: vacc verifies
    4.55.4 and refuses 5.24.0 (it declares torch>=2.6), and both are supported."""
    if "vacc" not in (request.config.option.markexpr or "") and os.environ.get("PATCHER_VACC") != "1":
        pytest.skip(
            "the vacc toolchain downloads about 2.5 GB once: select it with -m vacc or PATCHER_VACC=1"
        )
    folder = as_if_new(tmp_path, monkeypatch, "4.55.3", "4.55.4")
    code, out, err = run(capsys, "--json")
    (release,) = json.loads(out)["releases"]
    assert code == 0, (release["detail"], err[-2000:])
    assert results(release) == [("current", "passed"), ("vacc", "passed")]
    assert release["toolchains"][1]["verify"]["versions"]["torch"].startswith("2.1.0")
    folder = as_if_new(tmp_path / "again", monkeypatch, "5.23.0", "5.24.0")
    code, out, err = run(capsys, "--json")
    (release,) = json.loads(out)["releases"]
    assert code == 0, (release["detail"], err[-2000:])
    assert release["state"] == "supported" and results(release) == [
        ("current", "passed"),
        ("vacc", "refused"),
    ]
    (refused,) = release["refused_by"]
    assert refused["toolchain"] == "vacc" and "requires torch>=2.6" in refused["reason"]
    assert "5.24.0" in lockfile.read_lock(folder / "lock.json").releases


# --- --model mistral: the same run on Mistral's pins and lock ---------------------------------------


def without_mistral_post_init(modeling: str) -> str:
    """``modeling`` with the ``self.post_init()`` of ``MistralModel.__init__`` removed (only
    ``strided-slice`` anchors there, as for Gemma in ``next_release.without_post_init``)."""
    start = modeling.index("class MistralModel(")
    end = modeling.index("\nclass ", start + 1)
    at = modeling.index("        self.post_init()\n", start)
    assert at < end
    return modeling[:at] + modeling[at + len("        self.post_init()\n") :]


class MistralIndex:
    """A tmp pins dir holding the committed gemma and mistral pins of BASE and their lock
    entries, a tmp cache holding BASE's files of both families, and a fake index whose wheels
    carry both families' files (a new release's Gemma files are BASE's)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from fake_index import make_wheel

        from patcher.upstream import fetch
        from patcher.upstream.cache import BlobCache

        self.root, self.pins = root, root / "pins"
        self.gemma = fetch.fetch(BASE)  # the user cache (downloaded once)
        self.mistral = fetch.fetch(BASE, model="mistral")
        self.make_wheel = make_wheel
        self.listed = releases((BASE, False))
        monkeypatch.setenv("PATCHER_PINS_DIR", str(self.pins))
        monkeypatch.setenv("PATCHER_CACHE_DIR", str(root / "cache"))
        monkeypatch.setattr(pypi, "_releases_memo", None)
        self.pip = FakePip()
        monkeypatch.setattr(pypi, "run_pip", self.pip)
        monkeypatch.setattr(pypi, "pypi_releases", lambda: dict(self.listed))
        blobs = BlobCache(root / "cache")
        for model, up in (("gemma", self.gemma), ("mistral", self.mistral)):
            committed = pins.load_pins(pins.PINS_DIR, model=model)[BASE]
            pins.write_pin(committed, self.pins, model=model)
            blobs.put(up.modeling.encode())
            blobs.put(up.configuration.encode())
            locked = lockfile.read_lock(lockfile.lock_path(pins.PINS_DIR, model=model))
            entry = Lock({BASE: locked.releases[BASE]}, locked.series_digest)
            lockfile.write_lock(entry, lockfile.lock_path(self.pins, model=model))
        self.base_entry = lockfile.read_lock(self.lock).releases[BASE]

    @property
    def lock(self) -> Path:
        return lockfile.lock_path(self.pins, model="mistral")

    def publish(self, version: str, modeling: str | None = None, *, mistral_files: bool = True) -> None:
        folder = self.root / "wheels" / version
        folder.mkdir(parents=True)
        mistral = {
            "transformers/models/mistral/modeling_mistral.py": (modeling or self.mistral.modeling).encode(),
            "transformers/models/mistral/configuration_mistral.py": self.mistral.configuration.encode(),
        }
        mistral = mistral if mistral_files else {}
        wheel = self.make_wheel(
            folder, version, self.gemma.modeling.encode(), self.gemma.configuration.encode(), mistral
        )
        self.pip.wheels[version] = wheel.read_bytes()
        self.listed[version] = pypi.Release(version, False, None)

    def state(self, model: str) -> dict[str, bytes]:
        folder = pins.pins_dir(self.pins, model)
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def mistral_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MistralIndex:
    return MistralIndex(tmp_path, monkeypatch)


@pytest.mark.network
def test_mistral_a_supported_release_is_pinned_and_locked_in_mistrals_dir_only(mistral_index, checks, capsys):
    index = mistral_index
    index.publish("5.25.0")
    gemma_before = index.state("gemma")
    code, out, err = run(capsys, "--model", "mistral", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["model"] == "mistral" and doc["newest_pin"] == BASE
    (release,) = doc["releases"]
    assert release["state"] == "supported" and release["pinned"] and release["locked"]
    assert release["pin"].endswith(os.path.join("pins", "mistral", "5.25.0.json"))
    assert sorted(release["outputs"]) == [
        "configuration_mistral_vacc.py",
        "modeling_mistral_vacc.py",
        "quantization_vacc.py",
    ]
    assert release["shape_changes"] == {} and release["shapes"]["attention"]
    # verified against upstream's Mistral, on both toolchains, with the Mistral files
    assert [(v, t) for v, t, *_ in checks["calls"]] == [("5.25.0", "current"), ("5.25.0", "vacc")]
    assert checks["models"] == ["mistral", "mistral"]
    # pinned and locked for mistral; gemma's pins and lock as they were
    pin = pins.load_pins(index.pins, model="mistral")["5.25.0"]
    assert set(pin.files) == {"modeling_mistral.py", "configuration_mistral.py"}
    assert pin.files == pins.load_pins(index.pins, model="mistral")[BASE].files
    lock = lockfile.read_lock(index.lock)
    assert list(lock.releases) == [BASE, "5.25.0"] and lock.releases[BASE] == index.base_entry
    assert lock.releases["5.25.0"].outputs == release["outputs"]
    assert index.state("gemma") == gemma_before
    assert "5.25.0" not in pins.load_pins(index.pins)
    # what update locked is what `patcher lock --model mistral` would lock
    assert main(["check", "--model", "mistral"]) == 0
    assert "all 2 pinned releases match" in capsys.readouterr().out
    # the gemma run still sees 5.25.0 as new (its own newest pin is BASE); mistral has nothing new
    code, out, _ = run(capsys, "--model", "mistral")
    assert code == 0
    assert out == (
        "update --model mistral: nothing new: 5.25.0 is the newest mistral pin and the index lists "
        "no newer release to pin\n"
    )


@pytest.mark.network
def test_mistral_a_drifting_release_is_neither_pinned_nor_locked(mistral_index, checks, capsys):
    index = mistral_index
    index.publish("5.25.0", without_mistral_post_init(index.mistral.modeling))
    before = {m: index.state(m) for m in ("gemma", "mistral")}
    code, out, err = run(capsys, "--model", "mistral", "--json")
    assert code == 3, err
    (release,) = json.loads(out)["releases"]
    assert release["state"] == "drift" and release["drift"] == ["strided-slice"]
    assert not release["pinned"] and not release["locked"]
    assert release["drift_report"].startswith(
        "drift: codemod strided-slice, target MistralModel.__init__ at modeling_mistral.py:"
    )
    assert checks["calls"] == []  # drift is never verified
    assert {m: index.state(m) for m in ("gemma", "mistral")} == before
    code, out, _ = run(capsys, "--model", "mistral")
    lines = out.splitlines()
    assert code == 3
    assert lines[0] == "update --model mistral: 1 new release after 5.24.0; toolchains: current, vacc"
    assert lines[1] == "5.25.0  drift               strided-slice; not pinned, not locked"
    assert lines[-1] == (
        "update --model mistral: 0 supported, 1 drift, 0 fail verification, 0 could not be looked at"
    )


@pytest.mark.network
def test_mistral_fails_verification_exit_6_and_wheel_without_mistral_exit_4(mistral_index, checks, capsys):
    index = mistral_index
    index.publish("5.25.0")
    index.publish("5.26.0", mistral_files=False)  # a wheel whose Mistral is gone
    checks["fail"]["5.25.0"] = {"logits": "fail"}
    before = index.state("mistral")
    code, out, err = run(capsys, "--model", "mistral", "--json", "--toolchain", "current")
    assert code == 6, err
    failed, gone = json.loads(out)["releases"]
    assert failed["state"] == "failed" and failed["failed_checks"] == "on toolchain current: logits: mqa, mha"
    assert gone["state"] == "error" and not gone["pinned"]
    assert "has no transformers/models/mistral/configuration_mistral.py" in gone["error"]
    assert index.state("mistral") == before
    index.listed.pop("5.25.0")
    code, out, _ = run(capsys, "--model", "mistral", "--toolchain", "current")
    assert code == 4 and out.splitlines()[1].startswith("5.26.0  error ")


def test_update_without_a_mistral_lock_refuses_before_downloading(tiny, tmp_path, checks, capsys):
    tiny["listed"].update(releases(("5.25.0", False)))
    code, out, err = run(capsys, "--model", "mistral")
    assert code == 2 and out == ""
    assert err.startswith("patcher: there is no lock at ") and "mistral/lock.json" in err
    assert err.endswith("run `patcher lock --model mistral` to write one\n")  # not gemma's lock
    assert len(err.splitlines()) == 1 and tiny["pip"].calls == []
