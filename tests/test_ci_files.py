"""The CI integration offered to users is valid: the GitHub workflow and the pre-commit hook
parse, carry the fields their tools need, and every patcher command in them parses."""

from __future__ import annotations

import re
import shlex
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
    for path in ("patches/quantize.py", "patches/series", "patcher/engine.py", "upstream_pins/lock.json"):
        assert files.search(path), path
    assert not files.search("README.md")


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
