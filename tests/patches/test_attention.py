"""attention: one eager GemmaAttention with a (key, value) tuple cache, no variants (SPEC §4.4).

The forward is edited in place: upstream's statements stay where they are unless a named
rule translates or drops them (``patches/_rules.py``)."""

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
from patches._base import Drift
from patches.attention import Attention

# Not targets: must come through byte for byte.
HEADER = """\
import math
from typing import Callable

import torch
from torch import nn


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    return hidden_states  # keep   me


def apply_rotary_pos_emb(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    return q * cos + q * sin, k * cos + k * sin
"""

# -- three-classes (4.38-4.47) ---------------------------------------------------------------------

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

        query_states = self.q_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)

        past_key_value = getattr(self, "past_key_value", past_key_value)
        cos, sin = self.rotary_emb(value_states, position_ids, seq_len=None)
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin, None)

        if past_key_value is not None:
            # sin and cos are specific to RoPE models; cache_position needed for the static cache
            cache_kwargs = {"sin": sin, "cos": cos, "cache_position": cache_position}
            key_states, value_states = past_key_value.update(key_states, value_states, self.layer_idx, cache_kwargs)

        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)

        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)

        if attention_mask is not None:  # no matter the length, we just slice it
            causal_mask = attention_mask[:, :, :, : key_states.shape[-2]]
            attn_weights = attn_weights + causal_mask

        # upcast attention to fp32
        attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_weights = nn.functional.dropout(attn_weights, p=self.attention_dropout, training=self.training)
        attn_output = torch.matmul(attn_weights, value_states)

        if attn_output.size() != (bsz, self.num_heads, q_len, self.head_dim):
            raise ValueError(f"`attn_output` should be of size {(bsz, self.num_heads, q_len, self.head_dim)}")

        attn_output = attn_output.transpose(1, 2).contiguous()
        attn_output = self.o_proj(attn_output.view(bsz, q_len, -1))

        if not output_attentions:
            attn_weights = None

        return attn_output, attn_weights, past_key_value
"""  # noqa: E501

# Upstream's forward in place: the signature is the contract's, the rotary call, the cache update
# and the mask slice are translated, the static-cache hook dropped; everything else is upstream's.
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
        bsz, q_len, _ = hidden_states.size()

        query_states = self.q_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)

        # vacc: dropped (static-cache-hook): past_key_value = getattr(self, "past_key_value", past_key_value)
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

        if attention_mask is not None:  # no matter the length, we just slice it
            expected = (query_states.size(0), 1, query_states.size(2), key_states.size(2))
            if attention_mask.size() != expected:
                raise ValueError(f"Attention mask should be of size {expected}, but is {attention_mask.size()}")
            causal_mask = attention_mask
            attn_weights = attn_weights + causal_mask

        # upcast attention to fp32
        attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_weights = nn.functional.dropout(attn_weights, p=self.attention_dropout, training=self.training)
        attn_output = torch.matmul(attn_weights, value_states)

        if attn_output.size() != (bsz, self.num_heads, q_len, self.head_dim):
            raise ValueError(f"`attn_output` should be of size {(bsz, self.num_heads, q_len, self.head_dim)}")

        attn_output = attn_output.transpose(1, 2).contiguous()
        attn_output = self.o_proj(attn_output.view(bsz, q_len, -1))

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

UPSTREAM = HEADER + ATTENTION_INIT + CACHE_FORWARD + VARIANTS + LAYER
OUTPUT = HEADER + ATTENTION_INIT + TUPLE_FORWARD + LAYER_AFTER

# -- eager-function (4.48+) ------------------------------------------------------------------------

EAGER_FUNCTION = """

def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)

    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        causal_mask = attention_mask[:, :, :, : key_states.shape[-2]]
        attn_weights = attn_weights + causal_mask

    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)
    attn_output = attn_output.transpose(1, 2).contiguous()

    return attn_output, attn_weights
"""

EAGER_INIT = """

class GemmaAttention(nn.Module):
    def __init__(self, config: GemmaConfig, layer_idx: int):
        super().__init__()
        self.head_dim = config.head_dim
        self.scaling = config.head_dim**-0.5
