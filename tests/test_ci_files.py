"""The CI integration offered to users is valid: the GitHub workflow and the pre-commit hook
parse, carry the fields their tools need, and every patcher command in them parses."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from patcher.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "patcher.yml"
HOOKS = ROOT / ".pre-commit-hooks.yaml"
PRE_COMMIT_LANGUAGES = {"python", "system", "script", "docker", "node", "golang", "rust", "conda", "fail"}


def load(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def patcher_commands(script: str) -> list[list[str]]:
    """The ``patcher ...`` invocations of a shell step, expressions made concrete."""
    script = re.sub(r"\$\{\{\s*github\.base_ref\s*\}\}", "main", script)
    assert "${{" not in script.replace("${{ github", ""), script
    commands = []
    for line in script.splitlines():
        words = shlex.split(line.split(">", 1)[0])
        if words[:1] == ["patcher"]:
            commands.append(words[1:])
    return commands


def test_workflow_has_what_github_actions_needs():
    flow = load(WORKFLOW)
    triggers = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in triggers and "push" in triggers
    assert flow["jobs"]
    for name, job in flow["jobs"].items():
        assert job["runs-on"], name
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), step
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


def test_workflow_checks_and_reviews():
    jobs = load(WORKFLOW)["jobs"]
    runs = {name: "\n".join(s.get("run", "") for s in job["steps"]) for name, job in jobs.items()}
    assert any(c[:1] == ["check"] for c in patcher_commands(runs["check"]))
    review = jobs["review"]
    assert "pull_request" in review["if"]
    assert review["permissions"]["pull-requests"] == "write"
    checkout = next(s for s in review["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # the base commit must be in the clone
    assert "patcher review --base origin/${{ github.base_ref }} --format markdown" in runs["review"]
    script = next(s for s in review["steps"] if s.get("uses", "").startswith("actions/github-script@"))
    assert "<!-- patcher-review -->" in script["with"]["script"]


@pytest.mark.parametrize("job", ["check", "review"])
def test_every_patcher_command_in_the_workflow_parses(job):
    steps = load(WORKFLOW)["jobs"][job]["steps"]
    commands = [c for s in steps for c in patcher_commands(s.get("run", ""))]
    assert commands
    for words in commands:
        args = build_parser().parse_args(words)
        assert args.func


def test_pre_commit_hook_offers_patcher_check():
    hooks = load(HOOKS)
    assert isinstance(hooks, list) and hooks
    for hook in hooks:
        for field in ("id", "name", "entry", "language"):
            assert isinstance(hook.get(field), str) and hook[field], field
        assert hook["language"] in PRE_COMMIT_LANGUAGES
        re.compile(hook.get("files", ""))
    check = next(h for h in hooks if h["id"] == "patcher-check")
    words = shlex.split(check["entry"])
    assert words[:3] == ["python", "-m", "patcher"]
    assert build_parser().parse_args(words[3:]).func
    assert check["pass_filenames"] is False
    files = re.compile(check["files"])
    paths = ("patches/quantize.py", "patches/series", "patcher/series/engine.py", "upstream_pins/lock.json")
    for path in paths:
        assert files.search(path), path
    assert not files.search("README.md")


# --- the scheduled update workflow -------------------------------------------------------------

UPDATE = ROOT / ".github" / "workflows" / "update.yml"


def update_runs() -> list[str]:
    return [step["run"] for step in load(UPDATE)["jobs"]["update"]["steps"] if "run" in step]


def update_script() -> str:
    return "\n".join(update_runs())


def test_update_workflow_is_scheduled_daily_and_by_hand():
    flow = load(UPDATE)
    triggers = flow.get("on", flow.get(True))
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    (schedule,) = triggers["schedule"]
    minute, hour, day, month, weekday = schedule["cron"].split()
    assert (day, month, weekday) == ("*", "*", "*")  # every day
    assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24
    for name, job in flow["jobs"].items():
        assert job["runs-on"] and job["timeout-minutes"], name
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), step
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


def test_update_workflow_needs_only_the_workflow_token():
    flow = load(UPDATE)
    assert flow["permissions"] == {"contents": "write", "pull-requests": "write", "issues": "write"}
    text = UPDATE.read_text(encoding="utf-8")
    assert "secrets." not in text  # no secret beyond the token GitHub gives every run
    tokens = [
        s["env"]["GH_TOKEN"]
        for s in load(UPDATE)["jobs"]["update"]["steps"]
        if "GH_TOKEN" in s.get("env", {})
    ]
    assert tokens and set(tokens) == {"${{ github.token }}"}
    assert load(UPDATE)["concurrency"]["cancel-in-progress"] is False  # runs never race


def test_update_workflow_is_idempotent():
    """One branch and one pull request; one issue per release, found again by its title."""
    flow = load(UPDATE)
    script = update_script()
    branch = flow["env"]["UPDATE_BRANCH"]
    assert branch and "$" not in branch and "${{" not in branch  # a fixed name, not per run
    # the pull request: the fixed branch force-pushed (unless it holds this update already),
    # an open pull request from it edited, a new one only when there is none
    assert 'git push --force origin "HEAD:refs/heads/$UPDATE_BRANCH"' in script
    assert "HEAD^{tree}" in script and "FETCH_HEAD^{tree}" in script
    assert script.index('gh pr list --head "$UPDATE_BRANCH" --state open') < script.index("gh pr create")
    assert "gh pr edit" in script
    # issues: searched by exact title (open or closed) before one is created; labels made with --force
    assert script.index("gh issue list --state all") < script.index("gh issue create")
    assert 'select(.title == \\"$title\\")' in script and "gh issue edit" in script
    title = re.search(r'title="(patcher update: transformers \$version[^"]*)"', script)
    assert title and "$state" not in title.group(1) and "$(" not in title.group(1)
    for line in script.splitlines():
        if "gh label create" in line:
            assert "--force" in line, line
    # the body of the pull request is `patcher review`
    assert 'patcher review --base "origin/$BASE" --format markdown >> pr-body.md' in script


def test_update_workflow_tells_the_states_apart_by_exit_code():
    from patcher.ci.update import EXIT_CODES
    from patcher.upstream.families import FAMILIES

    script = update_script()
    # every family is followed, each into its own document, merged into update.json
    families = re.search(r"for model in ([\w ]+); do", script)
    assert families and families.group(1).split() == list(FAMILIES)
    assert 'patcher update --model "$model" --json > "update-$model.json"' in script
    assert "update-gemma.json update-mistral.json > update.json" in script
    handled = re.search(r'case "\$status" in ([\d|]+)\)', script)
    assert handled and set(handled.group(1).split("|")) == {"0", *map(str, EXIT_CODES.values())}
    labels = dict(re.findall(r"(\w+)\) label=([\w-]+)", script))
    assert labels == {"drift": "drift", "failed": "verification-failed"}


def test_the_json_fields_the_update_workflow_reads_exist():
    from patcher.ci import update

    refused = update.Checked("vacc", "refused", reason="it requires torch>=2.2")
    outcome = update.Outcome("5.25.0", "supported", "verified", checked=[refused]).as_dict()
    document = update.Update("5.24.0", [update.Outcome("5.25.0", "supported", "verified")]).as_dict()
    per_toolchain = set(refused.as_dict()) | set(outcome["refused_by"][0])
    fields = set(re.findall(r"\.([a-z_]+)\b", " ".join(re.findall(r"jq [^\n]*", update_script()))))
    fields -= {"md", "json"}  # file names on the jq lines (update.json, pr-body.md)
    assert fields and fields <= set(outcome) | set(document) | per_toolchain | {"number", "title"}, fields
    assert set(update.STATES) >= set(re.findall(r'\.state [!=]= "(\w+)"', update_script()))


def test_every_patcher_command_in_the_update_workflow_exists_and_parses(capsys):
    lines = [line.strip() for line in update_script().splitlines() if line.strip().startswith("patcher ")]
    commands = patcher_commands("\n".join(lines).replace("$BASE", "main").replace("$model", "mistral"))
    assert [c[0] for c in commands] == ["update", "review", "review"]
    assert [c[1:3] for c in commands if c[0] == "review"][1] == ["--model", "mistral"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    help_text = capsys.readouterr().out
    for words in commands:
        assert re.search(rf"^\s+{words[0]}\s", help_text, re.MULTILINE), words[0]
        assert build_parser().parse_args(words).func


@pytest.mark.parametrize("workflow", [WORKFLOW, UPDATE], ids=lambda p: p.name)
def test_every_run_step_is_valid_bash(workflow):
    for job in load(workflow)["jobs"].values():
        for step in job["steps"]:
            if "run" in step:
                proc = subprocess.run(["bash", "-n", "-c", step["run"]], capture_output=True, text=True)
                assert proc.returncode == 0, (step.get("name"), proc.stderr)


def report_on(toolchain: str, status: str):
    """A toolchain's result with 32 checks: 30 passed, the logits of both configs ``status``."""
    from patcher.ci import update
    from patcher.verify.release import CheckResult, VerifyReport

    checks = [CheckResult(f"c{i}", "mqa", "pass", "") for i in range(30)]
    checks += [CheckResult("logits", config, status, "") for config in ("mqa", "mha")]
    report = VerifyReport("5.26.0", checks)
    return update.Checked(toolchain, "passed" if status == "pass" else "failed", report=report)


