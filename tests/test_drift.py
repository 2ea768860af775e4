"""Drift: a codemod meeting an upstream shape it does not know fails loudly, names itself,
the target, the shapes it knows and where it looked — and nothing is written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from releases import fetch

from patcher.cli import main

pytestmark = pytest.mark.network

VERSION = "4.40.2"


@pytest.fixture
def upstream_files(tmp_path: Path):
    up = fetch(VERSION)
    config = tmp_path / "configuration_gemma.py"
    config.write_text(up.configuration)

    def write(modeling: str) -> list[str]:
        path = tmp_path / "modeling_gemma.py"
        path.write_text(modeling)
        return ["--upstream", str(path), "--config-upstream", str(config)]

    return up.modeling, write


def run_apply(argv: list[str], out: Path, capsys) -> tuple[int, str]:
    code = main(["apply", *argv, "--out", str(out)])
    return code, capsys.readouterr().err


MUTILATIONS = {
    # id: (old, new, codemod, target)
    "attention-class-renamed": (
        "class GemmaAttention(nn.Module):",
        "class GemmaSelfAttention(nn.Module):",
        "attention",
        "GemmaAttention",
    ),
    "rotary-forward-removed": (
        "    @torch.no_grad()\n    def forward(self, x, position_ids, seq_len=None):",
        "    @torch.no_grad()\n    def forward_unused(self, x, position_ids, seq_len=None):",
        "rotary-embedding",
        "GemmaRotaryEmbedding.forward",
    ),
    "layer-signature-changed": (
        "        use_cache: Optional[bool] = False,\n"
        "        cache_position: Optional[torch.LongTensor] = None,\n",
        "        use_cache: Optional[bool] = False,\n",
        "decoder-layer-forward",
        "GemmaDecoderLayer.forward",
    ),
    "model-body-restructured": (
        "        hidden_states = hidden_states * normalizer\n",
        "        hidden_states = hidden_states\n",
        "mask-generation",
        "GemmaModel.forward",
    ),
    "sequence-lengths-rewritten": (
        "sequence_lengths = torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1",
        "sequence_lengths = input_ids.shape[-1] - 1",
        "sequence-lengths",
        "GemmaForSequenceClassification.forward",
    ),
}


@pytest.mark.parametrize("case", MUTILATIONS, ids=list(MUTILATIONS))
def test_mutilated_upstream_drifts_and_writes_nothing(case, upstream_files, tmp_path, capsys):
    modeling, write = upstream_files
    old, new, codemod, target = MUTILATIONS[case]
    assert old in modeling, "the test's anchor text is not in upstream any more"
    out = tmp_path / "out"
    code, err = run_apply(write(modeling.replace(old, new, 1)), out, capsys)
    assert code == 3
    lines = err.strip().splitlines()
    mine = [line for line in lines if f"codemod {codemod}, target {target}" in line]
    assert mine, err
    assert re.search(r"at modeling_gemma\.py:\d+", mine[0]), mine[0]
    assert "known shapes:" in mine[0]
    assert "Traceback" not in err
    assert not out.exists()


def test_every_drifting_codemod_is_reported_in_one_run(upstream_files, tmp_path, capsys):
    modeling, write = upstream_files
    for old, new, *_ in MUTILATIONS.values():
        modeling = modeling.replace(old, new, 1)
    code, err = run_apply(write(modeling), tmp_path / "out", capsys)
    assert code == 3
    reported = {m.group(1) for m in re.finditer(r"drift: codemod ([\w-]+),", err)}
    assert {case[2] for case in MUTILATIONS.values()} <= reported


def test_drift_line_points_at_the_upstream_line(upstream_files, tmp_path, capsys):
    modeling, write = upstream_files
    old, new, *_ = MUTILATIONS["model-body-restructured"]
    code, err = run_apply(write(modeling.replace(old, new, 1)), tmp_path / "out", capsys)
    line = int(re.search(r"modeling_gemma\.py:(\d+)", err).group(1))
    assert (
        modeling.splitlines()[line - 1].strip().startswith("def forward(")
        or "@" in modeling.splitlines()[line - 1]
    )
