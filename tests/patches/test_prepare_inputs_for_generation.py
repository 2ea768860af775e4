"""prepare-inputs-for-generation: the tuple-cache prepare_inputs_for_generation and _reorder_cache (§4.9)."""

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

from patches.prepare_inputs_for_generation import PrepareInputsForGeneration

# Not targets: must come through byte for byte.
CLASS_TOP = """\
class GemmaForCausalLM(GemmaPreTrainedModel):
    _tied_weights_keys = ["lm_head.weight"]

    def forward(self, input_ids=None, past_key_values=None, cache_position=None):
        return self.lm_head(self.model(input_ids, past_key_values, cache_position=cache_position)[0])  # keep   me
"""  # noqa: E501
OTHER_HEAD = """

class GemmaForSequenceClassification(GemmaPreTrainedModel):
    def prepare_inputs_for_generation(self, input_ids, cache_position=None):  # not a target
        return {"input_ids": input_ids, "cache_position": cache_position}
"""

CACHE_AWARE = """
    def prepare_inputs_for_generation(
        self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None, cache_position=None, **kwargs
    ):
        past_length = 0
        if past_key_values is not None:
            if isinstance(past_key_values, Cache):
                past_length = cache_position[0] if cache_position is not None else past_key_values.get_seq_length()
            else:
                past_length = past_key_values[0][0].shape[2]
            input_ids = input_ids[:, past_length:]

        model_inputs = {"input_ids": input_ids.contiguous()}
        model_inputs.update({"cache_position": cache_position, "past_key_values": past_key_values})
        return model_inputs
"""  # noqa: E501

# The contract's form, written out.
TUPLE_CACHE = """
    def prepare_inputs_for_generation(
        self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None, **kwargs
    ):
        # vacc: tuple cache; generate() of some releases starts with an (empty) Cache object, and
        # 5.24+ hands the cache over as `cache`
        if past_key_values is None:
            past_key_values = kwargs.get("cache")
        if past_key_values is not None and not isinstance(past_key_values, tuple):
            past_key_values = past_key_values.to_legacy_cache() if past_key_values.get_seq_length() else None
        # once the cache exists only the last token is fed
        if past_key_values:
            input_ids = input_ids[:, -1:]

        position_ids = kwargs.get("position_ids", None)
        if attention_mask is not None and position_ids is None:
            # create position_ids on the fly for batch generation
            position_ids = attention_mask.long().cumsum(-1) - 1
            position_ids.masked_fill_(attention_mask == 0, 1)
        if past_key_values and position_ids is not None:
            # (also when generate() hands over positions for the whole sequence, as 5.4+ does)
            position_ids = position_ids[:, -1].unsqueeze(-1)

        # if `inputs_embeds` are passed, we only want to use them in the 1st generation step
        if inputs_embeds is not None and not past_key_values:
            model_inputs = {"inputs_embeds": inputs_embeds}
        else:
            model_inputs = {"input_ids": input_ids}

        model_inputs.update(
            {
                "position_ids": position_ids,
                "past_key_values": past_key_values,
                "use_cache": kwargs.get("use_cache"),
                "attention_mask": attention_mask,
            }
        )
        return model_inputs
"""

REORDER = """
    @staticmethod
    def _reorder_cache(past_key_values, beam_idx):
        reordered_past = ()
        for layer_past in past_key_values:
            reordered_past += (
                tuple(past_state.index_select(0, beam_idx.to(past_state.device)) for past_state in layer_past),
            )
        return reordered_past
"""  # noqa: E501
CACHE_REORDER = """
    def _reorder_cache(self, past_key_values, beam_idx):
        past_key_values.reorder_cache(beam_idx)
        return past_key_values
"""

UPSTREAM = CLASS_TOP + CACHE_AWARE + REORDER + OTHER_HEAD
OUTPUT = CLASS_TOP + TUPLE_CACHE + REORDER + OTHER_HEAD


@pytest.mark.parametrize(
    ("before", "shapes"),
    [
        pytest.param(UPSTREAM, ("cache-class-aware", "tuple-reorder-cache"), id="cache-class-aware"),
        pytest.param(CLASS_TOP + CACHE_AWARE + OTHER_HEAD, ("cache-class-aware",), id="no-reorder-cache"),
        pytest.param(
            CLASS_TOP + CACHE_AWARE + CACHE_REORDER + OTHER_HEAD,
            ("cache-class-aware",),
            id="cache-object-reorder-cache",
        ),
        pytest.param(
            CLASS_TOP + TUPLE_CACHE + OTHER_HEAD, ("tuple-cache",), id="tuple-cache-without-reorder"
        ),
        pytest.param(CLASS_TOP + OTHER_HEAD, ("inherited",), id="inherited-from-generation-mixin"),
        pytest.param(
            CLASS_TOP + REORDER + OTHER_HEAD, ("inherited", "tuple-reorder-cache"), id="inherited-reorder"
        ),
    ],
)
def test_rewrites(before: str, shapes: tuple[str, ...]) -> None:
    assert_codemod(PrepareInputsForGeneration, before, OUTPUT, shapes)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(OUTPUT, id="tuple-cache_noop"),
        pytest.param(
            OUTPUT.replace('kwargs.get("use_cache")', "kwargs.get('use_cache')").replace(
                "            # create position_ids on the fly for batch generation\n", ""
            ),
            id="reformatted-own-output_noop",
        ),
    ],
)
def test_noop(source: str) -> None:
    assert_noop(PrepareInputsForGeneration, source, ("tuple-cache", "tuple-reorder-cache"))


def test_unrelated_code_untouched() -> None:
    code, _ = apply(PrepareInputsForGeneration, UPSTREAM)
    for unit in (CLASS_TOP, OTHER_HEAD):
        assert unit in code


def test_idempotent() -> None:
    assert_idempotent(PrepareInputsForGeneration, UPSTREAM)
    assert_idempotent(PrepareInputsForGeneration, CLASS_TOP + CACHE_AWARE)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        pytest.param(
            UPSTREAM.replace("class GemmaForCausalLM(", "class GemmaLM("),
            "GemmaForCausalLM.prepare_inputs_for_generation",
            id="class-renamed",
        ),
        pytest.param(OTHER_HEAD, "GemmaForCausalLM.prepare_inputs_for_generation", id="class-removed"),
        pytest.param(
            CLASS_TOP.replace("    def forward(", "    def call(") + REORDER,
            "GemmaForCausalLM.prepare_inputs_for_generation",
            id="neither-prepare-nor-forward",
        ),
        pytest.param(
            CLASS_TOP + "\n    def prepare_inputs_for_generation(self, input_ids, **kwargs):\n"
            '        return {"input_ids": input_ids}\n',
            "GemmaForCausalLM.prepare_inputs_for_generation",
            id="prepare-unknown-form",
        ),
    ],
)
def test_drift(source: str, target: str) -> None:
    assert_drift(PrepareInputsForGeneration, source, target)


def test_formatting_insensitive() -> None:
    reformatted = (
        CLASS_TOP.replace('["lm_head.weight"]', "['lm_head.weight']")
        + CACHE_AWARE.replace(
            "            input_ids = input_ids[:, past_length:]\n",
            "            # keep the unprocessed tokens\n            input_ids = input_ids[\n"
            "                :, past_length:\n            ]\n",
        )
        + REORDER.replace("        reordered_past = ()\n", "        reordered_past = (  )  # empty\n")
        + OTHER_HEAD
    )
    assert_formatting_insensitive(PrepareInputsForGeneration, UPSTREAM, reformatted)