@pytest.mark.skipif(
    shutil.which("jq") is None, reason="the workflow's steps use jq (GitHub's runners have it)"
)
def test_the_workflow_names_each_refusing_toolchain_with_its_reason(tmp_path):
    """The update step's log line and the pull request's list of refusals, run with jq on a
    document where vacc refuses a supported release."""
    from patcher.ci import update

    reason = "it requires torch>=2.2, the toolchain has torch 2.1.0"
    refused = update.Checked("vacc", "refused", reason=reason)
    supported = update.Outcome("5.25.0", "supported", "verified: current passed 32/32; vacc refuses it")
    supported.checked = [report_on("current", "pass"), refused]
    (tmp_path / "update.json").write_text(json.dumps(update.Update("5.24.0", [supported]).as_dict()))
    lines = [line.strip() for line in update_script().splitlines() if ".refused_by[]" in line]
    assert len(lines) == 2
    outputs = [
        subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
        for line in lines
    ]
    assert outputs == [
        f"5.25.0: toolchain vacc refuses it: {reason}\n",
        f"  - 5.25.0: toolchain `vacc` refuses it (not a failure of patcher): {reason}\n",
    ]


FAKE_GH = r'''#!{python}
"""A stand-in for the gh CLI: issues kept in gh-state.json, every call logged to gh-calls.txt."""
import json, subprocess, sys
from pathlib import Path

args = sys.argv[1:]
state = Path("gh-state.json")
issues = json.loads(state.read_text()) if state.exists() else []
with open("gh-calls.txt", "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:2] == ["issue", "list"]:
    expr = args[args.index("--jq") + 1]
    out = subprocess.run(
        ["jq", "-r", expr], input=json.dumps(issues), capture_output=True, text=True, check=True
    )
    print(out.stdout, end="")
elif args[:2] == ["issue", "create"]:
    issues.append({"number": len(issues) + 1, "title": args[args.index("--title") + 1]})
    state.write_text(json.dumps(issues))
    print(f"https://github.com/o/r/issues/{len(issues)}")
'''


