"""decoder-layer-forward: GemmaDecoderLayer.forward with the tuple cache and tuple outputs (SPEC §4.5).

The forward is edited in place: upstream's statements stay where they are unless a named rule
translates or drops them (``patches/_rules.py``)."""

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

from patches import _rules as r
from patches.decoder_layer_forward import DecoderLayerForward

# Not targets: must come through byte for byte.
HEADER = """\
import warnings

import torch
from torch import nn


class GemmaMLP(nn.Module):
    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))  # keep   me
"""

LAYER_INIT = """

# Copied from transformers.models.llama.modeling_llama.LlamaDecoderLayer with LLAMA->GEMMA,Llama->Gemma
class GemmaDecoderLayer(nn.Module):
    def __init__(self, config: GemmaConfig, layer_idx: int):
        super().__init__()
        self.self_attn = GemmaAttention(config=config, layer_idx=layer_idx)
        self.mlp = GemmaMLP(config)
"""

DOCSTRING = '''\
        """
        Args:
            hidden_states (`torch.FloatTensor`): input to the layer of shape `(batch, seq_len, embed_dim)`
        """
'''

FOOTER = '''

GEMMA_START_DOCSTRING = r"""
    This model inherits from [`PreTrainedModel`].
"""
'''

# -- cache-position (4.38-4.47) --------------------------------------------------------------------

CACHE_POSITION_FORWARD = (
    """
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_value: Optional[Tuple[torch.Tensor]] = None,
        output_attentions: Optional[bool] = False,
        use_cache: Optional[bool] = False,
        cache_position: Optional[torch.LongTensor] = None,
        **kwargs,
    ) -> Tuple[torch.FloatTensor, Optional[Tuple[torch.FloatTensor, torch.FloatTensor]]]:
"""
    + DOCSTRING
    + """\
        if "padding_mask" in kwargs:
            warnings.warn(
                "Passing `padding_mask` is deprecated and will be removed in v4.37. Please make sure use `attention_mask` instead.`"
            )

        residual = hidden_states

        hidden_states = self.input_layernorm(hidden_states)

        # Self Attention
        hidden_states, self_attn_weights, present_key_value = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_value=past_key_value,
            output_attentions=output_attentions,
            use_cache=use_cache,
            cache_position=cache_position,
            **kwargs,
        )
        hidden_states = residual + hidden_states

        # Fully Connected
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = residual + hidden_states

        outputs = (hidden_states,)

        if output_attentions:
            outputs += (self_attn_weights,)

        if use_cache:
            outputs += (present_key_value,)

        return outputs
"""  # noqa: E501
)

# Upstream's forward in place: the contract's signature, the warning about a kwargs entry
# dropped, the self_attn call without cache_position and **kwargs; the rest upstream's.
CACHE_POSITION_AFTER = (
    """
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask=None,
        position_ids=None,
        past_key_value=None,
        output_attentions=False,
        use_cache=False,
    ):
"""
    + DOCSTRING
    + """\
        # vacc: dropped (padding-mask-warning): if "padding_mask" in kwargs: …

        residual = hidden_states

        hidden_states = self.input_layernorm(hidden_states)

        # Self Attention
        hidden_states, self_attn_weights, present_key_value = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_value=past_key_value,
            output_attentions=output_attentions,
            use_cache=use_cache,
        )
        hidden_states = residual + hidden_states

        # Fully Connected
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = residual + hidden_states

        outputs = (hidden_states,)

        if output_attentions:
            outputs += (self_attn_weights,)

        if use_cache:
            outputs += (present_key_value,)

        return outputs
"""
)

UPSTREAM = HEADER + LAYER_INIT + CACHE_POSITION_FORWARD + FOOTER
OUTPUT = HEADER + LAYER_INIT + CACHE_POSITION_AFTER + FOOTER

# -- position-embeddings (4.48-4.53): rotary tables from GemmaModel, no present in the outputs ----