"""

EAGER_FORWARD = """
    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: Tuple[torch.Tensor, torch.Tensor],
        attention_mask: Optional[torch.Tensor],
        past_key_value: Optional[Cache] = None,
        cache_position: Optional[torch.LongTensor] = None,
        **kwargs: Unpack[FlashAttentionKwargs],
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[Tuple[torch.Tensor]]]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if past_key_value is not None:
            # sin and cos are specific to RoPE models; cache_position needed for the static cache
            cache_kwargs = {"sin": sin, "cos": cos, "cache_position": cache_position}
            key_states, value_states = past_key_value.update(key_states, value_states, self.layer_idx, cache_kwargs)

        attention_interface: Callable = eager_attention_forward
        if self.config._attn_implementation != "eager":
            if self.config._attn_implementation == "sdpa" and kwargs.get("output_attentions", False):
                logger.warning_once(
                    "`torch.nn.functional.scaled_dot_product_attention` does not support `output_attentions=True`. Falling back to "
                    'eager attention. This warning can be removed using the argument `attn_implementation="eager"` when loading the model.'
                )
            else:
                attention_interface = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]

        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )

        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        attn_output = self.o_proj(attn_output)
        return attn_output, attn_weights
"""  # noqa: E501

# The eager function's statements take the place of the interface call, its parameters bound to
# the call's arguments; the attention builds the rotary embedding GemmaModel used to hand down.
EAGER_INIT_AFTER = """

class GemmaAttention(nn.Module):
    def __init__(self, config: GemmaConfig, layer_idx: int):
        super().__init__()
        self.head_dim = config.head_dim
        self.scaling = config.head_dim**-0.5

        # vacc: each attention computes its own cos/sin tables
        self.rotary_emb = GemmaRotaryEmbedding(config=config)
"""

EAGER_FORWARD_AFTER = """
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask=None,
        position_ids=None,
        past_key_value=None,
        output_attentions: bool = False,
        use_cache: bool = False,
    ):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        kv_seq_len = key_states.shape[-2]
        if past_key_value is not None:
            kv_seq_len += past_key_value[0].shape[-2]
        cos, sin = self.rotary_emb(value_states, position_ids, seq_len=kv_seq_len)
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin, position_ids)

        if past_key_value is not None:
            key_states = torch.cat([past_key_value[0], key_states], dim=2)
            value_states = torch.cat([past_key_value[1], value_states], dim=2)
        past_key_value = (key_states, value_states) if use_cache else None

        # vacc: dropped (attention-dispatch): attention_interface: Callable = eager_attention_forward
        # vacc: dropped (attention-dispatch): if self.config._attn_implementation != "eager": …

        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)

        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) * self.scaling
        if attention_mask is not None:
            expected = (query_states.size(0), 1, query_states.size(2), key_states.size(2))
            if attention_mask.size() != expected:
                raise ValueError(f"Attention mask should be of size {expected}, but is {attention_mask.size()}")
            causal_mask = attention_mask
            attn_weights = attn_weights + causal_mask

        attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_weights = nn.functional.dropout(attn_weights, p=0.0 if not self.training else self.attention_dropout, training=self.training)
        attn_output = torch.matmul(attn_weights, value_states)
        attn_output = attn_output.transpose(1, 2).contiguous()

        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        attn_output = self.o_proj(attn_output)
        if not output_attentions:
            attn_weights = None
        return attn_output, attn_weights, past_key_value
"""  # noqa: E501

EAGER_LAYER_AND_MODEL = """

class GemmaDecoderLayer(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.self_attn = GemmaAttention(config=config, layer_idx=layer_idx)


class GemmaModel(GemmaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.rotary_emb = GemmaRotaryEmbedding(config=config)
"""

EAGER_UPSTREAM = HEADER + EAGER_FUNCTION + EAGER_INIT + EAGER_FORWARD + EAGER_LAYER_AND_MODEL
EAGER_OUTPUT = HEADER + EAGER_INIT_AFTER + EAGER_FORWARD_AFTER + EAGER_LAYER_AND_MODEL

# 5.x: the cache argument renamed `cache` (behind a renaming decorator), updated with `kwargs=kwargs`,
# the interface looked up with get_interface, the mask used as it comes.
CACHE_KEYWORD_FORWARD = """
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx, kwargs=kwargs)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )

        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )

        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        attn_output = self.o_proj(attn_output)
        return attn_output, attn_weights
