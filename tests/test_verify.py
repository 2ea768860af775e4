"""Tests of verification: report parsing and rendering, environment paths and building, and
(marked ``verify``) real runs of the check script in a per-release environment.

The fast tests never need torch: the check script's side is replaced by small fake
interpreters that print what the real script would (or crash the way it could).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from patcher.errors import UsageError
from patcher.verify import envs
from patcher.verify.release import (
    CHECK_NAMES,
    CONFIGS,
    OUTPUT_FILES,
    CheckResult,
    Env,
    VerifyReport,
    crashed_report,
    parse_result,
    render_table,
    verify_output,
)

ANSI_ESCAPE = "\x1b["


def document(checks: list[dict], **extra) -> str:
    return json.dumps(
        {"format": 1, "transformers": "4.40.2", "torch": "2.13.0+cpu", "checks": checks, **extra}
    )


def entry(name: str = "logits", config: str = "mqa", status: str = "pass", detail: str = "max|Δ|=0.0e+00"):
    return {"name": name, "config": config, "status": status, "detail": detail, "seconds": 0.01}


# --- parsing -------------------------------------------------------------------------------------


def test_parse_result_reads_checks_and_versions():
    checks, versions = parse_result(
        document([entry(), entry("generate", "mha", "exception", "TypeError: x")])
    )
    assert checks == [
        CheckResult("logits", "mqa", "pass", "max|Δ|=0.0e+00", 0.01),
        CheckResult("generate", "mha", "exception", "TypeError: x", 0.01),
    ]
    assert versions == {"transformers": "4.40.2", "torch": "2.13.0+cpu"}
    assert checks[0].passed and not checks[1].passed


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("Traceback (most recent call last):", id="not-json"),
        pytest.param(json.dumps([1, 2]), id="not-an-object"),
        pytest.param(json.dumps({"format": 2, "checks": []}), id="unknown-format"),
        pytest.param(json.dumps({"format": 1}), id="no-checks"),
        pytest.param(document([{"name": "logits"}]), id="entry-without-status"),
        pytest.param(document([entry(status="maybe")]), id="unknown-status"),
    ],
)
def test_parse_result_refuses_malformed_documents(text):
    with pytest.raises(ValueError):
        parse_result(text)


# --- the report ------------------------------------------------------------------------------------


def full_report(**overrides: str) -> VerifyReport:
    """Every check for both configs passing, except ``name=status`` overrides (both configs)."""
    checks = [
        CheckResult(name, config, overrides.get(name, "pass"), f"{name} detail")
        for config in CONFIGS
        for name in CHECK_NAMES
    ]
    return VerifyReport("4.40.2", checks)


def test_report_ok_only_when_every_check_passed():
    assert full_report().ok
    assert not full_report(decode="fail").ok
    assert not full_report(generate="exception").ok
    assert not VerifyReport("4.40.2", []).ok


def test_report_as_dict_is_json_ready():
    report = full_report(generate="exception")
    data = json.loads(json.dumps(report.as_dict()))
    assert data["version"] == "4.40.2" and data["ok"] is False and data["crashed"] is False
    assert len(data["checks"]) == len(CHECK_NAMES) * len(CONFIGS)
    assert {"name", "config", "status", "detail", "seconds"} == set(data["checks"][0])


def test_render_table_lists_every_check_per_config_without_colour_codes():
    text = render_table(full_report(decode="fail", generate="exception"), width=160)
    assert ANSI_ESCAPE not in text
    assert f"{2 * len(CHECK_NAMES) - 4}/{2 * len(CHECK_NAMES)} checks passed" in text
    for name in CHECK_NAMES:
        assert name in text
    header = next(line for line in text.splitlines() if "check" in line and "mqa" in line)
    assert header.index("mqa") < header.index("mha")
    assert "✓ logits detail" in text
    assert "✗ decode detail" in text
    assert "! exception: generate detail" in text


def test_a_skipped_check_is_neither_passed_nor_failed_and_says_why():
    """token_classification on a release without a token classifier: "not applicable"."""
    report = full_report(token_classification="skipped")
    assert report.ok and not report.failed
    assert [c.name for c in report.skipped] == ["token_classification"] * len(CONFIGS)
    n = len(CHECK_NAMES) - 1
    text = render_table(report, width=200)
    assert f"{2 * n}/{2 * n} checks passed, 2 not applicable" in text
    assert "– not applicable: token_classification detail" in text
    assert not full_report(token_classification="skipped", logits="fail").ok
    only_skipped = VerifyReport("4.40.2", [CheckResult("token_classification", "mqa", "skipped", "none")])
    assert not only_skipped.ok  # nothing passed: not a pass
    checks, _ = parse_result(document([entry("token_classification", status="skipped", detail="no class")]))
    assert checks[0].skipped and not checks[0].passed


def test_crashed_report_fails_every_check_with_the_last_error_line():
    stderr = textwrap.dedent(
        """\
        Traceback (most recent call last):
          File "verify_checks.py", line 1, in <module>
            import torch
        ModuleNotFoundError: No module named 'torch'
        """
    )
    report = crashed_report("4.40.2", stderr, 1.0)
    assert report.crashed and not report.ok
    assert len(report.checks) == len(CHECK_NAMES) * len(CONFIGS)
    assert {c.detail for c in report.checks} == {"ModuleNotFoundError: No module named 'torch'"}
    assert "Traceback" in report.stderr_tail
    text = render_table(report)
    assert "crashed" in text and "Traceback" not in text


# --- verify_output with fake check scripts -----------------------------------------------------------


def fake_python(tmp_path: Path, body: str) -> Path:
    """An executable that stands in for the environment's python running verify/checks.py.

    It receives ``checks.py OUTPUT_DIR --result FILE`` like the real interpreter.
    """
    path = tmp_path / "fake-python"
    path.write_text(f"#!{sys.executable}\nimport sys, json\nargs = sys.argv[1:]\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    for name in OUTPUT_FILES:
        (out / name).write_text("# generated\n")
    return out


def run_fake(tmp_path: Path, output_dir: Path, body: str, **kwargs) -> VerifyReport:
    env = Env("4.40.2", python=fake_python(tmp_path, body), target=tmp_path / "site")
    return verify_output("4.40.2", output_dir, env=env, **kwargs)


def test_verify_output_reads_the_result_file(tmp_path, output_dir):
    body = f"""
    assert args[0].endswith("checks.py") and args[2] == "--result"
    assert args[1] == {str(output_dir.resolve())!r}
    open(args[3], "w").write({document([entry(), entry(config="mha")])!r})
    print("noise on stdout")
    """
    report = run_fake(tmp_path, output_dir, body)
    assert report.ok and not report.crashed
    assert [(c.name, c.config) for c in report.checks] == [("logits", "mqa"), ("logits", "mha")]
    assert report.versions["transformers"] == "4.40.2"


def test_verify_output_falls_back_to_the_last_stdout_line(tmp_path, output_dir):
    body = f"""
    print("a warning")
    print({document([entry(status="fail", detail="max|Δ|=3.0e-01 > 1e-04")])!r})
    """
    report = run_fake(tmp_path, output_dir, body)
    assert not report.ok and not report.crashed
    assert report.checks[0].detail == "max|Δ|=3.0e-01 > 1e-04"


def test_verify_output_passes_pythonpath_and_offline_flags(tmp_path, output_dir):
    body = f"""
    import os
    ok = os.environ["PYTHONPATH"] == {str(tmp_path / "site")!r} and os.environ["HF_HUB_OFFLINE"] == "1"
    open(args[3], "w").write({document([entry()])!r} if ok else "{{}}")
    """
    assert run_fake(tmp_path, output_dir, body).ok


def test_verify_output_turns_a_crash_into_failed_checks(tmp_path, output_dir):
    body = """
    sys.stderr.write("Traceback (most recent call last):\\n  File x\\nRuntimeError: segfault-ish\\n")
    sys.exit(3)
    """
    report = run_fake(tmp_path, output_dir, body)
    assert report.crashed and not report.ok
    assert {c.detail for c in report.checks} == {"RuntimeError: segfault-ish"}
    assert "Traceback" in report.stderr_tail


def test_a_check_process_ended_by_ctrl_c_interrupts_the_run(tmp_path, output_dir):
    """Ctrl-C that ended the check process is an interrupt, not a crashed release: verify
    --all's worker threads, which Python never gives the KeyboardInterrupt, must not report the
    releases whose checks it stopped as failed."""
    body = """
    import os, signal
    open(args[3], "w").write("{}")
    os.kill(os.getpid(), signal.SIGINT)
    """
    with pytest.raises(KeyboardInterrupt):
        run_fake(tmp_path, output_dir, body)
    # any other signal is a crash, reported as such
    body = body.replace("SIGINT", "SIGTERM")
    assert run_fake(tmp_path, output_dir, body).crashed


def test_the_checks_scratch_goes_where_verify_output_removes_it(tmp_path, output_dir):
    """A check process killed before it could clean up (a timeout, Ctrl-C past the grace
    period) leaves nothing: its working directory lies inside verify_output's own."""
    told = tmp_path / "scratch-was"
    body = f"""
    import pathlib, time
    work = pathlib.Path(args[args.index("--scratch") + 1]) / "patcher-verify-x"
    work.mkdir()
    (work / "graph.onnx").write_bytes(b"0" * 1000)
    pathlib.Path({str(told)!r}).write_text(str(work))
    time.sleep(30)
    """
    report = run_fake(tmp_path, output_dir, body, timeout=2)
    assert report.crashed and "timed out" in report.checks[0].detail
    work = Path(told.read_text())
    assert work.name == "patcher-verify-x" and not work.exists() and not work.parent.exists()