POSITION_EMBEDDINGS_FORWARD = """
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_value: Optional[Cache] = None,
        output_attentions: Optional[bool] = False,
        use_cache: Optional[bool] = False,
        cache_position: Optional[torch.LongTensor] = None,
        position_embeddings: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,  # necessary, but kept here for BC
        **kwargs: Unpack[FlashAttentionKwargs],
    ) -> Tuple[torch.FloatTensor, Optional[Tuple[torch.FloatTensor, torch.FloatTensor]]]:
        residual = hidden_states

        hidden_states = self.input_layernorm(hidden_states)

        # Self Attention
        hidden_states, self_attn_weights = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_value=past_key_value,
            output_attentions=output_attentions,
            use_cache=use_cache,
            cache_position=cache_position,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = residual + hidden_states

        # Fully Connected
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = residual + hidden_states

        outputs = (hidden_states,)
        if output_attentions:
            outputs += (self_attn_weights,)

        return outputs
"""  # noqa: E501

POSITION_EMBEDDINGS_AFTER = """
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask=None,
        position_ids=None,
        past_key_value=None,
        output_attentions=False,
        use_cache=False,
    ):
        residual = hidden_states

        hidden_states = self.input_layernorm(hidden_states)

        # Self Attention
        hidden_states, self_attn_weights, present_key_value = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_value=past_key_value,
            output_attentions=output_attentions,
            use_cache=use_cache,
        )
        hidden_states = residual + hidden_states

        # Fully Connected
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = residual + hidden_states

        outputs = (hidden_states,)
        if output_attentions:
            outputs += (self_attn_weights,)

        if use_cache:
            outputs += (present_key_value,)

        return outputs
"""

# 5.x: the cache named `cache` behind a renaming decorator, the weights thrown away (`_`), the bare
# hidden states returned.
BARE_HIDDEN_FORWARD = """
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        # Self Attention
        hidden_states, _ = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = residual + hidden_states

        # Fully Connected
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = residual + hidden_states
        return hidden_states
"""

BARE_HIDDEN_AFTER = """
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask=None,
        position_ids=None,
        past_key_value=None,
        output_attentions=False,
        use_cache=False,
    ):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        # Self Attention
        hidden_states, self_attn_weights, present_key_value = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_value=past_key_value,
            use_cache=use_cache,
            output_attentions=output_attentions,
        )
        hidden_states = residual + hidden_states

        # Fully Connected
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = residual + hidden_states
        outputs = (hidden_states,)

        if output_attentions:
            outputs += (self_attn_weights,)

        if use_cache:
            outputs += (present_key_value,)

        return outputs
"""


def layer(forward: str) -> str:
    return HEADER + LAYER_INIT + forward + FOOTER


@pytest.mark.parametrize(
    ("before", "after", "shape"),
    [
        pytest.param(UPSTREAM, OUTPUT, "cache-position", id="cache-position"),
        pytest.param(
            UPSTREAM.replace(DOCSTRING, ""),
            OUTPUT.replace(DOCSTRING, ""),
            "cache-position",
            id="cache-position-no-docstring",
        ),
        pytest.param(
            layer(POSITION_EMBEDDINGS_FORWARD),
            layer(POSITION_EMBEDDINGS_AFTER),
            "position-embeddings",
            id="position-embeddings",
        ),
        pytest.param(
            layer(BARE_HIDDEN_FORWARD),
            layer(BARE_HIDDEN_AFTER),
            "position-embeddings",
            id="position-embeddings-bare-hidden-states",
        ),
        pytest.param(
            layer(
                BARE_HIDDEN_FORWARD.replace(
                    '    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")\n', ""
                )
                .replace(
                    "        cache: Cache | None = None,\n", "        past_key_values: Cache | None = None,\n"
                )
                .replace("cache=cache,", "past_key_values=past_key_values,")
            ),
            layer(BARE_HIDDEN_AFTER),
            "position-embeddings",
            id="position-embeddings-past-key-values",
        ),
    ],
)
def test_shapes(before: str, after: str, shape: str) -> None:
    assert_codemod(DecoderLayerForward, before, after, (shape,))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(OUTPUT, id="cache-position-output_noop"),
        pytest.param(OUTPUT.replace(DOCSTRING, ""), id="no-docstring_noop"),
        pytest.param(layer(POSITION_EMBEDDINGS_AFTER), id="position-embeddings-output_noop"),
        pytest.param(layer(BARE_HIDDEN_AFTER), id="bare-hidden-states-output_noop"),
        pytest.param(
            OUTPUT.replace("        # Fully Connected\n", "").replace(
                "outputs = (hidden_states,)", "outputs = (\n            hidden_states,\n        )"
            ),
            id="reformatted-own-output_noop",
        ),
    ],
)
def test_tuple_outputs_noop(source: str) -> None:
    assert_noop(DecoderLayerForward, source, ("tuple-outputs",))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(UPSTREAM, id="cache-position"),
        pytest.param(layer(POSITION_EMBEDDINGS_FORWARD), id="position-embeddings"),
        pytest.param(layer(BARE_HIDDEN_FORWARD), id="bare-hidden-states"),
    ],
)
def test_idempotent(source: str) -> None:
    assert_idempotent(DecoderLayerForward, source)