"""
CACHE_KEYWORD_EAGER_FUNCTION = EAGER_FUNCTION.replace(
    "        causal_mask = attention_mask[:, :, :, : key_states.shape[-2]]\n"
    "        attn_weights = attn_weights + causal_mask\n",
    "        attn_weights = attn_weights + attention_mask\n",
)
CACHE_KEYWORD_FORWARD_AFTER = (
    EAGER_FORWARD_AFTER.replace(
        "        # vacc: dropped (attention-dispatch): attention_interface: Callable = eager_attention_forward\n"  # noqa: E501
        '        # vacc: dropped (attention-dispatch): if self.config._attn_implementation != "eager": …\n',
        "        # vacc: dropped (attention-dispatch): attention_interface: Callable = "
        "ALL_ATTENTION_FUNCTIONS.get_interface( …\n",
    )
    .replace(
        "            causal_mask = attention_mask\n            attn_weights = attn_weights + causal_mask\n",
        "",
    )
    .replace(
        'raise ValueError(f"Attention mask should be of size {expected}, but is {attention_mask.size()}")\n',
        'raise ValueError(f"Attention mask should be of size {expected}, but is {attention_mask.size()}")\n'
        "            attn_weights = attn_weights + attention_mask\n",
    )
)
CACHE_KEYWORD_UPSTREAM = (
    HEADER + CACHE_KEYWORD_EAGER_FUNCTION + EAGER_INIT + CACHE_KEYWORD_FORWARD + EAGER_LAYER_AND_MODEL
)
CACHE_KEYWORD_OUTPUT = HEADER + EAGER_INIT_AFTER + CACHE_KEYWORD_FORWARD_AFTER + EAGER_LAYER_AND_MODEL


# -- one before/after pair per shape ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "shape"),
    [
        pytest.param(UPSTREAM, OUTPUT, "three-classes", id="three-classes"),
        pytest.param(EAGER_UPSTREAM, EAGER_OUTPUT, "eager-function", id="eager-function"),
        pytest.param(
            CACHE_KEYWORD_UPSTREAM, CACHE_KEYWORD_OUTPUT, "eager-function", id="eager-function-cache-keyword"
        ),
    ],
)
def test_shapes(before: str, after: str, shape: str) -> None:
    assert_codemod(Attention, before, after, (shape,))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(OUTPUT, id="three-classes-output_noop"),
        pytest.param(EAGER_OUTPUT, id="eager-function-output_noop"),
        pytest.param(CACHE_KEYWORD_OUTPUT, id="cache-keyword-output_noop"),
        pytest.param(
            OUTPUT.replace("        # upcast attention to fp32\n", "")
            .replace('f"Attention mask', "f'Attention mask")
            .replace('attention_mask.size()}")', "attention_mask.size()}')"),
            id="reformatted-own-output_noop",
        ),
    ],
)
def test_tuple_cache_noop(source: str) -> None:
    assert_noop(Attention, source, ("tuple-cache",))


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(UPSTREAM, id="three-classes"),
        pytest.param(EAGER_UPSTREAM, id="eager-function"),
        pytest.param(CACHE_KEYWORD_UPSTREAM, id="eager-function-cache-keyword"),
    ],
)
def test_idempotent(source: str) -> None:
    assert_idempotent(Attention, source)


def test_unclaimed_code_untouched() -> None:
    code, _ = apply(Attention, UPSTREAM)
    for unit in (HEADER, ATTENTION_INIT, LAYER_AFTER):
        assert unit in code
    for gone in (
        "GemmaFlashAttention2",
        "GemmaSdpaAttention",
        "GEMMA_ATTENTION_CLASSES",
        "LlamaFlashAttention2",
    ):
        assert gone not in code


# -- carried: what upstream adds inside the rewritten forward reaches the output, in place ---------


def _insert_after(source: str, anchor: str, extra: str) -> str:
    assert source.count(anchor) == 1, anchor
    return source.replace(anchor, anchor + extra)


SCORES = "        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)\n"  # noqa: E501
SOFTCAP = "        attn_weights = torch.tanh(attn_weights / 50.0) * 50.0\n"
K_PROJ = (
    "        key_states = self.k_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)\n"
)
QK_NORM = "        query_states = self.q_norm(query_states)\n        key_states = self.k_norm(key_states)\n"
MASK_ADD = "            attn_weights = attn_weights + causal_mask\n"
CLAMP = "            attn_weights = attn_weights.clamp(min=torch.finfo(attn_weights.dtype).min)\n"
O_PROJ = "        attn_output = self.o_proj(attn_output.view(bsz, q_len, -1))\n"
GATE = "        attn_output = attn_output * self.gate(hidden_states)\n"


@pytest.mark.parametrize(
    ("anchor", "extra"),
    [
        pytest.param(SCORES, SOFTCAP, id="soft-capping-after-the-scores"),
        pytest.param(K_PROJ, QK_NORM, id="query-key-norms"),
        pytest.param(MASK_ADD, CLAMP, id="inside-the-mask-block"),
        pytest.param(O_PROJ, GATE, id="output-gate"),
        pytest.param(
            "        bsz, q_len, _ = hidden_states.size()\n",
            "        hidden_states = self.pre_norm(hidden_states)  # a new norm\n",
            id="extra-norm-first",
        ),
    ],
)
def test_three_classes_carries_upstream_statements(anchor: str, extra: str) -> None:
    assert_codemod(
        Attention,
        _insert_after(UPSTREAM, anchor, extra),
        _insert_after(OUTPUT, anchor, extra),
        ("three-classes",),
    )


EAGER_SCORES = "    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling\n"
EAGER_SCORES_AFTER = (
    "        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) * self.scaling\n"
)
CALL_ARGS = "            scaling=self.scaling,\n"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(
            _insert_after(
                EAGER_UPSTREAM, EAGER_SCORES, "    attn_weights = torch.tanh(attn_weights / 50.0) * 50.0\n"
            ),
            _insert_after(EAGER_OUTPUT, EAGER_SCORES_AFTER, SOFTCAP),
            id="soft-capping-in-the-eager-function",
        ),
        pytest.param(
            # Gemma 2's form: a parameter of the eager function, passed by the call
            _insert_after(
                _insert_after(
                    EAGER_UPSTREAM.replace(
                        "    dropout: float = 0.0,\n",
                        "    dropout: float = 0.0,\n    softcap: Optional[float] = None,\n",
                    ),
                    EAGER_SCORES,
                    "    if softcap is not None:\n        attn_weights = torch.tanh(attn_weights / softcap) * softcap\n",  # noqa: E501
                ),
                CALL_ARGS,
                "            softcap=self.config.attn_logit_softcapping,\n",
            ),
            _insert_after(
                EAGER_OUTPUT,
                EAGER_SCORES_AFTER,
                "        if self.config.attn_logit_softcapping is not None:\n"
                "            attn_weights = torch.tanh(attn_weights / self.config.attn_logit_softcapping) * "
                "self.config.attn_logit_softcapping\n",
            ),
            id="soft-capping-parameter-bound-to-the-call",
        ),
        pytest.param(
            _insert_after(
                EAGER_UPSTREAM, EAGER_SCORES, "    attn_weights = attn_weights * module.score_scale\n"
            ),
            _insert_after(
                EAGER_OUTPUT, EAGER_SCORES_AFTER, "        attn_weights = attn_weights * self.score_scale\n"
            ),
            id="module-attribute-becomes-self",
        ),
        pytest.param(
            _insert_after(EAGER_UPSTREAM, "        attn_output = self.o_proj(attn_output)\n", GATE),
            _insert_after(EAGER_OUTPUT, "        attn_output = self.o_proj(attn_output)\n", GATE),
            id="forward-statement-after-the-call",
        ),
        pytest.param(
            _insert_after(
                EAGER_UPSTREAM,
                "        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)\n",
                "        query_states = self.q_norm(query_states)\n",
            ),
            _insert_after(
                EAGER_OUTPUT,
                "        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)\n",
                "        query_states = self.q_norm(query_states)\n",
            ),
            id="extra-norm-in-the-forward",
        ),
    ],
)
def test_eager_function_carries_upstream_statements(before: str, after: str) -> None:
    assert_codemod(Attention, before, after, ("eager-function",))


def test_carried_statements_survive_idempotence() -> None:
    assert_idempotent(Attention, _insert_after(UPSTREAM, SCORES, SOFTCAP))
    once, _ = apply(
        Attention, _insert_after(EAGER_UPSTREAM, EAGER_SCORES, "    attn_weights = attn_weights * 2\n")
    )
    assert_noop(Attention, once, ("tuple-cache",))


# -- drift -------------------------------------------------------------------------------------------

FORWARD = "GemmaAttention.forward"
UPDATE = "            key_states, value_states = past_key_value.update(key_states, value_states, self.layer_idx, cache_kwargs)\n"  # noqa: E501
ROTARY = "        cos, sin = self.rotary_emb(value_states, position_ids, seq_len=None)\n"
APPLY = "        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin, None)\n"
HOOK = '        past_key_value = getattr(self, "past_key_value", past_key_value)\n'
SIGNATURE_END = "        **kwargs,\n    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[Tuple[torch.Tensor]]]:\n"  # noqa: E501
MASK_BLOCK = (
    "        if attention_mask is not None:  # no matter the length, we just slice it\n"
    "            causal_mask = attention_mask[:, :, :, : key_states.shape[-2]]\n"
    "            attn_weights = attn_weights + causal_mask\n"
)


def _drift_node(source: str, target: str) -> str | None:
    """The first line of the statement the Drift points at (None when it points at none)."""
    drift = assert_drift(Attention, source, target)
    return None if drift.node is None else r.first_line(drift.node)


@pytest.mark.parametrize(
    ("source", "target", "node"),
    [
        # translate/drop statements perturbed: strict recognition, so drift at the statement
        pytest.param(
            UPSTREAM.replace(UPDATE, UPDATE.replace("cache_kwargs)", "cache_kwargs, 1)")),
            FORWARD,
            "if past_key_value is not None: …",
            id="cache-update-extra-argument",
        ),
        pytest.param(
            UPSTREAM.replace(HOOK, HOOK.replace(", past_key_value)", ", None)")),
            FORWARD,
            'past_key_value = getattr(self, "past_key_value", None)',
            id="static-cache-hook-changed",
        ),
        pytest.param(
            _insert_after(UPSTREAM, APPLY, "        cache_position = cache_position[-1:]\n"),
            FORWARD,
            "cache_position = cache_position[-1:]",
            id="statement-using-cache-position",
        ),
        pytest.param(
            _insert_after(
                UPSTREAM, SCORES, '        attn_weights = attn_weights * kwargs.get("scale", 1.0)\n'
            ),
            FORWARD,
            'attn_weights = attn_weights * kwargs.get("scale", 1.0)',
            id="statement-using-kwargs",
        ),
        pytest.param(
            UPSTREAM.replace(
                "        return attn_output, attn_weights, past_key_value\n",
                "        return attn_output, attn_weights, past_key_value, None\n",
            ),
            FORWARD,
            "return attn_output, attn_weights, past_key_value, None",
            id="return-changed",
        ),
        # required translations that do not happen (exactly once)
        pytest.param(
            UPSTREAM.replace(ROTARY, ROTARY.replace("seq_len=None)", "seq_len=None) * 2")),
            FORWARD,
            "def forward( …",
            id="rotary-call-scaled",
        ),
        pytest.param(UPSTREAM.replace(APPLY, ""), FORWARD, "def forward( …", id="no-apply-rotary-pos-emb"),
        pytest.param(
            _insert_after(UPSTREAM, APPLY, APPLY), FORWARD, "def forward( …", id="rotary-applied-twice"
        ),
        pytest.param(UPSTREAM.replace(MASK_BLOCK, ""), FORWARD, "def forward( …", id="no-mask-block"),
        pytest.param(
            UPSTREAM.replace(
                "        if not output_attentions:\n            attn_weights = None\n\n"
                "        return attn_output, attn_weights, past_key_value\n",
                "        return attn_output\n",
            ),
            FORWARD,
            "def forward( …",
            id="no-return-of-the-weights",
        ),
        # the signature
        pytest.param(
            UPSTREAM.replace(SIGNATURE_END, "        layer_scale: float = 1.0,\n" + SIGNATURE_END),
            FORWARD,
            "def forward( …",
            id="new-parameter",
        ),
        pytest.param(
            UPSTREAM.replace("        use_cache: bool = False,\n", "        use_cache: bool = True,\n"),
            FORWARD,
            "def forward( …",
            id="changed-default",
        ),
        pytest.param(
            UPSTREAM.replace(
                "    def forward(\n        self,\n        hidden_states: torch.Tensor,\n        attention_mask",  # noqa: E501
                "    @torch.no_grad()\n    def forward(\n        self,\n        hidden_states: torch.Tensor,\n        attention_mask",  # noqa: E501
            ),
            FORWARD,
            "@torch.no_grad()",
            id="unknown-decorator",
        ),
        # the units around the forward
        pytest.param(
            UPSTREAM.replace("class GemmaAttention(", "class GemmaSelfAttention("),
            "GemmaAttention",
            None,
            id="class-renamed",
        ),
        pytest.param(HEADER + LAYER, "GemmaAttention", None, id="class-removed"),
        pytest.param(
            UPSTREAM.replace(
                "    def forward(\n        self,\n        hidden_states: torch.Tensor,\n        attention_mask",  # noqa: E501
                "    def attend(\n        self,\n        hidden_states: torch.Tensor,\n        attention_mask",  # noqa: E501
            ),
            FORWARD,
            None,
            id="forward-renamed",
        ),
        pytest.param(
            HEADER + ATTENTION_INIT + CACHE_FORWARD + LAYER,
            "GemmaAttention.forward",
            "def forward( …",
            id="variants-removed",
        ),
        pytest.param(
            UPSTREAM.replace("class GemmaSdpaAttention", "class GemmaSdpaAttention2"),
            "GemmaAttention",
            None,
            id="sdpa-variant-renamed",
        ),
        pytest.param(
            HEADER + ATTENTION_INIT + CACHE_FORWARD + VARIANTS.split("\n\nGEMMA_ATTENTION")[0] + LAYER,
            "GemmaAttention",
            None,
            id="mapping-removed",
        ),
        pytest.param(
            UPSTREAM.replace("GEMMA_ATTENTION_CLASSES[config._attn_implementation]", "GemmaAttention"),
            "GemmaDecoderLayer.__init__",
            None,
            id="layer-not-using-mapping",
        ),
        pytest.param(
            HEADER + ATTENTION_INIT + CACHE_FORWARD + VARIANTS,
            "GemmaDecoderLayer.__init__",
            None,
            id="layer-removed",
        ),
        pytest.param(UPSTREAM + EAGER_FUNCTION, "GemmaAttention", None, id="eager-function-and-variants"),
    ],
)
def test_three_classes_drift(source: str, target: str, node: str | None) -> None:
    assert _drift_node(source, target) == node


EAGER_DISPATCH = (
    "                attention_interface = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]\n"
)


@pytest.mark.parametrize(
    ("source", "target", "node"),
    [
        pytest.param(
            EAGER_UPSTREAM.replace(
                "        cos, sin = position_embeddings\n",
                "        cos, sin = position_embeddings[0] * 2, position_embeddings[1]\n",
            ),
            FORWARD,
            "cos, sin = position_embeddings[0] * 2, position_embeddings[1]",
            id="rotary-tables-changed",
        ),
        pytest.param(
            EAGER_UPSTREAM.replace(
                EAGER_DISPATCH, EAGER_DISPATCH.replace("[self.config._attn_implementation]", '["sdpa"]')
            ),
            FORWARD,
            'if self.config._attn_implementation == "sdpa" and kwargs.get("output_attentions", False): …',
            id="dispatch-changed",
        ),
        pytest.param(
            _insert_after(
                EAGER_UPSTREAM,
                "        attn_output = self.o_proj(attn_output)\n",
                "        attn_output = attn_output + key_states.mean()\n",
            ),
            FORWARD,
            "attn_output, attn_weights = attention_interface( …",
            id="forward-reads-a-name-the-eager-function-assigns",
        ),
        pytest.param(
            EAGER_UPSTREAM.replace("            scaling=self.scaling,\n", ""),
            "eager_attention_forward",
            "def eager_attention_forward( …",
            id="call-passes-no-scaling",
        ),
        pytest.param(
            _insert_after(
                EAGER_UPSTREAM,
                "    value_states = repeat_kv(value, module.num_key_value_groups)\n",
                "    return torch.matmul(query, key_states), None\n",
            ),
            "eager_attention_forward",
            "def eager_attention_forward( …",
            id="eager-function-returns-early",
        ),
        pytest.param(
            _insert_after(
                EAGER_UPSTREAM, EAGER_SCORES, '    attn_weights = attn_weights * kwargs["scale"]\n'
            ),
            "eager_attention_forward",
            'attn_weights = attn_weights * kwargs["scale"]',
            id="eager-function-reads-kwargs",
        ),
        pytest.param(
            EAGER_UPSTREAM.replace("    **kwargs,\n):", "):").replace(
                CALL_ARGS, CALL_ARGS + "            sliding_window=None,\n"
            ),
            "eager_attention_forward",
            None,
            id="call-passes-a-keyword-the-function-does-not-take",
        ),
        pytest.param(
            EAGER_UPSTREAM.replace(
                "        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)\n",  # noqa: E501
                "",
            ),
            FORWARD,
            "def forward( …",
            id="no-apply-rotary-pos-emb",
        ),
        pytest.param(
            EAGER_UPSTREAM.replace("self.rotary_emb = GemmaRotaryEmbedding(config=config)", "pass"),
            "GemmaAttention.__init__",
            None,
            id="model-without-rotary",
        ),
        pytest.param(
            UPSTREAM.replace(
                SCORES, "        attn_output, attn_weights = attention_interface(self, query_states)\n"
            ),
            FORWARD,
            "attn_output, attn_weights = attention_interface(self, query_states)",
            id="interface-call-without-eager-function",
        ),
        pytest.param(  # the call passes dropout: inlined, the default would leave no trace
            EAGER_UPSTREAM.replace("    dropout: float = 0.0,\n", "    dropout: float = 0.1,\n", 1),
            "eager_attention_forward",
            "def eager_attention_forward( …",
            id="eager-function-default-changed",
        ),
    ],
)
def test_eager_function_drift(source: str, target: str, node: str | None) -> None:
    assert _drift_node(source, target) == node


def test_drift_is_raised_as_drift_not_another_error() -> None:
    """A perturbed statement of the eager function is refused as Drift (never an internal error)."""
    source = EAGER_UPSTREAM.replace(
        "    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)\n",
        "    attn_weights = nn.functional.dropout(attn_weights, p=kwargs.get('p', dropout), training=module.training)\n",  # noqa: E501
    )
    with pytest.raises(Drift):
        apply(Attention, source)


def test_interface_call_with_too_many_arguments_is_drift() -> None:
    source = EAGER_UPSTREAM.replace(
        "            attention_mask,\n",
        "            attention_mask,\n            0.1,\n            0.0,\n            7,\n",
    )
    assert_drift(Attention, source, "eager_attention_forward")


def test_interface_call_with_too_many_arguments_names_the_call() -> None:
    source = EAGER_UPSTREAM.replace(
        "            attention_mask,\n",
        "            attention_mask,\n            0.1,\n            0.0,\n            7,\n",
    )
    assert (
        _drift_node(source, "eager_attention_forward") == "attn_output, attn_weights = attention_interface( …"
    )


def test_eager_function_returning_early_inside_a_block_is_drift() -> None:
    source = _insert_after(
        EAGER_UPSTREAM,
        "    value_states = repeat_kv(value, module.num_key_value_groups)\n",
        "    if attention_mask is None:\n        return torch.matmul(query, key_states), None\n",
    )
    assert_drift(Attention, source, "eager_attention_forward")


def test_inlining_does_not_capture_a_parameter_the_eager_function_reassigns() -> None:
    source = EAGER_UPSTREAM.replace(
        "    attn_output = attn_output.transpose(1, 2).contiguous()\n",
        "    attn_output = attn_output.transpose(1, 2).contiguous() / key.shape[1]\n",
    )
    try:
        code, _ = apply(Attention, source)
    except Drift:
        return
    assert "/ key_states.shape[1]" not in code


# -- formatting ----------------------------------------------------------------------------------------


def test_three_classes_formatting_insensitive() -> None:
    reformatted = (
        HEADER
        + ATTENTION_INIT.replace('"""Multi-headed', "'''Multi-headed").replace('paper"""', "paper'''")
        + CACHE_FORWARD.replace(
            "/ math.sqrt(self.head_dim)", "/ math.sqrt(\n            self.head_dim  # scale\n        )"
        )
        .replace('"past_key_value"', "'past_key_value'")
        .replace(
            '{"sin": sin, "cos": cos, "cache_position": cache_position}',
            "{'sin': sin, 'cos': cos, 'cache_position': cache_position}",
        )
        .replace(
            "            # sin and cos are specific to RoPE models; cache_position needed for the static cache\n",  # noqa: E501
            "",
        )
        .replace(
            ROTARY,
            "        cos, sin = self.rotary_emb(\n            value_states, position_ids, seq_len=None,\n        )\n",  # noqa: E501
        )
        + VARIANTS.replace('"eager": GemmaAttention,\n    ', '"eager": GemmaAttention, ')
        + LAYER.replace(
            "(config=config, layer_idx=layer_idx)",
            "(\n            config=config, layer_idx=layer_idx\n        )",
        )
    )
    assert_formatting_insensitive(Attention, UPSTREAM, reformatted)


