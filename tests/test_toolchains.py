"""Verification toolchains: selection, their environments' paths, the pins that moved, and
the refusal of a release a toolchain cannot run (reported with its reason, exit 7, never
counted as a failure).  Fast: the environments and check processes are fakes; the real vacc
toolchain runs at the end, under the ``vacc`` marker, only when selected (it downloads about
2.5 GB once)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.version import Version
from test_verify_all import (
    fakes,  # noqa: F401 (the fixture, used by `refusing`)
    report,
)

from patcher.cli import main
from patcher.errors import UsageError
from patcher.verify import command as verify_all
from patcher.verify import envs, toolchains
from patcher.verify import release as verify
from patcher.verify.envs import EnvError, ToolchainRefused
from patcher.verify.toolchains import CURRENT, VACC

REASON = "it requires torch>=2.2, the toolchain has torch 2.1.0"


# --- selection -------------------------------------------------------------------------------


def test_the_default_toolchain_is_the_current_one():
    assert toolchains.get(None) is CURRENT and toolchains.DEFAULT == "current"
    assert toolchains.get("vacc") is VACC


def test_an_unknown_toolchain_is_a_usage_error():
    with pytest.raises(UsageError, match="known: current, vacc"):
        toolchains.get("nightly")


def test_an_unknown_toolchain_on_the_command_line_exits_2(capsys):
    assert main(["verify", "--transformers", "4.40.2", "--toolchain", "nightly"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nightly'" in err and len(err.strip().splitlines()) == 1


def test_the_vacc_toolchain_holds_the_vendor_pins_and_both_opsets():
    assert VACC.opsets == (14, 17) and CURRENT.opsets == (17,)
    assert VACC.vendor_pins == {
        "torch": "2.1.0",
        "onnx": "1.14.0",
        "onnxsim": "0.4.35",
        "onnxruntime": "1.13.1",
        "protobuf": "3.20.3",
        "accelerate": "0.25.0",
    }
    # every vendor pin is a lower bound the resolver starts from, and the base provides it
    for name, version in VACC.vendor_pins.items():
        assert f"{name}>={version}" in VACC.base_requirements
        assert name in VACC.provided
    assert "onnxsim" in CURRENT.provided and any(r.startswith("onnxsim") for r in CURRENT.base_requirements)


def test_each_toolchain_has_its_own_environments(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHER_CACHE_DIR", str(tmp_path))
    assert envs.base_dir(VACC) == tmp_path / "envs" / "base-vacc-torch2.1.0-py3.11-r1"
    assert envs.release_dir("4.40.2", VACC) == tmp_path / "envs" / "vacc-transformers-4.40.2-r1"
    # the current toolchain keeps the release dirs it had (they are reused, not rebuilt)
    assert envs.release_dir("4.40.2") == tmp_path / "envs" / "transformers-4.40.2-r2"
    assert envs.base_dir(CURRENT) != envs.base_dir(VACC)


def test_moved_pins_name_the_vendor_pin_and_the_version_taken():
    installed = {"torch": "2.1.0", "onnxruntime": "1.15.0", "onnx": "1.14.0"}
    assert envs.moved_pins(VACC, installed) == [
        "onnxruntime 1.15.0 (pinned 1.13.1: the nearest with a wheel for Python 3.11)"
    ]
    assert envs.moved_pins(CURRENT, installed) == []


def test_installed_versions_are_read_from_the_base(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHER_CACHE_DIR", str(tmp_path))
    assert envs.installed_versions(VACC) == {}
    base = envs.base_dir(VACC)
    base.mkdir(parents=True)
    (base / envs.INSTALLED).write_text(json.dumps({"toolchain": "vacc", "installed": {"torch": "2.1.0"}}))
    assert envs.installed_versions(VACC) == {"torch": "2.1.0"}


# --- refusal ---------------------------------------------------------------------------------


def probe_python(tmp_path: Path, printed: str, code: int = 0) -> Path:
    """A stand-in for the base venv's python running the probe."""
    path = tmp_path / "probe-python"
    body = f"import sys\nprint({printed!r})\nsys.stderr.write('boom: torch is broken\\n')\nsys.exit({code})\n"
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


def target_with(tmp_path: Path, *requires: str) -> Path:
    target = tmp_path / "target"
    info = target / "transformers-9.9.9.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", "Name: transformers", "Version: 9.9.9"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    return target


def test_a_declared_torch_requirement_is_read_from_the_torch_extra(tmp_path):
    target = target_with(tmp_path, "numpy>=1.17", 'torch>=2.2; extra == "torch"', 'torch; extra == "all"')
    assert str(envs.declared_torch(target)) == ">=2.2"
    assert envs.declared_torch(target_with(tmp_path / "none", "numpy")) is None


def test_a_release_declaring_a_newer_torch_is_refused_with_both_reasons(tmp_path):
    target = target_with(tmp_path, 'torch>=2.2; extra == "torch"')
    python = probe_python(tmp_path, json.dumps({"error": "ImportError: no torch"}))
    reason = envs.refusal("9.9.9", python, target, VACC)
    assert reason == (
        "it requires torch>=2.2, the toolchain has torch 2.1.0; its Gemma does not run there "
        "(ImportError: no torch)"
    )
    # the same release on a toolchain whose torch it accepts, with a probe that passes
    assert envs.refusal("9.9.9", probe_python(tmp_path, "{}"), target, CURRENT) is None


