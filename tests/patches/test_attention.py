"""attention: one eager GemmaAttention with a (key, value) tuple cache, no variants (SPEC §4.4)."""

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

from patches.attention import Attention

# Not a target: must come through byte for byte.
REPEAT_KV = """\
def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    return hidden_states  # keep   me
"""

ATTENTION_INIT = '''

class GemmaAttention(nn.Module):
    """Multi-headed attention from 'Attention Is All You Need' paper"""

    # Ignore copy
    def __init__(self, config: GemmaConfig, layer_idx: Optional[int] = None):
        super().__init__()
        self.head_dim = config.head_dim
        self.rotary_emb = GemmaRotaryEmbedding(self.head_dim, base=config.rope_theta)
'''

CACHE_FORWARD = """
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_value: Optional[Cache] = None,
        output_attentions: bool = False,
        use_cache: bool = False,
        cache_position: Optional[torch.LongTensor] = None,
        **kwargs,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[Tuple[torch.Tensor]]]:
        bsz, q_len, _ = hidden_states.size()
        query_states = self.q_proj(hidden_states).view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        past_key_value = getattr(self, "past_key_value", past_key_value)
        cos, sin = self.rotary_emb(value_states, position_ids, seq_len=None)
        if past_key_value is not None:
            cache_kwargs = {"sin": sin, "cos": cos, "cache_position": cache_position}
            key_states, value_states = past_key_value.update(key_states, value_states, self.layer_idx, cache_kwargs)

        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)

        if attention_mask is not None:  # no matter the length, we just slice it
            causal_mask = attention_mask[:, :, :, : key_states.shape[-2]]
            attn_weights = attn_weights + causal_mask
        attn_output = self.o_proj(torch.matmul(attn_weights, value_states))
        return attn_output, attn_weights, past_key_value
"""  # noqa: E501

# The contract's forward, with upstream's attention-score expression.
TUPLE_FORWARD = """
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask=None,
        position_ids=None,
        past_key_value=None,
        output_attentions: bool = False,
        use_cache: bool = False,
    ):
        # vacc: eager attention, explicit additive mask, (key, value) tuple cache in and out
        bsz, q_len, _ = hidden_states.size()

        query_states = self.q_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)

        kv_seq_len = key_states.shape[-2]
        if past_key_value is not None:
            kv_seq_len += past_key_value[0].shape[-2]
        cos, sin = self.rotary_emb(value_states, position_ids, seq_len=kv_seq_len)
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin, position_ids)

        if past_key_value is not None:
            key_states = torch.cat([past_key_value[0], key_states], dim=2)
            value_states = torch.cat([past_key_value[1], value_states], dim=2)

        past_key_value = (key_states, value_states) if use_cache else None

        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)

        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)

        if attention_mask is not None:
            if attention_mask.size() != (bsz, 1, q_len, kv_seq_len):
                raise ValueError(
                    f"Attention mask should be of size {(bsz, 1, q_len, kv_seq_len)}, but is {attention_mask.size()}"
                )
            attn_weights = attn_weights + attention_mask

        # upcast attention to fp32
        attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_weights = nn.functional.dropout(attn_weights, p=self.attention_dropout, training=self.training)
        attn_output = torch.matmul(attn_weights, value_states)

        attn_output = attn_output.transpose(1, 2).contiguous()
        attn_output = attn_output.reshape(bsz, q_len, -1)
        attn_output = self.o_proj(attn_output)

        if not output_attentions:
            attn_weights = None

        return attn_output, attn_weights, past_key_value
"""  # noqa: E501

VARIANTS = '''

# Copied from transformers.models.llama.modeling_llama.LlamaFlashAttention2 with Llama->Gemma
class GemmaFlashAttention2(GemmaAttention):
    """Gemma flash attention module."""

    def forward(self, hidden_states, **kwargs):
        return self._flash_attention_forward(hidden_states)


class GemmaSdpaAttention(GemmaAttention):
    def forward(self, hidden_states, **kwargs):
        return torch.nn.functional.scaled_dot_product_attention(hidden_states)


GEMMA_ATTENTION_CLASSES = {
    "eager": GemmaAttention,
    "flash_attention_2": GemmaFlashAttention2,
    "sdpa": GemmaSdpaAttention,
}
'''

LAYER = """

# Copied from transformers.models.llama.modeling_llama.LlamaDecoderLayer with LLAMA->GEMMA,Llama->Gemma
class GemmaDecoderLayer(nn.Module):
    def __init__(self, config: GemmaConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size

        self.self_attn = GEMMA_ATTENTION_CLASSES[config._attn_implementation](config=config, layer_idx=layer_idx)

        self.mlp = GemmaMLP(config)

    def forward(self, hidden_states):
        return self.mlp(self.self_attn(hidden_states)[0])
"""  # noqa: E501

