"""mask-helpers: _make_causal_mask, _expand_mask, GemmaModel._prepare_decoder_attention_mask (SPEC §4.2)."""

from __future__ import annotations

import pytest
from codemod_cases import (
    apply,
    assert_codemod,
    assert_drift,
    assert_formatting_insensitive,
    assert_idempotent,
    assert_noop,
)

from patches.mask_helpers import MaskHelpers

HEAD = '''\
""" PyTorch Gemma model."""

import torch

logger = logging.get_logger(__name__)  # keep   me
'''

# Not targets: must come through byte for byte.
RMSNORM = """

# Llama does x.to(float16) * w whilst Gemma is (x * w).to(float16)
class GemmaRMSNorm(nn.Module):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
"""

MODEL_TOP = '''

class GemmaModel(GemmaPreTrainedModel):
    """Transformer decoder."""

    def __init__(self, config: GemmaConfig):
        super().__init__(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens
'''

MODEL_FORWARD = """
    @add_start_docstrings_to_model_forward(GEMMA_INPUTS_DOCSTRING)
    # Ignore copy
    def forward(self, input_ids=None, attention_mask=None):
        return self.layers(input_ids, attention_mask)
"""

# What the contract asks for, written out.
MAKE_CAUSAL_MASK = '''

def _make_causal_mask(
    input_ids_shape: torch.Size, dtype: torch.dtype, device: torch.device, past_key_values_length: int = 0
):
    """
    Make the additive causal mask used for uni-directional self-attention (vacc).
    """
    bsz, tgt_len = input_ids_shape
    mask = torch.full((tgt_len, tgt_len), torch.finfo(dtype).min, device=device)
    mask_cond = torch.arange(mask.size(-1), device=device)
    mask.masked_fill_(mask_cond < (mask_cond + 1).view(mask.size(-1), 1), 0)
    mask = mask.to(dtype)

    if past_key_values_length > 0:
        mask = torch.cat([torch.zeros(tgt_len, past_key_values_length, dtype=dtype, device=device), mask], dim=-1)
    return mask[None, None, :, :].expand(bsz, 1, tgt_len, tgt_len + past_key_values_length)
'''  # noqa: E501

EXPAND_MASK = '''

def _expand_mask(mask: torch.Tensor, dtype: torch.dtype, tgt_len=None):
    """
    Expands attention_mask from `[bsz, seq_len]` to the additive `[bsz, 1, tgt_seq_len, src_seq_len]` (vacc).
    """
    bsz, src_len = mask.size()
    tgt_len = tgt_len if tgt_len is not None else src_len

    expanded_mask = mask[:, None, None, :].expand(bsz, 1, tgt_len, src_len).to(dtype)

    inverted_mask = 1.0 - expanded_mask

    return inverted_mask.masked_fill(inverted_mask.to(torch.bool), torch.finfo(dtype).min)
'''

PREPARE = """
    def _prepare_decoder_attention_mask(self, attention_mask, input_shape, inputs_embeds, past_key_values_length):
        # vacc: [bsz, seq_len] -> additive [bsz, 1, tgt_seq_len, src_seq_len], causal part only when tgt_len > 1
        combined_attention_mask = None
        if input_shape[-1] > 1:
            combined_attention_mask = _make_causal_mask(
                input_shape,
                inputs_embeds.dtype,
                device=inputs_embeds.device,
                past_key_values_length=past_key_values_length,
            )

        if attention_mask is not None:
            expanded_attn_mask = _expand_mask(attention_mask, inputs_embeds.dtype, tgt_len=input_shape[-1]).to(
                inputs_embeds.device
            )
            combined_attention_mask = (
                expanded_attn_mask if combined_attention_mask is None else expanded_attn_mask + combined_attention_mask
            )

        return combined_attention_mask
"""  # noqa: E501

UPSTREAM = HEAD + RMSNORM + MODEL_TOP + MODEL_FORWARD
OUTPUT = HEAD + MAKE_CAUSAL_MASK + EXPAND_MASK + RMSNORM + MODEL_TOP + PREPARE + MODEL_FORWARD

