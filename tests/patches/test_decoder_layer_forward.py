"""decoder-layer-forward: GemmaDecoderLayer.forward with the tuple cache and tuple outputs (SPEC §4.5)."""

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

from patches.decoder_layer_forward import DecoderLayerForward

# Not targets: must come through byte for byte.
MLP = """\
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
            warnings.warn("Passing `padding_mask` is deprecated.")

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
"""
)

# The contract's forward; upstream's docstring kept.
TUPLE_FORWARD = (
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
        residual = hidden_states

        hidden_states = self.input_layernorm(hidden_states)

        # Self Attention (vacc: one layer's (key, value) tuple in, present out)
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

DOCSTRING_AFTER = '''

GEMMA_START_DOCSTRING = r"""
    This model inherits from [`PreTrainedModel`].
"""
'''

UPSTREAM = MLP + LAYER_INIT + CACHE_POSITION_FORWARD + DOCSTRING_AFTER
OUTPUT = MLP + LAYER_INIT + TUPLE_FORWARD + DOCSTRING_AFTER


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(UPSTREAM, OUTPUT, id="cache-position"),
        pytest.param(
            UPSTREAM.replace(DOCSTRING, ""), OUTPUT.replace(DOCSTRING, ""), id="cache-position-no-docstring"
        ),
    ],
)
def test_cache_position(before: str, after: str) -> None:
    assert_codemod(DecoderLayerForward, before, after, ("cache-position",))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(OUTPUT, id="tuple-outputs_noop"),
        pytest.param(OUTPUT.replace(DOCSTRING, ""), id="tuple-outputs-no-docstring_noop"),
        pytest.param(
            OUTPUT.replace("        # Fully Connected\n", "").replace(
                "outputs = (hidden_states,)", "outputs = (\n            hidden_states,\n        )"
            ),
            id="reformatted-own-output_noop",
        ),
    ],
)
def test_noop(source: str) -> None:
    assert_noop(DecoderLayerForward, source, ("tuple-outputs",))


def test_unrelated_code_untouched() -> None:
    code, _ = apply(DecoderLayerForward, UPSTREAM)
    for unit in (MLP, LAYER_INIT, DOCSTRING, DOCSTRING_AFTER):
        assert unit in code


def test_idempotent() -> None:
    assert_idempotent(DecoderLayerForward, UPSTREAM)


TARGET = "GemmaDecoderLayer.forward"


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(UPSTREAM.replace("class GemmaDecoderLayer", "class GemmaBlock"), id="class-renamed"),
        pytest.param(MLP, id="class-removed"),
        pytest.param(
            UPSTREAM.replace(
                "    def forward(\n        self,\n        hidden_states: torch.Tensor",
                "    def __call__(\n        self,\n        hidden_states: torch.Tensor",
            ),
            id="forward-renamed",
        ),
        pytest.param(
            UPSTREAM.replace("        cache_position: Optional[torch.LongTensor] = None,\n", "").replace(
                "            cache_position=cache_position,\n", ""
            ),
            id="no-cache-position",
        ),
        pytest.param(
            UPSTREAM.replace(
                "hidden_states = self.mlp(hidden_states)", "hidden_states = self.ffn(hidden_states)"
            ),
            id="mlp-renamed",
        ),
        pytest.param(
            UPSTREAM.replace(
                "        hidden_states = self.post_attention_layernorm(hidden_states)\n"
                "        hidden_states = self.mlp(hidden_states)\n",
                "        hidden_states = self.mlp(hidden_states)\n"
                "        hidden_states = self.post_attention_layernorm(hidden_states)\n",
            ),
            id="post-norm-order",
        ),
    ],
)
def test_drift(source: str) -> None:
    assert_drift(DecoderLayerForward, source, TARGET)


def test_formatting_insensitive() -> None:
    reformatted = (
        UPSTREAM.replace("        # Self Attention\n", "")
        .replace(
            'warnings.warn("Passing `padding_mask` is deprecated.")',
            "warnings.warn(\n                'Passing `padding_mask` is deprecated.'\n            )",
        )
        .replace(
            "    ) -> Tuple[torch.FloatTensor, Optional[Tuple[torch.FloatTensor, torch.FloatTensor]]]:",
            "    ) -> Tuple[torch.FloatTensor, Optional[Tuple[torch.FloatTensor, torch.FloatTensor]],]:",
        )
    )
    assert_formatting_insensitive(DecoderLayerForward, UPSTREAM, reformatted)


# 4.48+: rotary tables handed down by GemmaModel; 5.x: the cache named past_key_values or cache
# and the bare hidden states returned.
POSITION_EMBEDDINGS_FORWARD = """
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
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = residual + hidden_states
        return hidden_states
"""


def test_position_embeddings() -> None:
    before = MLP + LAYER_INIT + POSITION_EMBEDDINGS_FORWARD + DOCSTRING_AFTER
    code, change = apply(DecoderLayerForward, before)
    assert change.shapes == ("position-embeddings",)
    layer = code.split("class GemmaDecoderLayer")[1]
    assert "deprecate_kwarg" not in layer and "position_embeddings" not in layer
    assert "past_key_value=past_key_value," in layer and "return outputs" in layer
    assert_idempotent(DecoderLayerForward, before)


def test_position_embeddings_with_an_unknown_parameter_is_drift() -> None:
    before = (
        MLP
        + LAYER_INIT
        + POSITION_EMBEDDINGS_FORWARD.replace(
            "        use_cache: bool | None = False,\n",
            "        use_cache: bool | None = False,\n        layer_scale=1.0,\n",
        )
    )
    assert_drift(DecoderLayerForward, before, "GemmaDecoderLayer.forward")