LAYER_AFTER = LAYER.replace("GEMMA_ATTENTION_CLASSES[config._attn_implementation]", "GemmaAttention")

UPSTREAM = REPEAT_KV + ATTENTION_INIT + CACHE_FORWARD + VARIANTS + LAYER
OUTPUT = REPEAT_KV + ATTENTION_INIT + TUPLE_FORWARD + LAYER_AFTER


def test_three_classes() -> None:
    assert_codemod(Attention, UPSTREAM, OUTPUT, ("three-classes",))


def test_scaling_is_upstreams() -> None:
    """The score expression (and so the attention scaling) is taken from upstream as it is."""
    scaled = "torch.matmul(query_states, key_states.transpose(2, 3)) * self.scaling"
    before = UPSTREAM.replace(
        "torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)", scaled
    )
    assert before != UPSTREAM
    code, _ = apply(Attention, before)
    assert code == OUTPUT.replace(
        "torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)", scaled
    )


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(OUTPUT, id="tuple-cache_noop"),
        pytest.param(
            OUTPUT.replace("        # upcast attention to fp32\n", "")
            .replace('f"Attention mask', "f'Attention mask")
            .replace('attention_mask.size()}"', "attention_mask.size()}'"),
            id="reformatted-own-output_noop",
        ),
    ],
)
def test_noop(source: str) -> None:
    assert_noop(Attention, source, ("tuple-cache",))


def test_unrelated_code_untouched() -> None:
    code, _ = apply(Attention, UPSTREAM)
    for unit in (REPEAT_KV, ATTENTION_INIT, LAYER_AFTER):
        assert unit in code
    for gone in (
        "GemmaFlashAttention2",
        "GemmaSdpaAttention",
        "GEMMA_ATTENTION_CLASSES",
        "LlamaFlashAttention2",
    ):
        assert gone not in code


def test_idempotent() -> None:
    assert_idempotent(Attention, UPSTREAM)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        pytest.param(
            UPSTREAM.replace("class GemmaAttention(", "class GemmaSelfAttention("),
            "GemmaAttention",
            id="class-renamed",
        ),
        pytest.param(REPEAT_KV + LAYER, "GemmaAttention", id="class-removed"),
        pytest.param(
            UPSTREAM.replace(
                "    def forward(\n        self,\n        hidden_states: torch.Tensor,",
                "    def attend(\n        self,\n        hidden_states: torch.Tensor,",
            ),
            "GemmaAttention.forward",
            id="forward-renamed",
        ),
        pytest.param(
            UPSTREAM.replace(
                "attn_weights = torch.matmul(query_states, key_states.transpose(2, 3))",
                "attn_weights = attention_interface(self, query_states, key_states)",
            ),
            "GemmaAttention.forward",
            id="no-score-statement",
        ),
        pytest.param(
            REPEAT_KV + ATTENTION_INIT + CACHE_FORWARD + LAYER, "GemmaAttention", id="variants-removed"
        ),
        pytest.param(
            UPSTREAM.replace("class GemmaSdpaAttention", "class GemmaSdpaAttention2"),
            "GemmaAttention",
            id="sdpa-variant-renamed",
        ),
        pytest.param(
            REPEAT_KV + ATTENTION_INIT + CACHE_FORWARD + VARIANTS.split("\n\nGEMMA_ATTENTION")[0] + LAYER,
            "GemmaAttention",
            id="mapping-removed",
        ),
        pytest.param(
            UPSTREAM.replace("GEMMA_ATTENTION_CLASSES[config._attn_implementation]", "GemmaAttention"),
            "GemmaDecoderLayer.__init__",
            id="layer-not-using-mapping",
        ),
        pytest.param(
            REPEAT_KV + ATTENTION_INIT + CACHE_FORWARD + VARIANTS,
            "GemmaDecoderLayer.__init__",
            id="layer-removed",
        ),
    ],
)
def test_drift(source: str, target: str) -> None:
    assert_drift(Attention, source, target)


def test_formatting_insensitive() -> None:
    reformatted = (
        REPEAT_KV
        + ATTENTION_INIT.replace('"""Multi-headed', "'''Multi-headed").replace('paper"""', "paper'''")
        + CACHE_FORWARD.replace(
            "/ math.sqrt(self.head_dim)", "/ math.sqrt(\n            self.head_dim  # scale\n        )"
        ).replace('"past_key_value"', "'past_key_value'")
        + VARIANTS.replace('"eager": GemmaAttention,\n    ', '"eager": GemmaAttention, ')
        + LAYER.replace(
            "(config=config, layer_idx=layer_idx)",
            "(\n            config=config, layer_idx=layer_idx\n        )",
        )
    )
    assert_formatting_insensitive(Attention, UPSTREAM, reformatted)