def test_eager_function_formatting_insensitive() -> None:
    reformatted = (
        EAGER_UPSTREAM.replace(
            "        attn_output, attn_weights = attention_interface(\n"
            "            self,\n"
            "            query_states,\n"
            "            key_states,\n"
            "            value_states,\n"
            "            attention_mask,\n",
            "        attn_output, attn_weights = attention_interface(\n"
            "            self, query_states, key_states, value_states, attention_mask,  # the call\n",
        )
        .replace(
            '        if self.config._attn_implementation != "eager":\n',
            "        if self.config._attn_implementation != 'eager':\n",
        )
        .replace(
            "    key_states = repeat_kv(key, module.num_key_value_groups)\n",
            "    key_states = repeat_kv(\n        key, module.num_key_value_groups\n    )\n",
        )
    )
    assert_formatting_insensitive(Attention, EAGER_UPSTREAM, reformatted)


def test_formatting_insensitive_to_joined_statements() -> None:
    """The scores statement sharing its line with another (``a; b``) is still the scores."""
    source = UPSTREAM.replace(SCORES, "        dropout = 0.0\n" + SCORES)
    reformatted = UPSTREAM.replace(SCORES, "        dropout = 0.0; " + SCORES.lstrip())
    assert_formatting_insensitive(Attention, source, reformatted)