def test_verify_output_reports_a_timeout(tmp_path, output_dir):
    report = run_fake(tmp_path, output_dir, "import time; time.sleep(30)\n", timeout=0.5)
    assert report.crashed
    assert "timed out" in report.checks[0].detail


def test_verify_output_refuses_a_directory_without_the_outputs(tmp_path):
    (tmp_path / "modeling_gemma_vacc.py").write_text("")
    with pytest.raises(UsageError, match="configuration_gemma_vacc.py"):
        verify_output("4.40.2", tmp_path, env=Env("4.40.2", Path(sys.executable), tmp_path))


# --- environment paths and building --------------------------------------------------------------------


def test_cache_root_honours_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHER_CACHE_DIR", str(tmp_path))
    assert envs.cache_root() == tmp_path
    assert envs.envs_dir() == tmp_path / "envs"
    assert envs.uv_cache_dir() == tmp_path / "uv"
    assert envs.base_dir() == tmp_path / "envs" / "base-torch2.13.0-py3.11-r2"
    assert envs.base_python() == envs.base_dir() / "bin" / "python"
    assert envs.release_dir("4.40.2") == tmp_path / "envs" / f"transformers-4.40.2-r{envs.RELEASE_RECIPE}"


def test_cache_root_defaults_to_the_user_cache(monkeypatch):
    monkeypatch.delenv("PATCHER_CACHE_DIR", raising=False)
    assert envs.cache_root().name == "patcher"