# -- 4.48+: eager_attention_forward and an attention-interface lookup -------------------------

EAGER_FUNCTION = """\
def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    return attn_weights, None
"""
EAGER_ATTENTION = """

class GemmaAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5

    def forward(self, hidden_states, position_embeddings, attention_mask, past_key_value=None, **kwargs):
        cos, sin = position_embeddings
        attention_interface = eager_attention_forward
        attn_output, attn_weights = attention_interface(
            self, query_states, key_states, value_states, attention_mask, scaling=self.scaling, **kwargs
        )
        return attn_output, attn_weights
"""
EAGER_LAYER_AND_MODEL = """

class GemmaDecoderLayer(nn.Module):
    def __init__(self, config, layer_idx):
        self.self_attn = GemmaAttention(config=config, layer_idx=layer_idx)


class GemmaModel(GemmaPreTrainedModel):
    def __init__(self, config):
        self.rotary_emb = GemmaRotaryEmbedding(config=config)
"""
EAGER_UPSTREAM = EAGER_FUNCTION + EAGER_ATTENTION + EAGER_LAYER_AND_MODEL


def test_eager_function_shape() -> None:
    code, change = apply(Attention, EAGER_UPSTREAM)
    assert change.shapes == ("eager-function",)
    assert "def eager_attention_forward" not in code
    # the scores keep upstream's expression, its names mapped to the forward's
    assert "attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) * self.scaling" in code
    # each attention builds its rotary embedding the way GemmaModel does
    init = code.split("def __init__(self, config, layer_idx):")[1].split("def forward")[0]
    assert "self.rotary_emb = GemmaRotaryEmbedding(config=config)" in init
    assert "past_key_value = (key_states, value_states) if use_cache else None" in code
    # the layer and the model are not attention targets here
    assert EAGER_LAYER_AND_MODEL in code


def test_eager_function_shape_is_idempotent() -> None:
    once, _ = apply(Attention, EAGER_UPSTREAM)
    twice, change = apply(Attention, once)
    assert twice == once.lstrip("\n") and change.shapes == ("tuple-cache",)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        pytest.param(
            EAGER_UPSTREAM.replace("scaling=self.scaling, ", ""),
            "GemmaAttention.forward",
            id="no-scaling-argument",
        ),
        pytest.param(
            EAGER_UPSTREAM.replace(
                "torch.matmul(query, key_states.transpose(2, 3)) * scaling",
                "scaling * torch.einsum('bhqd,bhkd->bhqk', query, key_states)",
            ),
            "eager_attention_forward",
            id="unknown-scores-form",
        ),
        pytest.param(
            EAGER_UPSTREAM.replace("self.rotary_emb = GemmaRotaryEmbedding(config=config)", "pass"),
            "GemmaAttention.__init__",
            id="model-without-rotary",
        ),
    ],
)
def test_eager_function_drift(source: str, target: str) -> None:
    assert_drift(Attention, source, target)


def test_formatting_insensitive_to_joined_statements() -> None:
    """The scores statement sharing its line with another (``a; b``) is still the scores."""
    scores = "        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)\n"  # noqa: E501
    assert scores in UPSTREAM
    source = UPSTREAM.replace(scores, "        dropout = 0.0\n" + scores)
    reformatted = UPSTREAM.replace(scores, "        dropout = 0.0; " + scores.lstrip())
    assert_formatting_insensitive(Attention, source, reformatted)


@pytest.mark.parametrize(
    "model_init",
    [
        pytest.param(
            "        self.norm = GemmaRMSNorm(config.hidden_size); "
            "self.rotary_emb = GemmaRotaryEmbedding(config=config)\n",
            id="joined-with-another-statement",
        ),
        pytest.param(
            None,
            id="one-line-def",
        ),
    ],
)
def test_eager_function_takes_only_the_rotary_statement_from_the_model(model_init: str | None) -> None:
    """GemmaModel.__init__ is not this codemod's target: however it is laid out, the attention
    gets the rotary construction and nothing else from it."""
    old = "    def __init__(self, config):\n        self.rotary_emb = GemmaRotaryEmbedding(config=config)\n"
    new = (
        "    def __init__(self, config):\n" + model_init
        if model_init
        else "    def __init__(self, config): self.norm = GemmaRMSNorm(config.hidden_size); "
        "self.rotary_emb = GemmaRotaryEmbedding(config=config)\n"
    )
    assert old in EAGER_UPSTREAM
    code, change = apply(Attention, EAGER_UPSTREAM.replace(old, new))
    assert change.shapes == ("eager-function",)
    init = code.split("def __init__(self, config, layer_idx):")[1].split("def forward")[0]
    assert "self.rotary_emb = GemmaRotaryEmbedding(config=config)\n" in init
    assert "self.norm" not in init
    assert new in code  # the model itself is left as it was