@pytest.mark.skipif(
    shutil.which("jq") is None, reason="the workflow's steps use jq (GitHub's runners have it)"
)
def test_the_issue_step_opens_one_issue_per_release_and_edits_it_on_the_next_run(tmp_path):
    """The issue step of update.yml, run twice with a fake gh: issues are created on the first
    run only; the second run finds each by its title and edits it."""
    from patcher.ci import update

    step = next(s for s in load(UPDATE)["jobs"]["update"]["steps"] if "issue" in s.get("name", ""))
    passed, failed_on_vacc = report_on("current", "pass"), report_on("vacc", "fail")
    document = update.Update(
        "5.24.0",
        [
            update.Outcome("5.25.0", "supported", "verified: passed 30/30"),
            update.Outcome(
                "5.25.1", "drift", "strided-slice", drift_report="drift: codemod strided-slice, x"
            ),
            update.Outcome(
                "5.26.0",
                "failed",
                "current passed 32/32; vacc FAILED 30/32 (logits: mqa, mha)",
                failed_checks="on toolchain vacc: logits: mqa, mha",
                checked=[passed, failed_on_vacc],
            ),
        ],
    ).as_dict()
    (tmp_path / "update.json").write_text(json.dumps(document))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(FAKE_GH.replace("{python}", sys.executable))
    gh.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **load(UPDATE)["env"]}

    def run_step() -> list[list[str]]:
        calls = tmp_path / "gh-calls.txt"
        calls.unlink(missing_ok=True)
        proc = subprocess.run(
            ["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in calls.read_text().splitlines()]

    first = run_step()
    created = [c[c.index("--title") + 1] for c in first if c[:2] == ["issue", "create"]]
    assert created == [
        "patcher update: transformers 5.25.1 is not supported",
        "patcher update: transformers 5.26.0 is not supported",
    ]
    labels = [
        [c[i + 1] for i, a in enumerate(c) if a == "--label"] for c in first if c[:2] == ["issue", "create"]
    ]
    assert labels == [["patcher-update", "drift"], ["patcher-update", "verification-failed"]]
    assert not [c for c in first if c[:2] == ["issue", "edit"]]
    body = (tmp_path / "issue-body.md").read_text()  # the last one written: 5.26.0's
    assert "transformers **5.26.0**: **failed**" in body and "on toolchain vacc: logits: mqa, mha" in body
    assert body.splitlines()[-2:] == [
        "- toolchain `current`: current passed 32/32",
        "- toolchain `vacc`: vacc FAILED 30/32 (logits: mqa, mha)",
    ]

    second = run_step()
    assert not [c for c in second if c[:2] == ["issue", "create"]]
    assert [c[2] for c in second if c[:2] == ["issue", "edit"]] == ["1", "2"]
    assert json.loads((tmp_path / "gh-state.json").read_text()) == [
        {"number": 1, "title": created[0]},
        {"number": 2, "title": created[1]},
    ]


def test_ci_runs_the_readme_command_and_the_lowest_direct_tier():
    """``.ci/run`` runs the README's test command as written, then the unit tier with the
    lowest allowed version of every direct dependency (issue 9: honest floors)."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest -n 2"
    assert command in readme and command in script
    lowest = [line for line in script.splitlines() if "--resolution lowest-direct" in line]
    assert lowest and "uv pip install" in lowest[0] and "'.[test]'" in lowest[0]
    unit = [line for line in script.splitlines() if line.startswith(".venv-lowest/bin/python -m pytest")]
    assert unit and '-m "not network and not verify and not mutation"' in unit[0]
    assert script.index("--resolution lowest-direct") < script.index(unit[0])


def test_the_update_workflow_caches_the_vacc_base_under_its_own_name(tmp_path):
    """The vacc base venv (2.5 GB of downloads) has a cache of its own: the path and the name in
    its key come from patcher (a new recipe is a new key), the key names the exact Python."""
    from patcher.verify import envs, toolchains

    steps = load(UPDATE)["jobs"]["update"]["steps"]
    naming = next(s for s in steps if s.get("id") == "vacc")
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache") and "vacc" in str(s))
    assert cache["with"]["path"] == "${{ steps.vacc.outputs.dir }}"
    key = cache["with"]["key"]
    assert "${{ steps.vacc.outputs.name }}" in key and "${{ steps.python.outputs.python-version }}" in key
    assert (
        steps.index(naming)
        < steps.index(cache)
        < next(i for i, s in enumerate(steps) if s.get("id") == "update")
    )
    output = tmp_path / "github-output"
    env = {
        **os.environ,
        "GITHUB_OUTPUT": str(output),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    subprocess.run(["bash", "-e", "-c", naming["run"]], env=env, check=True, cwd=ROOT)
    assert output.read_text().splitlines() == [
        f"dir={envs.base_dir(toolchains.VACC)}",
        f"name={toolchains.VACC.base_name}",
    ]
    # the current toolchain's base takes torch's CPU wheel on a runner
    assert load(UPDATE)["env"]["PIP_EXTRA_INDEX_URL"] == envs.CPU_TORCH_INDEX


@pytest.mark.skipif(
    shutil.which("jq") is None, reason="the workflow's steps use jq (GitHub's runners have it)"
)
def test_both_families_are_merged_and_a_mistral_release_gets_its_own_issue(tmp_path):
    """The update step's merge of the two families' documents, then the issue step with a fake
    gh: the same release drifting in both families gets two issues, Gemma's under its usual
    title and Mistral's named "(mistral)"; the log lines name the family too."""
    from patcher.ci import update

    step = next(s for s in load(UPDATE)["jobs"]["update"]["steps"] if s.get("id") == "update")
    merge = next(line.strip() for line in step["run"].splitlines() if "jq -s" in line)
    logs = [line.strip() for line in step["run"].splitlines() if line.strip().startswith("jq -r")]
    drift = update.Outcome("5.25.1", "drift", "strided-slice", drift_report="drift: codemod strided-slice, x")
    refused = update.Checked("vacc", "refused", reason="it requires torch>=2.6")
    supported = update.Outcome("5.25.0", "supported", "verified", checked=[refused])
    for model in ("gemma", "mistral"):
        document = update.Update("5.24.0", [supported, drift], model=model).as_dict()
        (tmp_path / f"update-{model}.json").write_text(json.dumps(document))
    subprocess.run(["bash", "-c", merge], cwd=tmp_path, check=True)
    merged = json.loads((tmp_path / "update.json").read_text())
    assert [(r["version"], r["model"]) for r in merged["releases"]] == [
        ("5.25.0", "gemma"),
        ("5.25.1", "gemma"),
        ("5.25.0", "mistral"),
        ("5.25.1", "mistral"),
    ]
    out = "".join(
        subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
        for line in logs
    )
    assert "5.25.1 (mistral): drift: strided-slice\n" in out and "5.25.1: drift: strided-slice\n" in out
    assert "5.25.0 (mistral): toolchain vacc refuses it: it requires torch>=2.6\n" in out
    issues = next(s for s in load(UPDATE)["jobs"]["update"]["steps"] if "issue" in s.get("name", ""))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text(FAKE_GH.replace("{python}", sys.executable))
    (bin_dir / "gh").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **load(UPDATE)["env"]}
    proc = subprocess.run(
        ["bash", "-e", "-c", issues["run"]], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in (tmp_path / "gh-calls.txt").read_text().splitlines()]
    created = [c[c.index("--title") + 1] for c in calls if c[:2] == ["issue", "create"]]
    assert created == [
        "patcher update: transformers 5.25.1 is not supported",
        "patcher update: transformers 5.25.1 is not supported (mistral)",
    ]
    assert "transformers **5.25.1** (mistral): **drift**" in (tmp_path / "issue-body.md").read_text()
