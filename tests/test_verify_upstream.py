"""``patcher verify --upstream FILE [--config-upstream FILE] --transformers R``: the output of a
local upstream verified against that local upstream itself, loaded over release R's Gemma in
R's environment (an overlay: R's environment is never changed).

The fast tests replace the check process by fakes; the real ones (marked ``verify``) take a
real upstream file of each attention shape, mutate it where no codemod looks, and show that
the overlay is the reference: the mutant's output passes, the same output with the mutation
reverted fails, and R's own files stay as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
from pathlib import Path

import pytest
from releases import fetch

from patcher.cli import main
from patcher.deploy import write
from patcher.series import reuse
from patcher.series.contract import OUTPUT_FILES, Output
from patcher.upstream import fetch as upstream
from patcher.verify import command, envs, release
from patcher.verify.envs import EnvError
from patcher.verify.release import CHECK_NAMES, CONFIGS, CheckResult, Env, Overlay, VerifyReport, render_table

MODELING = "modeling_gemma.py"
CONFIGURATION = "configuration_gemma.py"


def passing(version: str, overlay: Overlay | None = None) -> VerifyReport:
    checks = [CheckResult(name, config, "pass", "ok") for name in CHECK_NAMES for config in CONFIGS]
    return VerifyReport(version, checks, overlay=overlay)


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local modeling file with a configuration beside it, in the working directory."""
    folder = tmp_path / "fork"
    folder.mkdir()
    (folder / MODELING).write_text("# a fork\nclass GemmaModel:\n    pass\n")
    (folder / CONFIGURATION).write_text("class GemmaConfig:\n    pass\n")
    monkeypatch.chdir(tmp_path)
    return folder


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Generation gives fixed files; verification records what it was asked to do."""
    state: dict = {"generated": [], "verified": []}

    def generate_cached(up, codemods=None):
        state["generated"].append(up)
        return Output(up, {name: f"# {name}\n" for name in OUTPUT_FILES})

    def verify_output(version, out_dir, *, overlay=None, **kw):
        state["verified"].append((version, overlay, {n: (out_dir / n).read_text() for n in OUTPUT_FILES}))
        return passing(version, overlay)

    monkeypatch.setattr(reuse, "generate_cached", generate_cached)
    monkeypatch.setattr(release, "verify_output", verify_output)
    return state


# --- usage ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--upstream", "fork/modeling_gemma.py"], "--upstream FILE needs --transformers SPEC"),
        (["--all", "--upstream", "fork/modeling_gemma.py"], "does not go with --all"),
        (
            ["--transformers", "4.40.2", "--config-upstream", "fork/configuration_gemma.py"],
            "goes with --upstream",
        ),
        (["--upstream", "", "--transformers", "4.40.2"], "--upstream is empty"),
        (["--upstream", "fork/missing.py", "--transformers", "4.40.2"], "cannot read upstream file"),
        (["--upstream", "fork/modeling_gemma.py", "--transformers", "4.37"], "has no Gemma"),
        (["--upstream", "fork/modeling_gemma.py", "--transformers", "4.40.99"], "is not pinned"),
        (
            ["--upstream", "fork/modeling_gemma.py", "--transformers", "4.40.2", "--jobs", "2"],
            "goes with --all",
        ),
        ([], "give --transformers SPEC, --all, or --dir DIR"),
    ],
)
def test_bad_usage_is_one_line_exit_2(argv, fragment, local, fakes, capsys):
    assert main(["verify", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("patcher: ") and fragment in err
    assert not fakes["generated"] and not fakes["verified"]


def test_a_file_that_is_not_python_exits_2(local, fakes, capsys):
    (local / MODELING).write_text("def broken(:\n")
    assert main(["verify", "--upstream", "fork/modeling_gemma.py", "--transformers", "4.40.2"]) == 2
    assert "fork/modeling_gemma.py:1" in capsys.readouterr().err
    assert not fakes["verified"]


def test_drift_exits_3_and_verifies_nothing(local, monkeypatch, capsys):
    """An upstream shape no codemod knows: drift, before any environment is built."""

    def no_env(*args, **kwargs):
        raise AssertionError("an environment was built for a drifting upstream")

    monkeypatch.setattr(release, "ensure_env", no_env)
    monkeypatch.setattr(release, "verify_output", no_env)
    assert main(["verify", "--upstream", "fork/modeling_gemma.py", "--transformers", "4.40.2"]) == 3
    err = capsys.readouterr().err
    assert "drift: codemod attention" in err and "Traceback" not in err


def test_an_environment_that_cannot_be_built_exits_4(local, monkeypatch, capsys):
    def generate_cached(up, codemods=None):
        return Output(up, {name: "# x\n" for name in OUTPUT_FILES})

    def no_env(version, progress=None, toolchain=None):
        raise EnvError(f"could not build the environment for transformers {version}: no network")

    monkeypatch.setattr(reuse, "generate_cached", generate_cached)
    monkeypatch.setattr(release, "ensure_env", no_env)
    assert main(["verify", "--upstream", "fork/modeling_gemma.py", "--transformers", "4.40"]) == 4
    err = capsys.readouterr().err
    assert err == "patcher: could not build the environment for transformers 4.40.2: no network\n"


# --- the command, with fakes -------------------------------------------------------------------


def test_generates_from_the_local_file_and_verifies_it_in_the_release_env(local, fakes, capsys):
    assert main(["verify", "--upstream", "fork/modeling_gemma.py", "--transformers", "4.40"]) == 0
    [generated] = fakes["generated"]
    assert generated.version is None and generated.modeling == (local / MODELING).read_text()
    assert generated.configuration == (local / CONFIGURATION).read_text()  # the one beside FILE
    [(version, overlay, files)] = fakes["verified"]
    assert version == "4.40.2"
    assert overlay == Overlay(
        generated.modeling, "fork/modeling_gemma.py", generated.configuration, "fork/configuration_gemma.py"
    )
    assert files == {name: f"# {name}\n" for name in OUTPUT_FILES}
    out = " ".join(capsys.readouterr().out.split())  # the table title wraps
    assert out.startswith(
        "local upstream fork/modeling_gemma.py and fork/configuration_gemma.py in transformers 4.40.2's "
        f"environment (not its own Gemma): {2 * len(CHECK_NAMES)}/{2 * len(CHECK_NAMES)} checks passed"
    )


def test_config_upstream_is_used_and_named(local, fakes, capsys, tmp_path):
    other = tmp_path / "elsewhere.py"
    other.write_text("class GemmaConfig:\n    x = 1\n")
    argv = ["verify", "--upstream", "fork/modeling_gemma.py", "--config-upstream", str(other)]
    assert main([*argv, "--transformers", "4.40.2", "--json"]) == 0
    [(_, overlay, _)] = fakes["verified"]
    assert overlay.configuration == other.read_text() and overlay.configuration_path == str(other)
    data = json.loads(capsys.readouterr().out)
    assert data["upstream"] == {
        "modeling_gemma.py": "fork/modeling_gemma.py",
        "configuration_gemma.py": str(other),
    }
    assert data["reference"].startswith("local upstream fork/modeling_gemma.py and " + str(other))


def test_without_a_configuration_it_is_refused_as_apply_refuses_it(tmp_path, monkeypatch, capsys):
    """As ``apply --upstream``: no configuration beside FILE and none given is a usage error."""
    (tmp_path / "alone.py").write_text("class GemmaModel:\n    pass\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(release, "verify_output", lambda *a, **k: pytest.fail("verified"))
    assert main(["verify", "--upstream", "alone.py", "--transformers", "4.40.2"]) == 2
    err = capsys.readouterr().err
    assert "no configuration_gemma.py given and none beside --upstream alone.py" in err


def test_the_release_report_names_the_release():
    report = passing("4.40.2")
    assert report.reference == "transformers 4.40.2"
    assert render_table(report).startswith("transformers 4.40.2: ")
    assert report.as_dict()["upstream"] is None


# --- verify_output passes the overlay to the check process -------------------------------------

FAKE_CHECKS = """\
#!{python}
import json, sys
args = sys.argv[1:]
i = args.index("--upstream") if "--upstream" in args else None
seen = {{}}
if i is not None:
    seen["upstream"] = [args[i + 1], open(args[i + 1]).read()]
