"""mask-generation: tuple cache and explicit masks in GemmaModel.forward, heads without cache_position."""

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

from patches.mask_generation import MaskGeneration

# Not targets: must come through byte for byte.
LAYER = """\
class GemmaDecoderLayer(nn.Module):
    def forward(self, hidden_states, cache_position=None):  # another codemod's target
        return (hidden_states,)
"""

MODEL_TOP = '''

class GemmaModel(GemmaPreTrainedModel):
    """Transformer decoder."""

    def __init__(self, config: GemmaConfig):
        super().__init__(config)
        self.post_init()
'''

DYNAMIC_FORWARD = """
    @add_start_docstrings_to_model_forward(GEMMA_INPUTS_DOCSTRING)
    # Ignore copy
    def forward(
        self,
        input_ids: torch.LongTensor = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[List[torch.FloatTensor]] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        cache_position: Optional[torch.LongTensor] = None,
    ) -> Union[Tuple, BaseModelOutputWithPast]:
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        past_seen_tokens = 0
        if use_cache:  # kept for BC (cache positions)
            past_key_values = DynamicCache.from_legacy_cache(past_key_values)
            past_seen_tokens = past_key_values.get_seq_length()

        if cache_position is None:
            cache_position = torch.arange(past_seen_tokens, past_seen_tokens + inputs_embeds.shape[1])

        causal_mask = self._update_causal_mask(attention_mask, inputs_embeds, cache_position, past_seen_tokens)

        # embed positions
        hidden_states = inputs_embeds

        # normalized
        # Gemma downcasts the below to float16, causing sqrt(3072)=55.4256 to become 55.5
        normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)
        hidden_states = hidden_states * normalizer

        for decoder_layer in self.layers:
            if self.gradient_checkpointing and self.training:
                layer_outputs = self._gradient_checkpointing_func(
                    decoder_layer.__call__, hidden_states, causal_mask, position_ids, cache_position
                )
            else:
                layer_outputs = decoder_layer(hidden_states, attention_mask=causal_mask, cache_position=cache_position)
            hidden_states = layer_outputs[0]

        hidden_states = self.norm(hidden_states)
        next_cache = next_decoder_cache.to_legacy_cache() if isinstance(next_decoder_cache, Cache) else None
        if not return_dict:
            return tuple(v for v in [hidden_states, next_cache] if v is not None)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=next_cache,
        )

    def _update_causal_mask(self, attention_mask, input_tensor, cache_position, past_seen_tokens):
        if self.config._attn_implementation == "flash_attention_2":
            return None
        return attention_mask
"""  # noqa: E501

NORMALIZER = """\
        # normalized
        # Gemma downcasts the below to float16, causing sqrt(3072)=55.4256 to become 55.5
        normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)
        hidden_states = hidden_states * normalizer
"""
# 4.38.0 scales in one statement.
NORMALIZER_438 = """\
        # normalized
        hidden_states = hidden_states * (self.config.hidden_size**0.5)
"""