def test_env_environ_puts_the_release_first_and_works_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    env = Env("4.40.2", python=tmp_path / "python", target=tmp_path / "site").environ()
    assert env["PYTHONPATH"] == str(tmp_path / "site")
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    assert "PYTHONHOME" not in env


def test_check_processes_cache_the_release_bytecode_even_where_the_shell_forbids_it(tmp_path, monkeypatch):
    """Containers often set PYTHONDONTWRITEBYTECODE; the target dir is patcher's own cache,
    installed without bytecode, so a check process must be free to cache what it imports
    there (or every check compiles transformers anew)."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    site = tmp_path / "site"
    site.mkdir()
    (site / "released.py").write_text("VALUE = 1\n")
    env = Env("4.40.2", python=Path(sys.executable), target=site).environ()
    assert "PYTHONDONTWRITEBYTECODE" not in env
    subprocess.run([sys.executable, "-c", "import released"], env=env, check=True)
    assert list((site / "__pycache__").glob("released.*.pyc"))


@pytest.mark.parametrize("bad", ["4.40", "latest", "4.40.2+local", "../4.40.2", "4.40.2 ", "v4.40.2"])
def test_ensure_env_refuses_anything_but_an_exact_version(bad, tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHER_CACHE_DIR", str(tmp_path))
    with pytest.raises(UsageError):
        envs.ensure_env(bad)
    assert not (tmp_path / "envs").exists()


def test_build_once_is_atomic_and_marks_completion_last(tmp_path):
    final = tmp_path / "envs" / "thing"
    seen = []

    def build(tmp: Path) -> None:
        assert not final.exists()
        tmp.mkdir()
        (tmp / "payload").write_text("x")
        seen.append(tmp)

    envs._build_once(final, build, None, what="thing")
    assert (final / "payload").read_text() == "x" and envs.is_complete(final)
    assert seen[0] != final and not seen[0].exists()
    envs._build_once(final, build, None, what="thing")
    assert len(seen) == 1  # complete: not rebuilt


def test_build_once_leaves_nothing_behind_when_the_build_fails(tmp_path):
    final = tmp_path / "envs" / "thing"

    def build(tmp: Path) -> None:
        tmp.mkdir()
        raise envs.EnvError("no network")

    with pytest.raises(envs.EnvError):
        envs._build_once(final, build, None, what="thing")
    assert not final.exists()
    assert [p.name for p in final.parent.iterdir()] == ["thing.lock"]


def test_build_once_replaces_an_incomplete_leftover(tmp_path):
    final = tmp_path / "envs" / "thing"
    final.mkdir(parents=True)
    (final / "half-written").write_text("")
    envs._build_once(final, lambda tmp: tmp.mkdir(), None, what="thing")
    assert envs.is_complete(final) and not (final / "half-written").exists()


def test_build_once_builds_once_under_concurrency(tmp_path):
    final = tmp_path / "envs" / "thing"
    builds = []

    def build(tmp: Path) -> None:
        builds.append(tmp)
        time.sleep(0.2)
        tmp.mkdir()

    threads = [threading.Thread(target=envs._build_once, args=(final, build, None), kwargs={"what": "t"})]
    threads.append(threading.Thread(target=envs._build_once, args=(final, build, None), kwargs={"what": "t"}))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and envs.is_complete(final)


def test_build_once_reports_progress(tmp_path):
    messages: list[str] = []
    envs._build_once(tmp_path / "thing", lambda tmp: tmp.mkdir(), messages.append, what="the thing")
    assert messages[0].startswith("building the thing") and messages[1].startswith("built the thing")


def pip_reporting(tmp_path: Path, url: str, version: str) -> str:
    """A fake interpreter whose ``-m pip install --dry-run --report -`` picks the given torch."""
    report = {"install": [{"download_info": {"url": url}, "metadata": {"name": "torch", "version": version}}]}
    return str(fake_python(tmp_path, f"print(json.dumps({report!r}))\n"))


def test_torch_guard_accepts_a_cpu_or_local_wheel(tmp_path):
    envs._check_torch_wheel(
        pip_reporting(tmp_path, "file:///opt/wheels/torch-2.13.0%2Bcpu.whl", "2.13.0+cpu")
    )
    envs._check_torch_wheel(pip_reporting(tmp_path, "https://example.org/torch-2.13.0+cpu.whl", "2.13.0+cpu"))


def test_torch_guard_refuses_the_cuda_wheel(tmp_path):
    python = pip_reporting(tmp_path, "https://files.example.org/torch-2.13.0-cp311-manylinux.whl", "2.13.0")
    with pytest.raises(envs.EnvError, match="not a CPU build") as raised:
        envs._check_torch_wheel(python)
    # the line says what to do, with the index to set
    assert "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu" in str(raised.value)
    assert len(str(raised.value).splitlines()) == 1


def test_torch_guard_reports_when_pip_finds_nothing(tmp_path):
    python = fake_python(tmp_path, "sys.stderr.write('ERROR: No matching distribution found for torch\\n')\n")
    with pytest.raises(envs.EnvError, match="No matching distribution"):
        envs._check_torch_wheel(str(python))


def test_check_names_match_the_check_script():
    """verify/release.py cannot import the check script (torch); keep the two lists in step."""
    from patcher.verify.release import _from_checks

    source = (Path(envs.__file__).with_name("checks.py")).read_text()
    family_checks = {name for names in _from_checks("FAMILY_CHECKS").values() for name in names}
    assert family_checks == {"sliding_window"}  # Mistral's: the vendor's decision on the window
    for name in (*CHECK_NAMES, *family_checks):
        assert f"def check_{name}(" in source
    assert source.count("def check_") == len(CHECK_NAMES) + len(family_checks)


# --- real environments (slow; network once, then cached) ------------------------------------------------

RELEASE = "4.40.2"


@pytest.fixture(scope="module")
def release_env() -> Env:
    return envs.ensure_env(RELEASE)


@pytest.mark.verify
def test_release_env_holds_transformers_but_not_the_base_packages(release_env):
    names = {p.name.split("-")[0].lower() for p in release_env.target.glob("*.dist-info")}
    assert "transformers" in names
    assert not names & set(envs.PROVIDED_BY_BASE)
    probe = "import torch, numpy, transformers; print(transformers.__version__, torch.__file__)"
    out = subprocess.run(
        [str(release_env.python), "-c", probe],
        env=release_env.environ(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == RELEASE
    assert str(envs.base_dir()) in out[1]


QUANTIZATION_PROBE = """
import sys, torch
sys.path.insert(0, sys.argv[1])
import quantization_vacc as q