if "--config-upstream" in args:
    j = args.index("--config-upstream")
    seen["config"] = [args[j + 1], open(args[j + 1]).read()]
check = {{"name": "logits", "config": "mqa", "status": "pass", "detail": json.dumps(seen)}}
open(args[3], "w").write(json.dumps({{"format": 1, "checks": [check]}}))
"""


def run_fake(tmp_path: Path, overlay: Overlay | None) -> dict:
    out = tmp_path / "out"
    out.mkdir()
    for name in OUTPUT_FILES:
        (out / name).write_text("# generated\n")
    python = tmp_path / "fake-python"
    python.write_text(FAKE_CHECKS.format(python=sys.executable))
    python.chmod(0o755)
    report = release.verify_output(
        "4.40.2", out, env=Env("4.40.2", python, tmp_path / "site"), overlay=overlay
    )
    assert report.overlay == overlay
    return json.loads(report.checks[0].detail)


def test_verify_output_hands_the_overlay_files_to_the_check_process(tmp_path):
    overlay = Overlay("# modeling\n", "/somewhere/mutant.py", "# configuration\r\n", "/somewhere/c.py")
    seen = run_fake(tmp_path, overlay)
    path, text = seen["upstream"]
    assert Path(path).parts[-3:] == ("models", "gemma", "modeling_gemma.py")  # transformers' layout
    assert text == "# modeling\n"
    path, text = seen["config"]
    assert Path(path).name == "configuration_gemma.py" and text == "# configuration\n"
    assert not Path(path).exists()  # a temporary copy, gone with the run


def test_verify_output_without_overlay_or_configuration(tmp_path):
    assert run_fake(tmp_path, None) == {}
    (tmp_path / "out").rename(tmp_path / "old")
    seen = run_fake(tmp_path, Overlay("# m\n", "m.py"))
    assert "config" not in seen and seen["upstream"][1] == "# m\n"


# --- real environments --------------------------------------------------------------------------

MLP = "self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))"
MUTATED = MLP + " * 1.5"
#: One release per attention shape: three classes (4.38-4.47) and the eager function (4.48+).
SHAPES = ["4.40.2", "4.48.0"]


def mutant(version: str, folder: Path) -> Path:
    """Release ``version``'s upstream with Gemma's MLP output scaled by 1.5 (code no codemod
    touches, so the output must carry it); its configuration beside it."""
    up = fetch(version)
    assert up.modeling.count(MLP) == 1
    folder.mkdir(parents=True)
    (folder / MODELING).write_text(up.modeling.replace(MLP, MUTATED), encoding="utf-8")
    (folder / CONFIGURATION).write_text(up.configuration, encoding="utf-8")
    return folder / MODELING


def digest_tree(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` that is not byte code."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module", params=SHAPES)
def mutant_run(request, tmp_path_factory):
    """``patcher verify --upstream MUTANT --transformers R --json``, once per shape, with R's
    Gemma files digested before and after."""
    version = request.param
    path = mutant(version, tmp_path_factory.mktemp("mutant") / "gemma")
    env = envs.ensure_env(version)
    gemma = env.target / "transformers" / "models" / "gemma"
    before = digest_tree(gemma)
    stdout = io.StringIO()  # a module-scoped fixture has no capsys
    with contextlib.redirect_stdout(stdout):
        code = main(["verify", "--upstream", str(path), "--transformers", version, "--json"])
    return {
        "version": version,
        "path": path,
        "code": code,
        "report": json.loads(stdout.getvalue()),
        "gemma": gemma,
        "before": before,
    }


@pytest.mark.verify
@pytest.mark.network
def test_the_mutant_output_passes_against_the_mutant(mutant_run):
    report = mutant_run["report"]
    failed = [(c["name"], c["config"], c["detail"]) for c in report["checks"] if c["status"] not in ("pass",)]
    assert mutant_run["code"] == 0 and report["ok"], failed
    assert report["reference"].startswith(f"local upstream {mutant_run['path']}")
    assert f"transformers {mutant_run['version']}'s environment" in report["reference"]
    assert report["upstream"]["modeling_gemma.py"] == str(mutant_run["path"])
    assert report["versions"]["transformers"] == mutant_run["version"]
    assert {c["name"] for c in report["checks"]} == set(CHECK_NAMES)


@pytest.mark.verify
@pytest.mark.network
def test_the_overlay_leaves_the_release_environment_as_it_was(mutant_run):
    gemma = mutant_run["gemma"]
    assert digest_tree(gemma) == mutant_run["before"]
    assert MUTATED not in (gemma / MODELING).read_text()


@pytest.mark.verify
@pytest.mark.network
@pytest.mark.parametrize("version", SHAPES)
def test_the_unmutated_output_fails_against_the_mutant(version, tmp_path):
    """The overlay really is the reference: the mutant's output with the mutation reverted
    (which is the output of the unmutated release) fails against the mutant where the MLP
    shows, and passes where it cannot (quantisation's own error, the graph's structure)."""
    from patcher.series.generate import generate

    path = mutant(version, tmp_path / "gemma")
    local = upstream.from_files(path, path.with_name(CONFIGURATION))
    files = dict(generate(local).files)
    assert files["modeling_gemma_vacc.py"].count(MUTATED) == 1  # the output carries the mutation
    files["modeling_gemma_vacc.py"] = files["modeling_gemma_vacc.py"].replace(MUTATED, MLP)
    out = tmp_path / "out"
    write.write_output(files, out)
    with command._one_thread_per_check():  # as the command runs it
        report = release.verify_output(version, out, overlay=Overlay.from_upstream(local))
    assert not report.crashed, report.stderr_tail
    failed = {c.name for c in report.failed}
    assert {"logits", "logits_padded", "decode", "sequence_classification", "from_pretrained"} <= failed
    assert {"state_dict", "quantize", "onnx_prefill"}.isdisjoint(failed)
    if version == "4.48.0":  # 4.40.2 has no token classifier
        assert "token_classification" in failed
    assert "local upstream" in render_table(report).splitlines()[0]
