"""``patcher update`` against a fake package index: nothing new, pre-releases and yanked releases
skipped, a supported release pinned and locked, a drifting one, one that fails verification
and one whose environment cannot be built (none of those pinned or locked), and the exit
code of each.

The unit tests serve tiny fake wheels (whose Gemma files drift in every codemod).  The tests
marked ``network`` serve the real 5.24.0 upstream files (from the user cache, fetched once),
as they are or with one unit reshaped (``tests/next_release.py``); generation and locking are
real there, verification is replaced by a fake at ``patcher.verify.release.verify_output``, below
the command's own ``verify_release``.  The test marked ``verify`` runs the default, real
verification on 5.24.0 as if it were new, with the real index.
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
from patcher.series import lockfile
from patcher.series.lockfile import Entry, Lock
from patcher.upstream import pins, pypi
from patcher.verify import release
from patcher.verify.envs import EnvError
from patcher.verify.release import CHECK_NAMES, CONFIGS, CheckResult, VerifyReport

N_CHECKS = len(CHECK_NAMES) * len(CONFIGS)


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Verification replaced where it would start the check process: every check passes,
    unless the test names failing checks or a release whose environment cannot be built."""
    state: dict = {"calls": [], "fail": {}, "env": set()}

    def verify_output(version, out_dir, *, progress=None, **kw):
        files = sorted(p.name for p in Path(out_dir).iterdir())
        state["calls"].append((version, files, os.environ.get("OMP_NUM_THREADS")))
        if version in state["env"]:
            raise EnvError(f"could not build the environment for transformers {version}: no wheel")
        failing = state["fail"].get(version, {})
        checks = [CheckResult(n, c, failing.get(n, "pass"), "detail") for n in CHECK_NAMES for c in CONFIGS]
        return VerifyReport(version, checks, seconds=0.1)

    monkeypatch.setattr(release, "verify_output", verify_output)
    return state


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
    assert lines[0] == "update: 1 new release after 5.24.0"
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


# --- network: the real 5.24.0 files behind the fake index -----------------------------------------


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Index:
    from releases import fetch

    base = fetch(BASE)  # the user cache (downloaded once); everything else stays in tmp_path
    return Index(tmp_path, monkeypatch, base.modeling, base.configuration)


@pytest.mark.network
def test_a_supported_release_is_pinned_locked_and_checks_clean(index, checks, capsys):
    index.publish("5.25.0")
    index.publish("5.25.1", yanked=True)
    index.publish("5.26.0rc1")
    code, out, err = run(capsys, "--json")
    assert code == 0, err
    doc = json.loads(out)
    (release,) = doc["releases"]
    assert release["state"] == "supported" and release["locked"] and release["pinned"]
    assert release["detail"] == f"verified: passed {N_CHECKS}/{N_CHECKS}"
    assert release["shape_changes"] == {}  # the same shapes as 5.24.0
    assert release["shapes"]["strided-slice"] == ["post-init"]
    assert [s["version"] for s in doc["skipped"]] == ["5.25.1", "5.26.0rc1"]
    assert doc["lock_changed"] is True
    assert index.downloads() == ["5.25.0"]
    # verified once, through the command's own verify_release: three files, one torch thread
    assert checks["calls"] == [("5.25.0", sorted(release["outputs"]), "1")]
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
    assert index.state() == before and len(checks["calls"]) == 1


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
    assert failed["failed_checks"] == "logits: mqa, mha; generate: exception mqa, exception mha"
    assert failed["detail"] == f"FAILED {N_CHECKS - 4}/{N_CHECKS} ({failed['failed_checks']})"
    assert failed["verify"]["ok"] is False
    assert "could not build the environment for transformers 5.28.0" in by["5.28.0"]["error"]
    assert [v for v, *_ in checks["calls"]] == ["5.25.0", "5.27.0", "5.28.0"]
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
    assert lines[0] == "update: 2 new releases after 5.24.0"
    assert lines[1] == "5.25.0  drift               strided-slice; not pinned, not locked"
    assert lines[2].startswith(
        "    drift: codemod strided-slice, target GemmaModel.__init__ at modeling_gemma.py:"
    )
    assert lines[3] == f"5.26.0  supported           verified: passed {N_CHECKS}/{N_CHECKS}; pinned " + (
        f"{os.path.relpath(index.pins / '5.26.0.json')}, locked"
    )
    assert lines[-1] == "update: 1 supported, 1 drift, 0 fail verification, 0 could not be looked at"


# --- verify: the default verification, for real ---------------------------------------------------


@pytest.mark.verify
@pytest.mark.network
def test_update_verifies_for_real_and_locks_what_the_committed_lock_says(tmp_path, monkeypatch, capsys):
    """5.24.0 looked at as if it were new: the newest pin is 5.23.0 and the real index is cut
    at 5.24.0.  pip downloads the real wheel, the real check script runs in 5.24.0's own
    environment, and the lock entry written equals the committed one."""
    committed = pins.load_pins(pins.PINS_DIR)
    locked = lockfile.read_lock(lockfile.lock_path(pins.PINS_DIR))
    folder = tmp_path / "pins"
    pins.write_pin(committed["5.23.0"], folder)
    lockfile.write_lock(
        Lock({"5.23.0": locked.releases["5.23.0"]}, locked.series_digest), folder / "lock.json"
    )
    monkeypatch.setenv("PATCHER_PINS_DIR", str(folder))
    monkeypatch.setattr(pypi, "_releases_memo", None)
    real = pypi.pypi_releases()
    cut = {v: r for v, r in real.items() if pypi.is_final(v) and Version(v) <= Version("5.24.0")}
    monkeypatch.setattr(pypi, "pypi_releases", lambda: cut)
    code, out, err = run(capsys, "--json")
    (release,) = json.loads(out)["releases"]
    assert code == 0, (release["detail"], err[-2000:])
    assert release["version"] == "5.24.0" and release["state"] == "supported"
    assert release["verify"]["versions"]["transformers"] == "5.24.0"
    assert pins.load_pins(folder)["5.24.0"] == committed["5.24.0"]
    assert lockfile.read_lock(folder / "lock.json").releases["5.24.0"] == locked.releases["5.24.0"]