def test_unclaimed_code_untouched() -> None:
    code, _ = apply(DecoderLayerForward, UPSTREAM)
    for unit in (HEADER, LAYER_INIT, DOCSTRING, FOOTER):
        assert unit in code


# -- carried: what upstream adds inside the forward reaches the output, in place -----------------


def _insert_after(source: str, anchor: str, extra: str) -> str:
    assert source.count(anchor) == 1, anchor
    return source.replace(anchor, anchor + extra)


ATTN_RESIDUAL = "        )\n        hidden_states = residual + hidden_states\n"
MLP_RESIDUAL = (
    "        hidden_states = self.mlp(hidden_states)\n        hidden_states = residual + hidden_states\n"
)
MLP = "        hidden_states = self.mlp(hidden_states)\n"
INPUT_NORM = "        hidden_states = self.input_layernorm(hidden_states)\n"
HALVED = "        hidden_states = hidden_states * 0.5\n"


@pytest.mark.parametrize(
    ("forward", "after", "anchor", "extra"),
    [
        pytest.param(
            CACHE_POSITION_FORWARD, CACHE_POSITION_AFTER, MLP_RESIDUAL, HALVED, id="halved-after-mlp-residual"
        ),
        pytest.param(
            CACHE_POSITION_FORWARD,
            CACHE_POSITION_AFTER,
            ATTN_RESIDUAL,
            HALVED,
            id="halved-after-attn-residual",
        ),
        pytest.param(
            POSITION_EMBEDDINGS_FORWARD,
            POSITION_EMBEDDINGS_AFTER,
            MLP,
            "        hidden_states = self.post_feedforward_layernorm(hidden_states)\n",
            id="extra-norm-after-the-mlp",
        ),
        pytest.param(
            BARE_HIDDEN_FORWARD,
            BARE_HIDDEN_AFTER,
            ATTN_RESIDUAL,
            "        if self.training:\n            hidden_states = self.dropout(hidden_states)\n",
            id="block-after-the-attention",
        ),
        pytest.param(
            BARE_HIDDEN_FORWARD,
            BARE_HIDDEN_AFTER,
            INPUT_NORM,
            "        hidden_states = hidden_states.clamp(-65504, 65504)\n",
            id="clamp-before-the-attention",
        ),
    ],
)
def test_carries_upstream_statements(forward: str, after: str, anchor: str, extra: str) -> None:
    assert_codemod(
        DecoderLayerForward,
        layer(_insert_after(forward, anchor, extra)),
        layer(_insert_after(after, anchor, extra)),
        ("position-embeddings" if "position_embeddings" in forward else "cache-position",),
    )


def test_a_self_attn_argument_upstream_computes_is_carried() -> None:
    """Arguments of the self_attn call other than the plumbing stay upstream's, whatever they compute."""
    before = UPSTREAM.replace(
        "            attention_mask=attention_mask,\n            position_ids=position_ids,\n            past_key_value",  # noqa: E501
        "            attention_mask=attention_mask,\n            position_ids=position_ids * 2,\n            past_key_value",  # noqa: E501
    )
    after = OUTPUT.replace(
        "            attention_mask=attention_mask,\n            position_ids=position_ids,\n            past_key_value",  # noqa: E501
        "            attention_mask=attention_mask,\n            position_ids=position_ids * 2,\n            past_key_value",  # noqa: E501
    )
    assert before != UPSTREAM and after != OUTPUT
    assert_codemod(DecoderLayerForward, before, after, ("cache-position",))


