"""The series on the real upstream files of the release matrix (fetched and pinned-checked
by patcher itself, cached in the user cache)."""

from __future__ import annotations

import ast
import re

import pytest
from releases import DISTINCT_SUPPORTED, SUPPORTED, fetch, generated

from patcher.series import claims, engine
from patcher.series.contract import COMPANION_DIR, MODELING
from patcher.series.generate import generate
from patcher.series.notice import notice

pytestmark = pytest.mark.network

SERIES = engine.load_series()
MODELING_SERIES = [c for c in SERIES if c.FILE == MODELING]


@pytest.fixture(scope="module", params=SUPPORTED)
def output(request):
    return generated(request.param)


def test_every_codemod_reports_a_known_shape(output):
    names = [r.codemod for r in output.reports]
    assert names == [c.NAME for c in SERIES]
    for report, codemod in zip(output.reports, SERIES, strict=True):
        assert report.shapes, f"{report.codemod} met no shape"
        assert set(report.shapes) <= set(codemod.SHAPES)
        assert report.added or report.removed, f"{report.codemod} changed nothing on upstream"


def test_unclaimed_upstream_code_is_byte_identical(output):
    problems = claims.unclaimed_changes(
        output.upstream.modeling, output.files["modeling_gemma_vacc.py"], SERIES
    )
    assert problems == []


def test_series_is_idempotent_on_its_own_output(output):
    text = output.files["modeling_gemma_vacc.py"]
    up = output.upstream
    again = engine.run(
        text,
        SERIES,
        notice=notice(up, MODELING, up.modeling_sha256, [c.NAME for c in MODELING_SERIES]),
    )
    assert again.code == text


def test_output_keeps_the_import_contract(output):
    text = output.files["modeling_gemma_vacc.py"]
    tree = ast.parse(text)
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert {(n.level, n.module) for n in relative} <= {
        (1, "configuration_gemma_vacc"),
        (1, "quantization_vacc"),
    }
    assert not re.search(r"^\s*(from|import) flash_attn", text, re.M)
    assert "torch.fx.wrap" not in text
    assert "from .configuration_gemma_vacc import GemmaConfig" in text
    head = text.split('"""', 1)[0]
    assert "Licensed under the Apache License" in head
    assert f"from transformers {output.upstream.version};" in head
    assert output.upstream.modeling_sha256 in head
    assert f"patcher apply --transformers {output.upstream.version}" in head


def test_output_has_the_contract_units(output):
    tree = ast.parse(output.files["modeling_gemma_vacc.py"])
    top = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef)}
    assert {"_make_causal_mask", "_expand_mask", "apply_rotary_pos_emb"} <= set(top)
    assert "GemmaFlashAttention2" not in top and "GemmaSdpaAttention" not in top
    methods = {
        c: {f.name: f for f in top[c].body if isinstance(f, ast.FunctionDef)}
        for c in top
        if isinstance(top[c], ast.ClassDef)
    }
    assert "_prepare_decoder_attention_mask" in methods["GemmaModel"]
    assert {"prepare_inputs_for_generation", "_reorder_cache", "quantize"} <= set(methods["GemmaForCausalLM"])
    args = [a.arg for a in methods["GemmaAttention"]["forward"].args.args]
    assert args == [
        "self",
        "hidden_states",
        "attention_mask",
        "position_ids",
        "past_key_value",
        "output_attentions",
        "use_cache",
    ]
    args = [a.arg for a in methods["GemmaModel"]["forward"].args.args]
    assert "cache_position" not in args and args[:5] == [
        "self",
        "input_ids",
        "attention_mask",
        "position_ids",
        "past_key_values",
    ]


def test_configuration_output_has_absolute_imports(output):
    text = output.files["configuration_gemma_vacc.py"]
    tree = ast.parse(text)
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert "class GemmaConfig" in text
    assert claims.unclaimed_changes(output.upstream.configuration, text, SERIES) == []


def test_companion_is_shipped_as_is(output):
    assert output.files["quantization_vacc.py"] == (COMPANION_DIR / "quantization_vacc.py").read_text()


@pytest.mark.parametrize("version", DISTINCT_SUPPORTED)
def test_outputs_are_deterministic(version):
    """Generated twice in one process (the shared output and a fresh run) gives the same
    files: nothing of one run (the renders kept by ``_shapes.code``, say) leaks into the next.
    Across processes and hash seeds: test_determinism.py."""
    first = generated(version).files
    second = generate(fetch(version), engine.load_series()).files
    assert first == second
