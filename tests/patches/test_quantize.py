"""quantize: GemmaForCausalLM.quantize(weight_bit_width) from .quantization_vacc (SPEC §4.10)."""

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

from patches.quantize import Quantize

# Not targets: must come through byte for byte.
MODEL = """\
class GemmaModel(GemmaPreTrainedModel):
    def quantize(self, bits):  # not GemmaForCausalLM: not a target
        return self
"""
CAUSAL_LM = """

# Copied from transformers.models.llama.modeling_llama.LlamaForCausalLM with LLAMA->GEMMA,Llama->Gemma,llama->gemma
class GemmaForCausalLM(GemmaPreTrainedModel):
    _tied_weights_keys = ["lm_head.weight"]

    def get_decoder(self):
        return self.model  # keep   me

    @staticmethod
    def _reorder_cache(past_key_values, beam_idx):
        return past_key_values
"""  # noqa: E501
QUANTIZE = '''
    def quantize(self, weight_bit_width):
        """Replace the attention and MLP projections with per-channel int8 weight-only linears (vacc)."""
        from .quantization_vacc import quantize_model

        return quantize_model(self, weight_bit_width)
'''
AFTER = """

class GemmaForSequenceClassification(GemmaPreTrainedModel):
    pass
"""

UPSTREAM = MODEL + CAUSAL_LM + AFTER
OUTPUT = MODEL + CAUSAL_LM + QUANTIZE + AFTER


def test_no_quantize() -> None:
    assert_codemod(Quantize, UPSTREAM, OUTPUT, ("no-quantize",))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(OUTPUT, id="quantize_noop"),
        pytest.param(
            OUTPUT.replace(
                "        from .quantization_vacc import quantize_model\n\n",
                "        from .quantization_vacc import (\n            quantize_model,  # W8A16\n        )\n",
            ),
            id="reformatted-own-output_noop",
        ),
    ],
)
def test_noop(source: str) -> None:
    assert_noop(Quantize, source, ("quantize",))


def test_unrelated_code_untouched() -> None:
    code, _ = apply(Quantize, UPSTREAM)
    for unit in (MODEL, CAUSAL_LM, AFTER):
        assert unit in code


def test_idempotent() -> None:
    assert_idempotent(Quantize, UPSTREAM)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(UPSTREAM.replace("class GemmaForCausalLM(", "class GemmaLM("), id="class-renamed"),
        pytest.param(MODEL + AFTER, id="class-removed"),
        pytest.param(
            UPSTREAM.replace(
                "    @staticmethod\n",
                "    def quantize(self, bits):\n        return torch.quantization.quantize_dynamic(self)\n\n"
                "    @staticmethod\n",
            ),
            id="upstream-defines-quantize",
        ),
        pytest.param(
            OUTPUT.replace("quantize_model(self, weight_bit_width)", "quantize_model(self, 4)"),
            id="own-output-edited",
        ),
    ],
)
def test_drift(source: str) -> None:
    assert_drift(Quantize, source, "GemmaForCausalLM.quantize")


def test_formatting_insensitive() -> None:
    reformatted = UPSTREAM.replace('["lm_head.weight"]', "['lm_head.weight']").replace(
        "        return self.model  # keep   me\n", "        return (\n            self.model\n        )\n"
    )
    assert_formatting_insensitive(Quantize, UPSTREAM, reformatted)