# -- drift -------------------------------------------------------------------------------------------

TARGET = "GemmaDecoderLayer.forward"
SIGNATURE_END = "        **kwargs,\n    ) -> Tuple[torch.FloatTensor, Optional[Tuple[torch.FloatTensor, torch.FloatTensor]]]:\n"  # noqa: E501
SELF_ATTN = "        hidden_states, self_attn_weights, present_key_value = self.self_attn(\n"


def _drift_node(source: str) -> str | None:
    drift = assert_drift(DecoderLayerForward, source, TARGET)
    return None if drift.node is None else r.first_line(drift.node)


@pytest.mark.parametrize(
    ("source", "node"),
    [
        # the self_attn call: its plumbing arguments must be passed as themselves
        pytest.param(
            UPSTREAM.replace("cache_position=cache_position,\n", "cache_position=cache_position + 1,\n"),
            "hidden_states, self_attn_weights, present_key_value = self.self_attn( …",
            id="cache-position-computed",
        ),
        pytest.param(
            UPSTREAM.replace("            **kwargs,\n        )", "            **extra,\n        )"),
            "hidden_states, self_attn_weights, present_key_value = self.self_attn( …",
            id="other-star-kwargs",
        ),
        pytest.param(
            UPSTREAM.replace("past_key_value=past_key_value,\n", "past_key_value=self.cache,\n"),
            "hidden_states, self_attn_weights, present_key_value = self.self_attn( …",
            id="cache-from-elsewhere",
        ),
        pytest.param(
            UPSTREAM.replace(SELF_ATTN, "        hidden_states, weights, present = self.self_attn(\n"),
            "hidden_states, weights, present = self.self_attn( …",
            id="unpacked-into-other-names",
        ),
        pytest.param(
            UPSTREAM.replace(
                SELF_ATTN,
                "        hidden_states, self_attn_weights, present_key_value, x = self.self_attn(\n",
            ),
            "hidden_states, self_attn_weights, present_key_value, x = self.self_attn( …",
            id="unpacked-into-four",
        ),
        # the present: returned by the attention, it must be returned by upstream too
        pytest.param(
            UPSTREAM.replace("        if use_cache:\n            outputs += (present_key_value,)\n\n", "", 1),
            "return outputs",
            id="present-unpacked-but-not-returned",
        ),
        # dropped statements perturbed, and plumbing no rule knows
        pytest.param(
            UPSTREAM.replace(
                '"Passing `padding_mask` is deprecated', '"Passing `padding_mask` is no longer supported'
            ),
            'if "padding_mask" in kwargs: …',
            id="padding-mask-warning-changed",
        ),
        pytest.param(
            _insert_after(UPSTREAM, INPUT_NORM, "        position_ids = cache_position.unsqueeze(0)\n"),
            "position_ids = cache_position.unsqueeze(0)",
            id="statement-using-cache-position",
        ),
        pytest.param(
            _insert_after(UPSTREAM, INPUT_NORM, '        scale = kwargs.get("scale", 1.0)\n'),
            'scale = kwargs.get("scale", 1.0)',
            id="statement-using-kwargs",
        ),
        pytest.param(
            _insert_after(
                layer(POSITION_EMBEDDINGS_FORWARD), INPUT_NORM, "        cos, sin = position_embeddings\n"
            ),
            "cos, sin = position_embeddings",
            id="statement-using-position-embeddings",
        ),
        # required translations missing or doubled
        pytest.param(
            UPSTREAM.replace(
                SELF_ATTN, "        hidden_states, self_attn_weights, present_key_value = self.attn(\n"
            ),
            "hidden_states, self_attn_weights, present_key_value = self.attn( …",
            id="attention-called-otherwise",
        ),
        pytest.param(
            UPSTREAM.replace(
                UPSTREAM[
                    UPSTREAM.index(SELF_ATTN) : UPSTREAM.index(
                        "        hidden_states = residual + hidden_states\n"
                    )
                ],
                "        hidden_states = self.attention_block(hidden_states)\n",
            ),
            "def forward( …",
            id="no-self-attn-call",
        ),
        pytest.param(
            UPSTREAM.replace("        return outputs\n", "        return outputs + (None,)\n"),
            "def forward( …",
            id="no-known-return",
        ),
        pytest.param(
            UPSTREAM.replace(
                "        return outputs\n",
                "        if use_cache:\n            return outputs\n        return outputs\n",
            ),
            "def forward( …",
            id="two-returns",
        ),
        # the signature
        pytest.param(
            UPSTREAM.replace(SIGNATURE_END, "        layer_scale: float = 1.0,\n" + SIGNATURE_END),
            "def forward( …",
            id="new-parameter",
        ),
        pytest.param(
            UPSTREAM.replace(
                "        use_cache: Optional[bool] = False,\n", "        use_cache: Optional[bool] = True,\n"
            ),
            "def forward( …",
            id="changed-default",
        ),
        pytest.param(
            UPSTREAM.replace("    def forward(\n", "    @torch.compile\n    def forward(\n"),
            "@torch.compile",
            id="unknown-decorator",
        ),
        pytest.param(
            UPSTREAM.replace("        **kwargs,\n    ) ->", "        *args,\n    ) ->"),
            "def forward( …",
            id="star-args",
        ),
        pytest.param(  # without the cache as past_key_value too (with it: the legacy past-key-value shape)
            UPSTREAM.replace("        cache_position: Optional[torch.LongTensor] = None,\n", "")
            .replace("            cache_position=cache_position,\n", "")
            .replace("        past_key_value: Optional[Tuple", "        past_key_values: Optional[Tuple"),
            None,
            id="neither-cache-position-nor-position-embeddings-nor-past-key-value",
        ),
        # the unit itself
        pytest.param(
            UPSTREAM.replace("class GemmaDecoderLayer", "class GemmaBlock"), None, id="class-renamed"
        ),
        pytest.param(HEADER, None, id="class-removed"),
        pytest.param(
            UPSTREAM.replace(
                "    def forward(\n        self,\n        hidden_states: torch.Tensor",
                "    def __call__(\n        self,\n        hidden_states: torch.Tensor",
            ),
            None,
            id="forward-renamed",
        ),
    ],
)
def test_drift(source: str, node: str | None) -> None:
    assert _drift_node(source) == node