# The contract's forward, with upstream's decorators, normaliser and output class.
TUPLE_FORWARD = (
    """
    @add_start_docstrings_to_model_forward(GEMMA_INPUTS_DOCSTRING)
    # Ignore copy
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict

        # vacc: the cache is a tuple of one (key, value) pair per layer
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("You cannot specify both input_ids and inputs_embeds at the same time")
        elif input_ids is not None:
            batch_size, seq_length = input_ids.shape[:2]
        elif inputs_embeds is not None:
            batch_size, seq_length = inputs_embeds.shape[:2]
        else:
            raise ValueError("You have to specify either input_ids or inputs_embeds")

        past_key_values_length = 0
        if past_key_values is not None:
            past_key_values_length = past_key_values[0][0].shape[2]

        if position_ids is None:
            device = input_ids.device if input_ids is not None else inputs_embeds.device
            position_ids = torch.arange(
                past_key_values_length, seq_length + past_key_values_length, dtype=torch.long, device=device
            )
            position_ids = position_ids.unsqueeze(0)

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        # vacc: explicit additive mask, all ones over past + current by default
        if attention_mask is None:
            attention_mask = torch.ones(
                (batch_size, seq_length + past_key_values_length), dtype=torch.bool, device=inputs_embeds.device
            )
        attention_mask = self._prepare_decoder_attention_mask(
            attention_mask, (batch_size, seq_length), inputs_embeds, past_key_values_length
        )

        # embed positions
        hidden_states = inputs_embeds

"""  # noqa: E501
    + NORMALIZER
    + """
        if self.gradient_checkpointing and self.training and use_cache:
            logger.warning_once(
                "`use_cache=True` is incompatible with gradient checkpointing. Setting `use_cache=False`."
            )
            use_cache = False

        # decoder layers
        all_hidden_states = () if output_hidden_states else None
        all_self_attns = () if output_attentions else None
        next_decoder_cache = () if use_cache else None

        for idx, decoder_layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden_states += (hidden_states,)

            past_key_value = past_key_values[idx] if past_key_values is not None else None

            if self.gradient_checkpointing and self.training:
                layer_outputs = self._gradient_checkpointing_func(
                    decoder_layer.__call__,
                    hidden_states,
                    attention_mask,
                    position_ids,
                    past_key_value,
                    output_attentions,
                    use_cache,
                )
            else:
                layer_outputs = decoder_layer(
                    hidden_states,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    past_key_value=past_key_value,
                    output_attentions=output_attentions,
                    use_cache=use_cache,
                )

            hidden_states = layer_outputs[0]

            if use_cache:
                next_decoder_cache += (layer_outputs[2 if output_attentions else 1],)

            if output_attentions:
                all_self_attns += (layer_outputs[1],)

        hidden_states = self.norm(hidden_states)

        # add hidden states from the last decoder layer
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        next_cache = next_decoder_cache if use_cache else None
        if not return_dict:
            return tuple(v for v in [hidden_states, next_cache, all_hidden_states, all_self_attns] if v is not None)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=next_cache,
            hidden_states=all_hidden_states,
            attentions=all_self_attns,
        )
"""  # noqa: E501
)

HEAD_PARAMS = """\
        input_ids: torch.LongTensor = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[List[torch.FloatTensor]] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
"""
MODEL_ARGS = """\
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
"""


def causal_lm(cache_position: bool) -> str:
    return (
        """

class GemmaForCausalLM(GemmaPreTrainedModel):
    _tied_weights_keys = ["lm_head.weight"]

    @add_start_docstrings_to_model_forward(GEMMA_INPUTS_DOCSTRING)
    def forward(
        self,
"""
        + HEAD_PARAMS
        + ("        cache_position: Optional[torch.LongTensor] = None,\n" if cache_position else "")
        + """\
    ) -> Union[Tuple, CausalLMOutputWithPast]:
        outputs = self.model(
"""
        + MODEL_ARGS
        + ("            cache_position=cache_position,\n" if cache_position else "")
        + """\
        )
        logits = self.lm_head(outputs[0]).float()
        return (logits,) + outputs[1:]

    def prepare_inputs_for_generation(self, input_ids, cache_position=None, **kwargs):
        return {"input_ids": input_ids, "cache_position": cache_position}  # another codemod's target
"""
    )


SEQUENCE_CLASSIFICATION = (
    """

class GemmaForSequenceClassification(GemmaPreTrainedModel):
    def forward(
        self,
"""
    + HEAD_PARAMS
    + """\
    ) -> Union[Tuple, SequenceClassifierOutputWithPast]:
        transformer_outputs = self.model(
"""
    + MODEL_ARGS
    + """\
        )
        return self.score(transformer_outputs[0])
"""
)

UPSTREAM = LAYER + MODEL_TOP + DYNAMIC_FORWARD + causal_lm(True) + SEQUENCE_CLASSIFICATION
OUTPUT = LAYER + MODEL_TOP + TUPLE_FORWARD + causal_lm(False) + SEQUENCE_CLASSIFICATION
ALL_SHAPES = ("dynamic-cache", "head-cache-position", "head-tuple-cache")


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(UPSTREAM, OUTPUT, id="dynamic-cache"),
        pytest.param(
            UPSTREAM.replace(NORMALIZER, NORMALIZER_438),
            OUTPUT.replace(NORMALIZER, NORMALIZER_438),
            id="dynamic-cache-inline-normalizer",
        ),
        pytest.param(
            UPSTREAM.replace(
                "    ) -> Union[Tuple, BaseModelOutputWithPast]:\n",
                '    ) -> Union[Tuple, BaseModelOutputWithPast]:\n        """Docs."""\n',
            ),
            OUTPUT.replace(
                "        output_attentions = output_attentions if",
                '        """Docs."""\n        output_attentions = output_attentions if',
                1,
            ),
            id="dynamic-cache-docstring-kept",
        ),
    ],
)
def test_rewrites(before: str, after: str) -> None:
    assert_codemod(MaskGeneration, before, after, ALL_SHAPES)