torch.manual_seed(0)
linear = torch.nn.Linear(16, 6, bias=True)
with torch.no_grad():
    linear.weight[2].zero_()
layer = q.QuantizedLinearPerChannel.from_linear(linear)
assert layer.weight.dtype == torch.int8 and layer.weight.shape == (6, 16)
assert layer.weight.abs().max() <= 127 and layer.scale[2] == 1 and not layer.weight[2].any()
w = linear.weight.detach()
assert torch.allclose(layer.scale[0], w[0].abs().max() / 127)
assert torch.equal(layer.weight, torch.round(w / layer.scale[:, None]).clamp(-127, 127).to(torch.int8))
x = torch.randn(3, 5, 16)
want = x @ (layer.weight.float() * layer.scale[:, None]).T + linear.bias
assert torch.allclose(layer(x), want, atol=1e-6)
assert (layer(x) - linear(x)).abs().max() < 0.02
for bad in (4, 16):
    try:
        q.quantize_model(torch.nn.Sequential(), bad)
    except ValueError:
        pass
    else:
        raise AssertionError(bad)

class Attn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(self, n, torch.nn.Linear(8, 8, bias=False))

class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        for n in ("gate_proj", "up_proj", "down_proj"):
            setattr(self, n, torch.nn.Linear(8, 8, bias=False))

model = torch.nn.ModuleDict({"a": Attn(), "m": Mlp(), "head": torch.nn.Linear(8, 8)})
assert q.quantize_model(model, 8) is model
assert sum(isinstance(m, q.QuantizedLinearPerChannel) for m in model.modules()) == 7
assert isinstance(model["head"], torch.nn.Linear)
q.quantize_model(model, 8)  # idempotent
assert sum(isinstance(m, q.QuantizedLinearPerChannel) for m in model.modules()) == 7
print("ok")
"""


@pytest.mark.verify
def test_quantization_companion_in_the_base_env(release_env):
    companion = Path(__file__).parents[1] / "patches" / "companion"
    proc = subprocess.run(
        [str(release_env.python), "-c", QUANTIZATION_PROBE, str(companion)],
        env=release_env.environ(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_check_names_agree_with_the_check_script() -> None:
    """verify/checks.py runs inside a release environment and cannot import patcher, so it keeps
    its own copy of the check list; the two copies must not drift apart."""
    import ast

    from patcher.verify import release

    tree = ast.parse(release.CHECKS_SCRIPT.read_text())
    script = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "CHECK_NAMES"
    )
    assert tuple(script) == tuple(CHECK_NAMES)