# -- formatting ----------------------------------------------------------------------------------------


def test_formatting_insensitive() -> None:
    reformatted = (
        UPSTREAM.replace("        # Self Attention\n", "")
        .replace(
            '                "Passing `padding_mask` is deprecated and will be removed in v4.37. Please make sure use `attention_mask` instead.`"\n',  # noqa: E501
            "                'Passing `padding_mask` is deprecated and will be removed in v4.37. Please make sure use `attention_mask` instead.`'  # gone\n",  # noqa: E501
        )
        .replace(
            "    ) -> Tuple[torch.FloatTensor, Optional[Tuple[torch.FloatTensor, torch.FloatTensor]]]:",
            "    ) -> Tuple[torch.FloatTensor, Optional[Tuple[torch.FloatTensor, torch.FloatTensor]],]:",
        )
        .replace(
            "            use_cache=use_cache,\n            cache_position=cache_position,\n            **kwargs,\n",  # noqa: E501
            "            use_cache=use_cache, cache_position=cache_position, **kwargs,\n",
        )
    )
    assert_formatting_insensitive(DecoderLayerForward, UPSTREAM, reformatted)


def test_position_embeddings_formatting_insensitive() -> None:
    source = layer(BARE_HIDDEN_FORWARD)
    reformatted = layer(
        BARE_HIDDEN_FORWARD.replace('"past_key_values", "5.40.0"', "'past_key_values', '5.40.0'")
        .replace(
            "        hidden_states, _ = self.self_attn(\n", "        (hidden_states, _) = self.self_attn(\n"
        )
        .replace("        return hidden_states\n", "        return (hidden_states)  # the layer's output\n")
    )
    assert_formatting_insensitive(DecoderLayerForward, source, reformatted)