def test_model_already_tuple_cache() -> None:
    before = LAYER + MODEL_TOP + TUPLE_FORWARD + causal_lm(True) + SEQUENCE_CLASSIFICATION
    assert_codemod(MaskGeneration, before, OUTPUT, ("tuple-cache", "head-cache-position", "head-tuple-cache"))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(OUTPUT, id="tuple-cache_noop"),
        pytest.param(
            OUTPUT.replace("        # embed positions\n", "").replace(
                '"You have to specify either input_ids or inputs_embeds"',
                "'You have to specify either input_ids or inputs_embeds'",
            ),
            id="reformatted-own-output_noop",
        ),
    ],
)
def test_noop(source: str) -> None:
    assert_noop(MaskGeneration, source, ("tuple-cache", "head-tuple-cache"))


def test_unrelated_code_untouched() -> None:
    code, _ = apply(MaskGeneration, UPSTREAM)
    for unit in (
        LAYER,
        MODEL_TOP,
        SEQUENCE_CLASSIFICATION,
        'return {"input_ids": input_ids, "cache_position"',
    ):
        assert unit in code
    assert "_update_causal_mask" not in code


def test_idempotent() -> None:
    assert_idempotent(MaskGeneration, UPSTREAM)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        pytest.param(
            UPSTREAM.replace("class GemmaModel(", "class GemmaTextModel("),
            "GemmaModel.forward",
            id="model-renamed",
        ),
        pytest.param(
            LAYER + causal_lm(True) + SEQUENCE_CLASSIFICATION, "GemmaModel.forward", id="model-removed"
        ),
        pytest.param(
            UPSTREAM.replace(
                "    def forward(\n        self,\n        input_ids: torch.LongTensor = None,\n"
                "        attention_mask: Optional[torch.Tensor] = None,\n"
                "        position_ids: Optional[torch.LongTensor] = None,\n"
                "        past_key_values: Optional[List[torch.FloatTensor]] = None,\n"
                "        inputs_embeds: Optional[torch.FloatTensor] = None,\n"
                "        use_cache",
                "    def run(\n        self,\n        input_ids: torch.LongTensor = None,\n"
                "        attention_mask: Optional[torch.Tensor] = None,\n"
                "        position_ids: Optional[torch.LongTensor] = None,\n"
                "        past_key_values: Optional[List[torch.FloatTensor]] = None,\n"
                "        inputs_embeds: Optional[torch.FloatTensor] = None,\n"
                "        use_cache",
            ),
            "GemmaModel.forward",
            id="model-forward-renamed",
        ),
        pytest.param(
            UPSTREAM.replace("causal_mask = self._update_causal_mask(", "causal_mask = build_mask("),
            "GemmaModel.forward",
            id="unknown-mask-builder",
        ),
        pytest.param(
            UPSTREAM.replace(
                "    def forward(\n        self,\n        input_ids: torch.LongTensor = None,",
                "    @intercept_outputs\n"
                "    def forward(\n        self,\n        input_ids: torch.LongTensor = None,",
                1,
            ),
            "GemmaModel.forward",
            id="unknown-decorator",
        ),
        pytest.param(
            UPSTREAM.replace(
                "self._gradient_checkpointing_func(\n                    decoder_layer.__call__,",
                "checkpoint(\n                    decoder_layer.__call__,",
            ),
            "GemmaModel.forward",
            id="unknown-checkpointing",
        ),
        pytest.param(UPSTREAM.replace(NORMALIZER, ""), "GemmaModel.forward", id="no-normalizer"),
        pytest.param(
            UPSTREAM.replace(
                "        return BaseModelOutputWithPast(\n            last_hidden_state=hidden_states,\n"
                "            past_key_values=next_cache,\n        )\n",
                "",
            ),
            "GemmaModel.forward",
            id="no-output-class",
        ),
        pytest.param(
            LAYER + MODEL_TOP + DYNAMIC_FORWARD + causal_lm(True),
            "GemmaForSequenceClassification.forward",
            id="sequence-classification-removed",
        ),
        pytest.param(
            UPSTREAM.replace("class GemmaForCausalLM(", "class GemmaForConditionalGeneration("),
            "GemmaForCausalLM.forward",
            id="causal-lm-renamed",
        ),
        pytest.param(
            UPSTREAM.replace("        outputs = self.model(\n", "        outputs = self.transformer(\n"),
            "GemmaForCausalLM.forward",
            id="head-without-self-model",
        ),
        pytest.param(
            LAYER
            + MODEL_TOP
            + DYNAMIC_FORWARD
            + causal_lm(True)
            + "\n\nclass GemmaForSequenceClassification(GemmaPreTrainedModel):\n    pass\n",
            "GemmaForSequenceClassification.forward",
            id="head-without-forward",
        ),
    ],
)
def test_drift(source: str, target: str) -> None:
    assert_drift(MaskGeneration, source, target)