def test_a_declaration_alone_refuses_nothing(tmp_path):
    """4.52.1-4.52.4 declare torch<2.7 and run on torch 2.13: running decides."""
    target = target_with(tmp_path, 'torch<2.7,>=2.1; extra == "torch"')
    assert envs.refusal("4.52.1", probe_python(tmp_path, "{}"), target, CURRENT) is None
    python = probe_python(tmp_path, json.dumps({"error": "AttributeError: x"}))
    assert envs.refusal("4.52.1", python, target, CURRENT) == (
        "it requires torch<2.7,>=2.1, the toolchain has torch 2.13.0; its Gemma does not run there "
        "(AttributeError: x)"
    )


def test_a_probe_that_cannot_start_is_an_environment_error_not_a_refusal(tmp_path):
    python = probe_python(tmp_path, "", code=1)
    with pytest.raises(EnvError, match="could not be probed on toolchain vacc: boom: torch is broken"):
        envs.refusal("9.9.9", python, target_with(tmp_path), VACC)


def test_ensure_env_raises_the_kept_refusal_without_building(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHER_CACHE_DIR", str(tmp_path))
    for path in (envs.base_dir(VACC), envs.release_dir("4.56.0", VACC)):
        path.mkdir(parents=True)
        (path / envs.MARKER).write_text("{}\n")
    (envs.release_dir("4.56.0", VACC) / envs.REFUSED).write_text(REASON + "\n")
    monkeypatch.setattr(envs, "_build_release", lambda *a: pytest.fail("rebuilt a complete environment"))
    with pytest.raises(ToolchainRefused) as raised:
        envs.ensure_env("4.56.0", toolchain=VACC)
    assert raised.value.exit_code == 7 and raised.value.reason == REASON
    assert str(raised.value) == f"toolchain vacc refuses transformers 4.56.0: {REASON}"


def test_build_release_keeps_the_reason_of_a_refusal(tmp_path, monkeypatch):
    monkeypatch.setattr(envs, "_run", lambda cmd, what, env=None: None)
    monkeypatch.setattr(envs, "refusal", lambda version, python, target, toolchain: REASON)
    envs._build_release("4.56.0", Path(sys.executable), tmp_path / "t", VACC)
    assert (tmp_path / "t" / envs.REFUSED).read_text() == REASON + "\n"
    monkeypatch.setattr(envs, "refusal", lambda *a: None)
    envs._build_release("4.40.2", Path(sys.executable), tmp_path / "u", VACC)
    assert not (tmp_path / "u" / envs.REFUSED).exists()


def test_the_release_install_excludes_what_the_toolchain_provides(tmp_path, monkeypatch):
    seen = {}

    def run(cmd, what, env=None):
        seen["cmd"] = cmd
        seen["excludes"] = Path(cmd[cmd.index("--excludes") + 1]).read_text().split()

    monkeypatch.setattr(envs, "_run", run)
    monkeypatch.setattr(envs, "refusal", lambda *a: None)
    envs._build_release("4.40.2", Path(sys.executable), tmp_path / "t", VACC)
    assert seen["cmd"][-1] == "transformers==4.40.2"  # the vendor's accelerate, from the base
    assert set(seen["excludes"]) == set(VACC.provided) >= {"torch", "accelerate", "protobuf", "numpy"}
    envs._build_release("4.40.2", Path(sys.executable), tmp_path / "u", CURRENT)
    assert seen["cmd"][-1] == "transformers[accelerate]==4.40.2"


# --- the reports -----------------------------------------------------------------------------


def test_the_report_names_the_toolchain_its_versions_and_moved_pins(tmp_path):
    done = report("4.40.2")
    done.versions = {"transformers": "4.40.2", "torch": "2.1.0+cu121", "onnx": "1.14.0", "onnxsim": "0.4.35"}
    done.toolchain, done.opsets = "vacc", (14, 17)
    done.moved_pins = ["onnxruntime 1.15.0 (pinned 1.13.1: the nearest with a wheel for Python 3.11)"]
    text = verify.render_table(done, width=200)
    assert "transformers 4.40.2 on toolchain vacc:" in text
    assert "toolchain vacc: torch 2.1.0+cu121, onnx 1.14.0, onnxsim 0.4.35, ONNX opsets 14, 17" in text
    assert "not the vendor's pin: onnxruntime 1.15.0 (pinned 1.13.1" in text
    document = done.as_dict()
    assert document["toolchain"] == "vacc" and document["opsets"] == [14, 17]


def test_verify_output_hands_the_toolchain_opsets_to_the_check_script(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in verify.OUTPUT_FILES:
        (out / name).write_text("# generated\n")
    body = """
    opsets = args[args.index("--opsets") + 1]
    check = {"name": "onnx_prefill", "config": "mqa", "status": "pass", "detail": opsets}
    open(args[3], "w").write(json.dumps({"format": 1, "transformers": "4.40.2", "onnx": "1.14.0",
                                         "checks": [check]}))
    """
    python = tmp_path / "fake-python"
    python.write_text(f"#!{sys.executable}\nimport sys, json\nargs = sys.argv[1:]\n" + textwrap.dedent(body))
    python.chmod(0o755)
    env = envs.Env("4.40.2", python=python, target=tmp_path, toolchain="vacc")
    done = verify.verify_output("4.40.2", out, env=env, toolchain=VACC)
    assert done.checks[0].detail == "14,17" and done.toolchain == "vacc" and done.opsets == (14, 17)
    assert done.versions["onnx"] == "1.14.0"


@pytest.fixture
def refusing(fakes, monkeypatch):  # noqa: F811
    """The fakes of test_verify_all, with a toolchain that refuses 4.56.0 on."""
    real = verify.verify_output
    toolchains_seen = []

    def verify_output(version, out_dir, *, toolchain=CURRENT, **kw):
        toolchains_seen.append(toolchain.name)
        if toolchain is VACC and Version(version) >= Version("4.56"):
            raise ToolchainRefused(version, "vacc", REASON)
        return real(version, out_dir, **kw)

    monkeypatch.setattr(verify, "verify_output", verify_output)
    fakes["toolchains"] = toolchains_seen
    return fakes


def test_all_on_vacc_reports_refused_releases_apart_and_exits_0(refusing, capsys):
    assert main(["verify", "--all", "--toolchain", "vacc"]) == 0
    out = capsys.readouterr().out
    assert set(refusing["toolchains"]) == {"vacc"}
    assert f"4.56.0   toolchain refuses: {REASON}" in out
    assert "passed: 4.38.0–4.55.4" in out
    assert "refused: 4.56.0–5.24.0 (" in out and f"): {REASON}" in out
    assert "refused by the toolchain" in out and " 0 failed" in out


def test_a_failure_among_refusals_still_exits_1(refusing, capsys):
    refusing["fail"]["4.40.2"] = {"logits": "fail"}
    assert main(["verify", "--all", "--toolchain", "vacc"]) == 1


def test_every_release_refused_exits_6():
    outcomes = [verify_all.Outcome(v, "refused", error=REASON) for v in ("5.0.0", "5.1.0")]
    assert verify_all.exit_code(outcomes) == 7
    assert verify_all.exit_code([*outcomes, verify_all.Outcome("4.40.2", "passed")]) == 0


def test_all_json_names_the_toolchain_and_the_reason(refusing, capsys):
    main(["verify", "--all", "--toolchain", "vacc", "--json"])
    document = json.loads(capsys.readouterr().out)
    assert document["toolchain"] == "vacc" and document["counts"]["refused"] > 0
    refused = next(r for r in document["releases"] if r["version"] == "5.24.0")
    assert refused["result"] == "refused" and refused["error"] == REASON


def test_one_refused_release_is_one_line_exit_7(monkeypatch, capsys):
    from patcher.series import reuse as outputs
    from patcher.series.contract import Output
    from patcher.upstream import resolve as cli

    class Up:
        version = "4.56.0"

    monkeypatch.setattr(cli, "upstream_for", lambda spec, *a, **k: Up())
    monkeypatch.setattr(
        outputs, "generate_cached", lambda up, *a: Output(up, {n: "#\n" for n in verify.OUTPUT_FILES})
    )

    def refuse(version, out_dir, *, toolchain, **kw):
        raise ToolchainRefused(version, toolchain.name, REASON)

    monkeypatch.setattr(verify, "verify_output", refuse)
    assert main(["verify", "--transformers", "4.56.0", "--toolchain", "vacc"]) == 7
    captured = capsys.readouterr()
    assert captured.err == f"patcher: toolchain vacc refuses transformers 4.56.0: {REASON}\n"
    assert captured.out == ""


# --- the real vacc toolchain (slow; downloads about 3 GB once) ---------------------------------


def _vacc_requested(config: pytest.Config) -> bool:
    return "vacc" in (config.option.markexpr or "") or os.environ.get("PATCHER_VACC") == "1"


@pytest.mark.vacc
@pytest.mark.verify
@pytest.mark.network
def test_vacc_verifies_4_40_2_and_refuses_5_0_0(capsys, request):
    if not _vacc_requested(request.config):
        pytest.skip(
            "the vacc toolchain downloads about 2.5 GB once: select it with -m vacc or PATCHER_VACC=1"
        )
    assert main(["verify", "--transformers", "4.40.2", "--toolchain", "vacc"]) == 0
    out = capsys.readouterr().out
    assert "transformers 4.40.2 on toolchain vacc: 30/30 checks passed, 2 not applicable" in out
    assert "toolchain vacc: torch 2.1.0" in out and "ONNX opsets 14, 17" in out
    assert "onnx_simplified" in out
    assert main(["verify", "--transformers", "5.0.0", "--toolchain", "vacc"]) == 7
    assert "requires torch>=2.2" in capsys.readouterr().err