@pytest.mark.parametrize(
    "model_init",
    [
        pytest.param(
            "        self.norm = GemmaRMSNorm(config.hidden_size); "
            "self.rotary_emb = GemmaRotaryEmbedding(config=config)\n",
            id="joined-with-another-statement",
        ),
        pytest.param(None, id="one-line-def"),
    ],
)
def test_eager_function_takes_only_the_rotary_statement_from_the_model(model_init: str | None) -> None:
    """GemmaModel.__init__ is not this codemod's target: however it is laid out, the attention
    gets the rotary construction and nothing else from it."""
    old = (
        "    def __init__(self, config):\n        super().__init__(config)\n"
        "        self.rotary_emb = GemmaRotaryEmbedding(config=config)\n"
    )
    new = (
        "    def __init__(self, config):\n" + model_init
        if model_init
        else "    def __init__(self, config): self.norm = GemmaRMSNorm(config.hidden_size); "
        "self.rotary_emb = GemmaRotaryEmbedding(config=config)\n"
    )
    assert old in EAGER_UPSTREAM
    code, change = apply(Attention, EAGER_UPSTREAM.replace(old, new))
    assert change.shapes == ("eager-function",)
    init = code.split("class GemmaAttention(nn.Module):")[1].split("def forward")[0]
    assert "self.rotary_emb = GemmaRotaryEmbedding(config=config)\n" in init
    assert "self.norm" not in init
    assert new in code  # the model itself is left as it was