# GemmaModel first: the helpers still go before it (the first module-level class).
MODEL_ONLY = HEAD + MODEL_TOP + MODEL_FORWARD
MODEL_ONLY_OUTPUT = HEAD + MAKE_CAUSAL_MASK + EXPAND_MASK + MODEL_TOP + PREPARE + MODEL_FORWARD


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(UPSTREAM, OUTPUT, id="absent"),
        pytest.param(MODEL_ONLY, MODEL_ONLY_OUTPUT, id="absent-model-first"),
    ],
)
def test_adds_the_helpers(before: str, after: str) -> None:
    assert_codemod(MaskHelpers, before, after, ("absent",))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(OUTPUT, id="present_noop"),
        pytest.param(MODEL_ONLY_OUTPUT, id="present-model-first_noop"),
        pytest.param(
            HEAD
            + MAKE_CAUSAL_MASK.replace('"""', "'''").replace(
                "device=device), mask]", "device=device),\n mask]"
            )
            + EXPAND_MASK.replace("    inverted_mask = 1.0", "    # a comment\n    inverted_mask = 1.0")
            + RMSNORM
            + MODEL_TOP
            + PREPARE.replace("combined_attention_mask = None", "combined_attention_mask = (None)")
            + MODEL_FORWARD,
            id="present-reformatted_noop",
        ),
    ],
)
def test_noop(source: str) -> None:
    assert_noop(MaskHelpers, source, ("present",))


def test_unrelated_code_untouched() -> None:
    code, _ = apply(MaskHelpers, UPSTREAM)
    for unit in (HEAD, RMSNORM, MODEL_TOP, MODEL_FORWARD):
        assert unit in code


@pytest.mark.parametrize("source", [UPSTREAM, MODEL_ONLY], ids=["upstream", "model-first"])
def test_idempotent(source: str) -> None:
    assert_idempotent(MaskHelpers, source)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        pytest.param(
            UPSTREAM.replace("class GemmaModel", "class Gemma2Model"),
            "GemmaModel._prepare_decoder_attention_mask",
            id="model-renamed",
        ),
        pytest.param(HEAD + RMSNORM, "GemmaModel._prepare_decoder_attention_mask", id="model-removed"),
        pytest.param(
            UPSTREAM.replace("def forward(", "def call("),
            "GemmaModel._prepare_decoder_attention_mask",
            id="model-forward-renamed",
        ),
        pytest.param(
            UPSTREAM + "\n\ndef _make_causal_mask(shape, dtype, device):\n    return None\n",
            "_make_causal_mask",
            id="upstream-defines-make-causal-mask",
        ),
        pytest.param(UPSTREAM + "\n" + EXPAND_MASK, "_expand_mask", id="only-expand-mask-present"),
        pytest.param(
            OUTPUT.replace("expanded_attn_mask + combined_attention_mask", "combined_attention_mask"),
            "_make_causal_mask",
            id="own-output-edited",
        ),
        pytest.param(
            UPSTREAM.replace(
                "    def get_input_embeddings",
                "    def _prepare_decoder_attention_mask(self, *args):\n"
                "        return None\n\n"
                "    def get_input_embeddings",
            ),
            "GemmaModel._prepare_decoder_attention_mask",
            id="upstream-defines-prepare-method",
        ),
    ],
)
def test_drift(source: str, target: str) -> None:
    assert_drift(MaskHelpers, source, target)


def test_formatting_insensitive() -> None:
    reformatted = (
        HEAD.replace('"""', "'''")
        + "class GemmaRMSNorm(nn.Module):\n    def forward(self, x): return x * torch.rsqrt(\n"
        + "        x.pow(2).mean(-1, keepdim=True) + self.eps)\n"
        + MODEL_TOP.replace('"""Transformer decoder."""', "'Transformer decoder.'  # doc")
        + MODEL_FORWARD.replace("    # Ignore copy\n", "")
    )
    assert_formatting_insensitive(MaskHelpers, UPSTREAM, reformatted)
