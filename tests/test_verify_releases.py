"""End-to-end verification (SPEC §6) of generated outputs, each release in its own
environment against upstream's own Gemma on the same random weights."""

from __future__ import annotations

from pathlib import Path

import pytest
from releases import VERIFIED, generated

from patcher.deploy.write import write_output
from patcher.verify import release

pytestmark = [pytest.mark.verify, pytest.mark.network]


def _verify(version: str, tmp_path: Path, edit=None) -> release.VerifyReport:
    files = generated(version).files
    if edit:
        files["modeling_gemma_vacc.py"] = edit(files["modeling_gemma_vacc.py"])
    out = tmp_path / "out"
    write_output(files, out)
    return release.verify_output(version, out)


@pytest.mark.parametrize("version", VERIFIED)
def test_release_passes_every_check(version, tmp_path):
    report = _verify(version, tmp_path)
    assert not report.crashed, report.stderr_tail
    names = {(c.name, c.config) for c in report.checks}
    assert names == {(n, c) for n in release.CHECK_NAMES for c in release.CONFIGS}
    assert report.ok, release.render_table(report)


def test_verification_catches_a_wrong_attention_scale(tmp_path):
    """The checks can fail: the same output with the scores scaled differently must not pass."""

    def sabotage(text: str) -> str:
        old = (
            "attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)"
        )
        assert old in text
        return text.replace(old, old.replace("math.sqrt(self.head_dim)", "self.head_dim"))

    report = _verify("4.40.2", tmp_path, sabotage)
    failed = {c.name for c in report.failed}
    assert {"logits", "logits_padded", "sequence_classification"} <= failed


def test_verification_catches_a_broken_cache(tmp_path):
    """A tuple cache returned before rotary is applied decodes wrongly: decode and greedy fail."""

    def sabotage(text: str) -> str:
        old = "past_key_value = (key_states, value_states) if use_cache else None"
        assert old in text
        return text.replace(old, "past_key_value = (key_states * 1.5, value_states) if use_cache else None")

    report = _verify("4.40.2", tmp_path, sabotage)
    failed = {c.name for c in report.failed}
    assert "decode" in failed and "logits" not in failed