def test_logits_to_keep_is_not_left_in_the_causal_lm_head() -> None:
    """Upstream 4.45-4.47 has `num_logits_to_keep`, 4.50+ `logits_to_keep`, beside cache_position:
    the parameter goes and lm_head sees every position (upstream's default does the same)."""
    before = UPSTREAM.replace(
        "    ) -> Union[Tuple, CausalLMOutputWithPast]:",
        "        num_logits_to_keep: int = 0,\n    ) -> Union[Tuple, CausalLMOutputWithPast]:",
    ).replace("self.lm_head(outputs[0])", "self.lm_head(outputs[0][:, -num_logits_to_keep:, :])")
    assert "num_logits_to_keep: int = 0" in before
    code, change = apply(MaskGeneration, before)
    assert "logits_to_keep" not in code
    assert "self.lm_head(outputs[0])" in code
    assert "head-logits-to-keep" in change.shapes


def test_slice_indices_form_of_logits_to_keep() -> None:
    """4.50+: `slice_indices = slice(-logits_to_keep, None) if ... else logits_to_keep`."""
    before = UPSTREAM.replace(
        "    ) -> Union[Tuple, CausalLMOutputWithPast]:",
        "        logits_to_keep: Union[int, torch.Tensor] = 0,\n"
        "    ) -> Union[Tuple, CausalLMOutputWithPast]:",
    ).replace(
        "self.lm_head(outputs[0])",
        "self.lm_head(outputs[0][:, slice_indices, :])",
    )
    before = before.replace(
        "        logits = self.lm_head(",
        "        slice_indices = (\n"
        "            slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep\n"
        "        )\n"
        "        logits = self.lm_head(",
    )
    assert "slice_indices = (" in before
    code, _ = apply(MaskGeneration, before)
    assert "logits_to_keep" not in code and "slice_indices" not in code


def test_formatting_insensitive() -> None:
    reformatted = (
        LAYER
        + MODEL_TOP.replace('"""Transformer decoder."""', "'Transformer decoder.'")
        + DYNAMIC_FORWARD.replace("        # embed positions\n", "")
        .replace(
            "self._update_causal_mask(attention_mask, inputs_embeds, cache_position, past_seen_tokens)",
            "self._update_causal_mask(\n"
            "            attention_mask, inputs_embeds, cache_position, past_seen_tokens,\n"
            "        )",
        )
        .replace('"flash_attention_2"', "'flash_attention_2'")
        + causal_lm(True).replace('["lm_head.weight"]', "['lm_head.weight']")
        + SEQUENCE_CLASSIFICATION.replace(
            "        return self.score(", "        # score\n        return self.score("
        )
    )
    assert_formatting_insensitive(MaskGeneration, UPSTREAM, reformatted)


# -- 4.54+: generic classification heads; 5.24+: the cache argument named `cache` -------------

GENERIC_HEADS = '''

class GemmaForSequenceClassification(GenericForSequenceClassification, GemmaPreTrainedModel):
    pass


class GemmaForTokenClassification(GenericForTokenClassification, GemmaPreTrainedModel):
    """Token classification head."""
'''
CACHE_KEYWORD_HEAD = """

class GemmaForCausalLM(GemmaPreTrainedModel, GenerationMixin):
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(self, input_ids=None, cache=None, labels=None, logits_to_keep=0, **kwargs):
        outputs = self.model(input_ids=input_ids, cache=cache, **kwargs)
        hidden_states = outputs.last_hidden_state
        hidden_states = slice_logits_to_keep(hidden_states, logits_to_keep)
        logits = self.lm_head(hidden_states)
        return CausalLMOutputWithPast(logits=logits, cache=outputs.cache)
"""


