"""End-to-end verification of the Mistral family (issue 14), each release in its own
environment against upstream's own ``MistralForCausalLM`` on the same random weights: one
release of the legacy shapes (4.40.2: rotary tables by seq_len, the legacy 4D mask with its
sliding_window argument dropped), one of the eager-attention era and the newest, plus a
sabotaged output that must fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from patcher.deploy.write import write_output
from patcher.series.generate import generate
from patcher.upstream import fetch, pins
from patcher.verify import release

pytestmark = [pytest.mark.verify, pytest.mark.network]

MISTRAL = pins.load_pins(model="mistral")


def _verify(version: str, tmp_path: Path, edit=None) -> release.VerifyReport:
    files = dict(generate(fetch.fetch(version, MISTRAL, model="mistral")).files)
    assert set(files) == {"modeling_mistral_vacc.py", "configuration_mistral_vacc.py", "quantization_vacc.py"}
    if edit:
        files["modeling_mistral_vacc.py"] = edit(files["modeling_mistral_vacc.py"])
    out = tmp_path / "out"
    write_output(files, out)
    return release.verify_output(version, out, model="mistral")


@pytest.mark.parametrize("version", ["4.40.2", "4.45.2", "5.24.0"])
def test_mistral_release_passes_and_reports_the_sliding_window_as_a_decision(version, tmp_path):
    report = _verify(version, tmp_path)
    assert not report.crashed, report.stderr_tail
    assert report.ok, release.render_table(report)
    passed = [c for c in report.checks if c.status == "pass"]
    decisions = {c.name for c in report.checks if c.decision}
    assert len(passed) >= 30, release.render_table(report)  # 30 and 2 not applicable before 4.42
    # the vacc form's plain causal mask against upstream's window of 3 on 7 tokens: reported
    # as the vendor's decision, never as a pass
    assert decisions == {"sliding_window"}, release.render_table(report)


def test_mistral_verification_catches_a_wrong_attention_scale(tmp_path):
    def sabotage(text: str) -> str:
        lines = text.splitlines(keepends=True)
        hits = [
            i
            for i, line in enumerate(lines)
            if line.strip().startswith("attn_weights = torch.matmul(query_states")
        ]
        assert len(hits) == 1
        lines[hits[0]] = lines[hits[0]].rstrip("\n") + " * 1.25\n"  # the scores scaled differently
        return "".join(lines)

    report = _verify("5.24.0", tmp_path, sabotage)
    assert {"logits", "decode"} <= {c.name for c in report.failed}, release.render_table(report)


def test_verify_upstream_with_model_mistral_uses_the_local_mistral_as_the_reference(tmp_path, capsys):
    """``verify --model mistral --upstream FILE``: a local Mistral whose RMSNorm is rescaled (a
    line no codemod claims, so the output carries it) verifies against itself, which it can only
    do if the check process loads FILE in place of the release's own Mistral; the report names
    Mistral's files."""
    import json

    from patcher.cli import main

    up = fetch.fetch("5.24.0", MISTRAL, model="mistral")
    rescaled = up.modeling.replace(
        "torch.rsqrt(variance + self.variance_epsilon)", "torch.rsqrt(variance + self.variance_epsilon) * 1.5"
    )
    assert rescaled.count("* 1.5") == 1
    (tmp_path / "modeling_mistral.py").write_text(rescaled)
    (tmp_path / "configuration_mistral.py").write_text(up.configuration)
    argv = ["verify", "--model", "mistral", "--upstream", str(tmp_path / "modeling_mistral.py")]
    assert main([*argv, "--transformers", "5.24.0", "--json"]) == 0, capsys.readouterr().err[-2000:]
    report = json.loads(capsys.readouterr().out)
    assert report["reference"].endswith("(not its own Mistral)")
    assert set(report["upstream"]) == {"modeling_mistral.py", "configuration_mistral.py"}
    assert {c["name"] for c in report["checks"] if c["status"] == "decision"} == {"sliding_window"}
