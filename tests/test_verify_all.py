"""``patcher verify``: ``--all`` over every pinned release and ``--transformers`` for one, with
the generation and the check runs replaced by fakes (the real ones are tested elsewhere)."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from releases import PINNED

from patcher.cli import main
from patcher.errors import DriftError
from patcher.series import batch
from patcher.series.contract import OUTPUT_FILES, Output
from patcher.verify import command, release
from patcher.verify.envs import EnvError
from patcher.verify.release import CHECK_NAMES, CONFIGS, CheckResult, VerifyReport

DRIFT = DriftError(
    "drift: codemod attention, target GemmaAttention.forward at modeling_gemma.py:247: no\n"
    "drift: codemod sequence-lengths, target GemmaForSequenceClassification.forward at x:9: no"
)


def report(version: str, failing: dict[str, str] | None = None) -> VerifyReport:
    failing = failing or {}
    checks = [
        CheckResult(name, config, failing.get(name, "pass"), "detail")
        for name in CHECK_NAMES
        for config in CONFIGS
    ]
    return VerifyReport(version, checks, seconds=0.5)


@pytest.fixture
def fakes(monkeypatch):
    """Every pinned release generates and passes, unless the test says otherwise."""
    state = {"drift": set(), "fail": {}, "env": set(), "calls": [], "threads": []}

    def generate_many(versions, **kw):
        return {
            v: DRIFT if v in state["drift"] else Output(None, {name: f"# {v}\n" for name in OUTPUT_FILES})
            for v in versions
        }

    def verify_output(version, out_dir, *, progress=None, **kw):
        assert (out_dir / "modeling_gemma_vacc.py").read_text() == f"# {version}\n"
        state["calls"].append(version)
        state["threads"].append(os.environ.get("OMP_NUM_THREADS"))
        if progress:
            progress(f"verifying {out_dir} against transformers {version}")
        if version in state["env"]:
            raise EnvError(f"could not build the environment for transformers {version}: no wheel")
        return report(version, state["fail"].get(version))

    monkeypatch.setattr(batch, "generate_many", generate_many)
    monkeypatch.setattr(release, "verify_output", verify_output)
    return state


def test_all_pass(fakes, capsys):
    assert main(["verify", "--all"]) == 0
    captured = capsys.readouterr()
    assert fakes["calls"] == PINNED
    n = len(CHECK_NAMES) * len(CONFIGS)
    assert f"[17/115] {PINNED[16]} …" in captured.err.splitlines()
    assert f"[17/115] {PINNED[16]} passed {n}/{n} in " in captured.err
    assert "verifying " not in captured.err  # the start line says it already
    lines = captured.out.splitlines()
    assert lines[0].split() == ["release", "result", "time"]
    assert lines[1].split()[:3] == ["4.38.0", "passed", f"{n}/{n}"]
    assert len(lines) == 1 + 115 + 4
    assert lines[-3] == "passed: 4.38.0–5.24.0 (115)"
    assert lines[-1].startswith(
        "115 releases on toolchain current: 115 passed, 0 failed, 0 drift, 0 env build errors, "
        "0 refused by the toolchain; total "
    )
    assert lines[-1].endswith("s with --jobs 1")


def test_failed_checks_are_named_and_exit_1(fakes, capsys):
    fakes["fail"]["4.40.2"] = {"logits": "fail", "generate": "exception"}
    fakes["drift"].add("5.0.0")
    assert main(["verify", "--all"]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("4.40.2 "))
    n = len(CHECK_NAMES) * len(CONFIGS)
    assert f"FAILED {n - 4}/{n} (logits: mqa, mha; generate: exception mqa, exception mha)" in row
    assert "1 failed, 1 drift" in out


def test_not_applicable_checks_are_counted_apart(fakes, capsys):
    fakes["fail"]["4.40.2"] = {"token_classification": "skipped"}
    fakes["fail"]["5.24.0"] = {"token_classification": "fail"}
    assert main(["verify", "--all"]) == 1
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    n = len(CHECK_NAMES) * len(CONFIGS)
    assert f"passed {n - 2}/{n - 2}, 2 n/a" in rows["4.40.2"]
    assert f"FAILED {n - 2}/{n} (token_classification: mqa, mha)" in rows["5.24.0"]
    assert f"passed {n}/{n} " in rows["4.45.0"] + " "


def test_drift_is_not_verified_and_exits_3(fakes, capsys):
    fakes["drift"].update(PINNED[-3:])
    assert main(["verify", "--all"]) == 3
    captured = capsys.readouterr()
    assert not set(PINNED[-3:]) & set(fakes["calls"])
    row = next(line for line in captured.out.splitlines() if line.startswith(PINNED[-1] + " "))
    assert "DRIFT (attention, sequence-lengths)" in row and row.rstrip().endswith("-")
    assert f"[115/115] {PINNED[-1]} DRIFT (attention, sequence-lengths)" in captured.err
    assert "112 passed, 0 failed, 3 drift" in captured.out


def test_an_environment_that_cannot_be_built_exits_4(fakes, capsys):
    fakes["env"].add("4.39.0")
    assert main(["verify", "--all"]) == 4
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("4.39.0 "))
    assert "env build error: could not build the environment for transformers 4.39.0" in row


def test_json(fakes, capsys):
    fakes["drift"].add("5.24.0")
    assert main(["verify", "--all", "--json"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == 1 and data["jobs"] == 1
    assert data["counts"] == {"passed": 114, "failed": 0, "drift": 1, "error": 0, "refused": 0}
    assert data["toolchain"] == "current"
    first, last = data["releases"][0], data["releases"][-1]
    assert first["result"] == "passed" and first["report"]["ok"] is True
    assert last == {
        "version": "5.24.0",
        "result": "drift",
        "detail": "DRIFT (attention, sequence-lengths)",
        "seconds": 0.0,
        "drift": ["attention", "sequence-lengths"],
        "error": None,
        "report": None,
    }


def test_jobs_run_releases_at_once_in_order_with_one_thread_each(fakes, monkeypatch):
    running, peak = [0], [0]
    lock = threading.Lock()
    fake_verify = release.verify_output

    def slow(version, out_dir, **kw):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return fake_verify(version, out_dir, **kw)

    monkeypatch.setattr(release, "verify_output", slow)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    versions = PINNED[:6]
    outcomes = command.verify_all(versions, jobs=2)
    assert [o.version for o in outcomes] == versions
    assert all(o.result == "passed" for o in outcomes)
    assert peak[0] == 2
    assert set(fakes["threads"]) == {"1"}
    assert "OMP_NUM_THREADS" not in os.environ
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice wins
    command.verify_all(versions[:1], jobs=1)
    assert fakes["threads"][-1] == "3"


@pytest.mark.parametrize(
    "argv",
    [
        ["verify"],
        ["verify", "--all", "--transformers", "4.40.2"],
        ["verify", "--transformers", "4.40.2", "--jobs", "2"],
        ["verify", "--all", "--jobs", "0"],
    ],
)
def test_bad_usage_exits_2(argv, fakes, capsys):
    assert main(argv) == 2
    assert not fakes["calls"]


@pytest.mark.network
@pytest.mark.parametrize("failing, code", [(None, 0), ({"quantize": "fail"}, 1)])
def test_one_release_prints_its_table(failing, code, monkeypatch, capsys):
    def check(version, out_dir, **kw):
        assert "transformers 4.40.2" in (out_dir / "modeling_gemma_vacc.py").read_text()
        return report(version, failing)

    monkeypatch.setattr(release, "verify_output", check)
    assert main(["verify", "--transformers", "4.40"]) == code
    out = capsys.readouterr().out
    assert out == release.render_table(report("4.40.2", failing)) + "\n"
    assert main(["verify", "--transformers", "4.40", "--json"]) == code
    assert json.loads(capsys.readouterr().out) == report("4.40.2", failing).as_dict()