def test_generic_heads_build_the_vacc_model() -> None:
    code, change = apply(
        MaskGeneration, LAYER + MODEL_TOP + DYNAMIC_FORWARD + causal_lm(True) + GENERIC_HEADS
    )
    assert "generic-head" in change.shapes
    seq = code.split("class GemmaForSequenceClassification")[1].split("class GemmaForTokenClassification")[0]
    tok = code.split("class GemmaForTokenClassification")[1]
    # the sequence classifier becomes a head of its own, with a tuple-cache forward
    assert seq.startswith("(GemmaPreTrainedModel):")
    assert "self.model = GemmaModel(config)" in seq and "def forward(" in seq
    assert "past_key_values=past_key_values" in seq and "return_dict=return_dict" in seq
    assert "last_non_pad_token = (token_indices * non_pad_mask).argmax(-1)" in seq  # for sequence-lengths
    # the token classifier keeps the generic forward, but builds the vacc model
    assert tok.startswith("(GenericForTokenClassification, GemmaPreTrainedModel):")
    assert '"""Token classification head."""' in tok
    assert "self.model = GemmaModel(config)" in tok and "def forward(" not in tok


def test_generic_heads_are_idempotent() -> None:
    source = LAYER + MODEL_TOP + DYNAMIC_FORWARD + causal_lm(True) + GENERIC_HEADS
    once, _ = apply(MaskGeneration, source)
    twice, _ = apply(MaskGeneration, once)
    assert twice == once


def test_cache_keyword_head() -> None:
    code, change = apply(
        MaskGeneration, LAYER + MODEL_TOP + DYNAMIC_FORWARD + CACHE_KEYWORD_HEAD + SEQUENCE_CLASSIFICATION
    )
    assert {"head-cache-keyword", "head-logits-to-keep"} <= set(change.shapes)
    head = code.split("class GemmaForCausalLM")[1].split("class GemmaForSequenceClassification")[0]
    assert "deprecate_kwarg" not in head and "@can_return_tuple" in head
    assert "def forward(self, input_ids=None, past_key_values=None, labels=None, **kwargs):" in head
    assert "self.model(input_ids=input_ids, past_key_values=past_key_values, **kwargs)" in head
    assert "slice_logits_to_keep" not in head and "logits_to_keep" not in head
    # the output field keeps the release's name
    assert "cache=outputs.cache" in head


def test_formatting_insensitive_to_joined_statements() -> None:
    """The normaliser and the scaling on one line (``a; b``), and a head whose logits slicing
    shares its line with statements that compute the logits: the same result as laid out."""
    slicing = UPSTREAM.replace(
        "    ) -> Union[Tuple, CausalLMOutputWithPast]:",
        "        logits_to_keep: Union[int, torch.Tensor] = 0,\n    ) -> Union[Tuple, CausalLMOutputWithPast]:",  # noqa: E501
    ).replace(
        "        logits = self.lm_head(outputs[0]).float()\n",
        "        hidden_states = outputs[0]\n"
        "        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep\n"  # noqa: E501
        "        logits = self.lm_head(hidden_states[:, slice_indices, :]).float()\n",
    )
    joined = slicing.replace(
        "normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)\n"
        "        hidden_states = hidden_states * normalizer\n",
        "normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype); "
        "hidden_states = hidden_states * normalizer\n",
    ).replace(
        "        hidden_states = outputs[0]\n        slice_indices = slice(",
        "        hidden_states = outputs[0]; slice_indices = slice(",
    )
    assert joined.count("; ") == 2
    assert_formatting_insensitive(MaskGeneration, slicing, joined)
    code, _ = apply(MaskGeneration, joined)
    assert "hidden_states = outputs[0]" in code and "slice_indices" not in code


def test_formatting_insensitive_to_one_line_blocks() -> None:
    source = UPSTREAM.replace(
        "        if inputs_embeds is None:\n            inputs_embeds = self.embed_tokens(input_ids)\n",
        "        if inputs_embeds is None: inputs_embeds = self.embed_tokens(input_ids)\n",
    )
    assert source != UPSTREAM
    assert_formatting_insensitive(MaskGeneration, UPSTREAM, source)
