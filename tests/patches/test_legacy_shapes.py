"""The legacy shapes (Llama 4.36 era), before/after on synthetic modules in Gemma's names.

Mistral 4.38.0-4.41.2 brought them (its upstream kept the Llama 4.36 forms longer than Gemma's);
they are the same transformation for any family, so each is one shape of the shared codemod:

* rotary-embedding ``seq-len-tables``: ``forward(x, seq_len)`` slicing a cos/sin cache, already
  the contract's tables: it gains the contract's ``position_ids`` parameter, its body is kept;
* attention ``kv-seq-len`` (within ``three-classes``): ``kv_seq_len`` grown by the cache's
  ``get_usable_length`` (translated ``tuple-cache-length``), rotary tables asked for
  ``seq_len=kv_seq_len`` (``rotary-tables``), the ``padding_mask`` warning dropped
  (``padding-mask-warning``), ``Cache.update`` with ``{"sin", "cos"}`` (``tuple-cache``);
* decoder-layer-forward ``past-key-value``: neither ``cache_position`` nor
  ``position_embeddings``, the ``padding_mask`` warning dropped;
* mask-generation ``prepare-4d-mask``: ``DynamicCache.from_legacy_cache`` under ``if use_cache:``
  (``past-length``), the mask builder chosen by ``self._attn_implementation``: the flash-attention
  and SDPA branches dropped (``attention-dispatch``), the eager
  ``_prepare_4d_causal_attention_mask`` translated to ``_prepare_decoder_attention_mask`` with
  upstream's arguments; its ``sliding_window=`` dropped by the rule ``sliding-window`` for a family
  with that trait (Mistral), drift for one without (Gemma); without the argument, the shape is
  Gemma's too.

Each has its near misses: one unknown statement (or argument) in the legacy form is drift, named
with its codemod, target and upstream line.
"""

from __future__ import annotations

import pytest
import test_attention as ta
import test_decoder_layer_forward as td
import test_mask_generation as tm
from codemod_cases import apply, assert_codemod, assert_drift, assert_idempotent, fixture

from patcher.upstream.families import GEMMA, MISTRAL
from patches import _rules as r
from patches import _shapes as s
from patches._base import Drift
from patches.attention import Attention
from patches.decoder_layer_forward import DecoderLayerForward
from patches.mask_generation import MaskGeneration
from patches.rotary_embedding import RotaryEmbedding

ROTARY_HEADER = """\
import torch
from torch import nn
"""

LEGACY_ROTARY = '''

class GemmaRotaryEmbedding(nn.Module):
    def __init__(self, dim, max_position_embeddings=2048, base=10000, device=None):
        super().__init__()
        self.dim = dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float().to(device) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._set_cos_sin_cache(max_position_embeddings, self.inv_freq.device, torch.get_default_dtype())

    def _set_cos_sin_cache(self, seq_len, device, dtype):
        self.max_seq_len_cached = seq_len
        t = torch.arange(self.max_seq_len_cached, device=device, dtype=torch.int64).type_as(self.inv_freq)
        emb = torch.cat((torch.outer(t, self.inv_freq),) * 2, dim=-1)
        self.register_buffer("cos_cached", emb.cos().to(dtype), persistent=False)
        self.register_buffer("sin_cached", emb.sin().to(dtype), persistent=False)

    def forward(self, x, seq_len=None):
        # x: [bs, num_attention_heads, seq_len, head_size]
        if seq_len > self.max_seq_len_cached:
            self._set_cos_sin_cache(seq_len=seq_len, device=x.device, dtype=x.dtype)

        return (
            self.cos_cached[:seq_len].to(dtype=x.dtype),
            self.sin_cached[:seq_len].to(dtype=x.dtype),
        )


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin, position_ids, unsqueeze_dim=1):
    """Applies Rotary Position Embedding to the query and key tensors."""
    cos = cos[position_ids].unsqueeze(unsqueeze_dim)
    sin = sin[position_ids].unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed
'''

LEGACY_ATTENTION_FORWARD = """
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_value: Optional[Cache] = None,
        output_attentions: bool = False,
        use_cache: bool = False,
        **kwargs,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[Tuple[torch.Tensor]]]:
        if "padding_mask" in kwargs:
            warnings.warn(
                "Passing `padding_mask` is deprecated and will be removed in v4.37. Please make sure use `attention_mask` instead.`"
            )
        bsz, q_len, _ = hidden_states.size()

        query_states = self.q_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)

        kv_seq_len = key_states.shape[-2]
        if past_key_value is not None:
            if self.layer_idx is None:
                raise ValueError(
                    f"The cache structure has changed since version v4.36. If you are using {self.__class__.__name__} "
                    "for auto-regressive decoding with k/v caching, please make sure to initialize the attention class "
                    "with a layer index."
                )
            kv_seq_len += past_key_value.get_usable_length(kv_seq_len, self.layer_idx)
        cos, sin = self.rotary_emb(value_states, seq_len=kv_seq_len)
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin, position_ids)

        if past_key_value is not None:
            cache_kwargs = {"sin": sin, "cos": cos}  # Specific to RoPE models
            key_states, value_states = past_key_value.update(key_states, value_states, self.layer_idx, cache_kwargs)

        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)

        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)

        if attention_mask is not None:
            if attention_mask.size() != (bsz, 1, q_len, kv_seq_len):
                raise ValueError(f"Attention mask should be of size {(bsz, 1, q_len, kv_seq_len)}")

            attn_weights = attn_weights + attention_mask

        # upcast attention to fp32
        attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_weights = nn.functional.dropout(attn_weights, p=self.attention_dropout, training=self.training)
        attn_output = torch.matmul(attn_weights, value_states)

        attn_output = attn_output.transpose(1, 2).contiguous()
        attn_output = self.o_proj(attn_output.reshape(bsz, q_len, -1))

        if not output_attentions:
            attn_weights = None

        return attn_output, attn_weights, past_key_value
"""  # noqa: E501

LEGACY_LAYER_FORWARD = '''
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_value: Optional[Tuple[torch.Tensor]] = None,
        output_attentions: Optional[bool] = False,
        use_cache: Optional[bool] = False,
        **kwargs,
    ) -> Tuple[torch.FloatTensor, Optional[Tuple[torch.FloatTensor, torch.FloatTensor]]]:
        if "padding_mask" in kwargs:
            warnings.warn(
                "Passing `padding_mask` is deprecated and will be removed in v4.37. Please make sure use `attention_mask` instead.`"
            )
        """
        Args:
            hidden_states (`torch.FloatTensor`): input to the layer of shape `(batch, seq_len, embed_dim)`
        """

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
'''  # noqa: E501

LEGACY_MODEL_FORWARD = """
    @add_start_docstrings_to_model_forward(GEMMA_INPUTS_DOCSTRING)
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
    ) -> Union[Tuple, BaseModelOutputWithPast]:
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict

        if input_ids is not None:
            batch_size, seq_length = input_ids.shape
        else:
            batch_size, seq_length, _ = inputs_embeds.shape

        past_key_values_length = 0

        if use_cache:
            use_legacy_cache = not isinstance(past_key_values, Cache)
            if use_legacy_cache:
                past_key_values = DynamicCache.from_legacy_cache(past_key_values)
            past_key_values_length = past_key_values.get_usable_length(seq_length)

        if position_ids is None:
            device = input_ids.device if input_ids is not None else inputs_embeds.device
            position_ids = torch.arange(
                past_key_values_length, seq_length + past_key_values_length, dtype=torch.long, device=device
            )
            position_ids = position_ids.unsqueeze(0).view(-1, seq_length)
        else:
            position_ids = position_ids.view(-1, seq_length).long()

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        if self._attn_implementation == "flash_attention_2":
            # 2d mask is passed through the layers
            attention_mask = attention_mask if (attention_mask is not None and 0 in attention_mask) else None
        elif self._attn_implementation == "sdpa" and not output_attentions:
            # output_attentions=True can not be supported when using SDPA
            attention_mask = _prepare_4d_causal_attention_mask_for_sdpa(
                attention_mask,
                (batch_size, seq_length),
                inputs_embeds,
                past_key_values_length,
                sliding_window=self.config.sliding_window,
            )
        else:
            # 4d mask is passed through the layers
            attention_mask = _prepare_4d_causal_attention_mask(
                attention_mask,
                (batch_size, seq_length),
                inputs_embeds,
                past_key_values_length,
                sliding_window=self.config.sliding_window,
            )

        hidden_states = inputs_embeds

        # decoder layers
        all_hidden_states = () if output_hidden_states else None
        all_self_attns = () if output_attentions else None
        next_decoder_cache = None

        for decoder_layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)

            if self.gradient_checkpointing and self.training:
                layer_outputs = self._gradient_checkpointing_func(
                    decoder_layer.__call__,
                    hidden_states,
                    attention_mask,
                    position_ids,
                    past_key_values,
                    output_attentions,
                    use_cache,
                )
            else:
                layer_outputs = decoder_layer(
                    hidden_states,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    past_key_value=past_key_values,
                    output_attentions=output_attentions,
                    use_cache=use_cache,
                )

            hidden_states = layer_outputs[0]

            if use_cache:
                next_decoder_cache = layer_outputs[2 if output_attentions else 1]

            if output_attentions:
                all_self_attns += (layer_outputs[1],)

        hidden_states = self.norm(hidden_states)

        # add hidden states from the last decoder layer
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        next_cache = None
        if use_cache:
            next_cache = next_decoder_cache.to_legacy_cache() if use_legacy_cache else next_decoder_cache

        if not return_dict:
            return tuple(v for v in [hidden_states, next_cache, all_hidden_states, all_self_attns] if v is not None)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=next_cache,
            hidden_states=all_hidden_states,
            attentions=all_self_attns,
        )
"""  # noqa: E501


LEGACY_ROTARY_AFTER = '''

class GemmaRotaryEmbedding(nn.Module):
    def __init__(self, dim, max_position_embeddings=2048, base=10000, device=None):
        super().__init__()
        self.dim = dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float().to(device) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._set_cos_sin_cache(max_position_embeddings, self.inv_freq.device, torch.get_default_dtype())

    def _set_cos_sin_cache(self, seq_len, device, dtype):
        self.max_seq_len_cached = seq_len
        t = torch.arange(self.max_seq_len_cached, device=device, dtype=torch.int64).type_as(self.inv_freq)
        emb = torch.cat((torch.outer(t, self.inv_freq),) * 2, dim=-1)
        self.register_buffer("cos_cached", emb.cos().to(dtype), persistent=False)
        self.register_buffer("sin_cached", emb.sin().to(dtype), persistent=False)

    # vacc: the contract's forward(x, position_ids, seq_len); these tables do not depend on position_ids
    def forward(self, x, position_ids=None, seq_len=None):
        # x: [bs, num_attention_heads, seq_len, head_size]
        if seq_len > self.max_seq_len_cached:
            self._set_cos_sin_cache(seq_len=seq_len, device=x.device, dtype=x.dtype)

        return (
            self.cos_cached[:seq_len].to(dtype=x.dtype),
            self.sin_cached[:seq_len].to(dtype=x.dtype),
        )


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin, position_ids, unsqueeze_dim=1):
    """Applies Rotary Position Embedding to the query and key tensors."""
    cos = cos[position_ids].unsqueeze(unsqueeze_dim)
    sin = sin[position_ids].unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed
'''  # noqa: E501

LEGACY_ATTENTION_AFTER = """
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask=None,
        position_ids=None,
        past_key_value=None,
        output_attentions: bool = False,
        use_cache: bool = False,
    ):
        # vacc: dropped (padding-mask-warning): if "padding_mask" in kwargs: …
        bsz, q_len, _ = hidden_states.size()

        query_states = self.q_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(bsz, q_len, -1, self.head_dim).transpose(1, 2)

        kv_seq_len = key_states.shape[-2]
        # vacc: the past length of the (key, value) tuple (a layer index only addresses a Cache object)
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
            expected = (query_states.size(0), 1, query_states.size(2), key_states.size(2))
            if attention_mask.size() != expected:
                raise ValueError(f"Attention mask should be of size {expected}, but is {attention_mask.size()}")
            if attention_mask.size() != (bsz, 1, q_len, kv_seq_len):
                raise ValueError(f"Attention mask should be of size {(bsz, 1, q_len, kv_seq_len)}")

            attn_weights = attn_weights + attention_mask

        # upcast attention to fp32
        attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_weights = nn.functional.dropout(attn_weights, p=self.attention_dropout, training=self.training)
        attn_output = torch.matmul(attn_weights, value_states)

        attn_output = attn_output.transpose(1, 2).contiguous()
        attn_output = self.o_proj(attn_output.reshape(bsz, q_len, -1))

        if not output_attentions:
            attn_weights = None

        return attn_output, attn_weights, past_key_value
"""  # noqa: E501

LEGACY_LAYER_AFTER = '''
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask=None,
        position_ids=None,
        past_key_value=None,
        output_attentions=False,
        use_cache=False,
    ):
        # vacc: dropped (padding-mask-warning): if "padding_mask" in kwargs: …
        """
        Args:
            hidden_states (`torch.FloatTensor`): input to the layer of shape `(batch, seq_len, embed_dim)`
        """

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
'''  # noqa: E501

LEGACY_MODEL_AFTER = """
    @add_start_docstrings_to_model_forward(GEMMA_INPUTS_DOCSTRING)
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

        if input_ids is not None:
            batch_size, seq_length = input_ids.shape
        else:
            batch_size, seq_length, _ = inputs_embeds.shape

        past_key_values_length = 0

        if past_key_values is not None:
            past_key_values_length = past_key_values[0][0].shape[2]

        if position_ids is None:
            device = input_ids.device if input_ids is not None else inputs_embeds.device
            position_ids = torch.arange(
                past_key_values_length, seq_length + past_key_values_length, dtype=torch.long, device=device
            )
            position_ids = position_ids.unsqueeze(0).view(-1, seq_length)
        else:
            position_ids = position_ids.view(-1, seq_length).long()

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        # vacc: dropped (attention-dispatch): if self._attn_implementation == "flash_attention_2": attention_mask = attention_mask if (attention_mask is not None and 0 in attention_mask) else None
        # vacc: dropped (attention-dispatch): elif self._attn_implementation == "sdpa" and not output_attentions: attention_mask = _prepare_4d_causal_attention_mask_for_sdpa( …
        # vacc: dropped (sliding-window): sliding_window=self.config.sliding_window
        # vacc: explicit additive mask, all ones over past + current by default
        if attention_mask is None:
            attention_mask = torch.ones(
                (inputs_embeds.shape[0], inputs_embeds.shape[1] + past_key_values_length),
                dtype=torch.bool,
                device=inputs_embeds.device,
            )
        attention_mask = self._prepare_decoder_attention_mask(
            attention_mask,
            (batch_size, seq_length),
            inputs_embeds,
            past_key_values_length,
        )

        hidden_states = inputs_embeds

        # decoder layers
        all_hidden_states = () if output_hidden_states else None
        all_self_attns = () if output_attentions else None
        next_decoder_cache = () if use_cache else None

        for idx, decoder_layer in enumerate(self.layers):
            past_key_value = past_key_values[idx] if past_key_values is not None else None
            if output_hidden_states:
                all_hidden_states += (hidden_states,)

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

        # vacc: dropped (cache-bookkeeping): next_cache = None
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


def _replace(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# -- the modules -----------------------------------------------------------------------------------
ROTARY_UPSTREAM = ROTARY_HEADER + LEGACY_ROTARY
ROTARY_OUTPUT = ROTARY_HEADER + LEGACY_ROTARY_AFTER
ATTENTION_HEADER = _replace(ta.HEADER, "import math\n", "import math\nimport warnings\n")
ATTENTION_UPSTREAM = ATTENTION_HEADER + ta.ATTENTION_INIT + LEGACY_ATTENTION_FORWARD + ta.VARIANTS + ta.LAYER
ATTENTION_OUTPUT = ATTENTION_HEADER + ta.ATTENTION_INIT + LEGACY_ATTENTION_AFTER + ta.LAYER_AFTER
LAYER_UPSTREAM = td.HEADER + td.LAYER_INIT + LEGACY_LAYER_FORWARD + td.FOOTER
LAYER_OUTPUT = td.HEADER + td.LAYER_INIT + LEGACY_LAYER_AFTER + td.FOOTER
MODEL_TOP = tm.HEADER + tm.LAYER + tm.MODEL_TOP
MODEL_HEADS = tm.CAUSAL_LM_TUPLE + tm.SEQUENCE_CLASSIFICATION
MODEL_UPSTREAM = MODEL_TOP + LEGACY_MODEL_FORWARD + MODEL_HEADS
MODEL_OUTPUT = MODEL_TOP + LEGACY_MODEL_AFTER + MODEL_HEADS
MODEL_SHAPES = ("prepare-4d-mask", "unscaled-embedding", "head-tuple-cache")
WINDOW_ARG = "                sliding_window=self.config.sliding_window,\n"
EAGER_CALL = (
    "            attention_mask = _prepare_4d_causal_attention_mask(\n"
    "                attention_mask,\n"
    "                (batch_size, seq_length),\n"
    "                inputs_embeds,\n"
    "                past_key_values_length,\n"
)
SDPA_CALL = EAGER_CALL.replace(
    "_prepare_4d_causal_attention_mask(", "_prepare_4d_causal_attention_mask_for_sdpa("
)
DROPPED_WINDOW = "        # vacc: dropped (sliding-window): sliding_window=self.config.sliding_window\n"


# -- one before/after pair per shape -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("codemod", "before", "after", "shapes", "traits"),
    [
        pytest.param(
            RotaryEmbedding,
            ROTARY_UPSTREAM,
            ROTARY_OUTPUT,
            ("seq-len-tables", "gathered"),
            None,
            id="rotary-seq-len-tables",
        ),
        pytest.param(
            Attention,
            ATTENTION_UPSTREAM,
            ATTENTION_OUTPUT,
            ("three-classes", "kv-seq-len"),
            None,
            id="attention-kv-seq-len",
        ),
        pytest.param(
            DecoderLayerForward,
            LAYER_UPSTREAM,
            LAYER_OUTPUT,
            ("past-key-value",),
            None,
            id="decoder-layer-past-key-value",
        ),
        pytest.param(
            MaskGeneration,
            MODEL_UPSTREAM,
            MODEL_OUTPUT,
            MODEL_SHAPES,
            MISTRAL.traits,
            id="mask-generation-prepare-4d-mask",
        ),
    ],
)
def test_legacy_shapes(codemod, before: str, after: str, shapes: tuple[str, ...], traits) -> None:
    assert_codemod(codemod, before, after, shapes, traits=traits)


@pytest.mark.parametrize(
    ("codemod", "source", "shapes", "traits"),
    [
        pytest.param(RotaryEmbedding, ROTARY_OUTPUT, ("seq-len-tables", "gathered"), None, id="rotary_noop"),
        pytest.param(Attention, ATTENTION_OUTPUT, ("tuple-cache",), None, id="attention_noop"),
        pytest.param(DecoderLayerForward, LAYER_OUTPUT, ("tuple-outputs",), None, id="decoder-layer_noop"),
        pytest.param(
            MaskGeneration,
            MODEL_OUTPUT,
            ("tuple-cache", "head-tuple-cache"),
            MISTRAL.traits,
            id="mask-generation_noop",
        ),
    ],
)
def test_own_outputs_are_noops(codemod, source: str, shapes: tuple[str, ...], traits) -> None:
    assert_codemod(codemod, source, source, shapes, traits=traits)
    _, change = apply(codemod, source, traits=traits)
    assert (change.added, change.removed) == (0, 0)


@pytest.mark.parametrize(
    ("codemod", "source"),
    [
        pytest.param(RotaryEmbedding, ROTARY_UPSTREAM, id="rotary"),
        pytest.param(Attention, ATTENTION_UPSTREAM, id="attention"),
        pytest.param(DecoderLayerForward, LAYER_UPSTREAM, id="decoder-layer"),
    ],
)
def test_idempotent(codemod, source: str) -> None:
    assert_idempotent(codemod, source)


def test_mask_generation_idempotent_with_mistral_traits() -> None:
    once, _ = apply(MaskGeneration, MODEL_UPSTREAM, traits=MISTRAL.traits)
    twice, _ = apply(MaskGeneration, once, traits=MISTRAL.traits)
    assert twice == once


def test_the_rotary_body_and_cache_builder_stay_upstreams() -> None:
    """The legacy tables are already the vacc form: only the signature changes."""
    code, _ = apply(RotaryEmbedding, ROTARY_UPSTREAM)
    upstream = fixture(ROTARY_UPSTREAM)
    for line in upstream.splitlines():
        if "def forward(" not in line:
            assert line in code.splitlines()
    assert "    def forward(self, x, position_ids=None, seq_len=None):" in code


# -- the sliding window: the family's trait ----------------------------------------------------------
def test_the_window_argument_is_dropped_by_its_rule_for_mistral() -> None:
    code, _ = apply(MaskGeneration, MODEL_UPSTREAM, traits=MISTRAL.traits)
    assert DROPPED_WINDOW in code
    assert (
        "sliding_window"
        not in code.replace(DROPPED_WINDOW, "")
        .split("class GemmaForCausalLM")[0]
        .replace("# vacc: dropped (attention-dispatch)", "")
        .split("_prepare_4d_causal_attention_mask_for_sdpa( …")[-1]
    )


NORMALISED = "        hidden_states = inputs_embeds\n"
SCALED = NORMALISED + "        hidden_states = hidden_states * (self.config.hidden_size**0.5)\n"


def test_the_window_argument_is_drift_for_gemma() -> None:
    """Gemma's traits: no normaliser is drift first; with one, the window argument is."""
    drift = assert_drift(MaskGeneration, MODEL_UPSTREAM, "GemmaModel.forward", traits=GEMMA.traits)
    assert "no embedding normalisation" in drift.found
    scaled = _replace(MODEL_UPSTREAM, NORMALISED, SCALED)
    drift = assert_drift(MaskGeneration, scaled, "GemmaModel.forward", traits=GEMMA.traits)
    assert "sliding_window=self.config.sliding_window" in drift.found


def test_without_a_window_the_shape_is_gemmas_too() -> None:
    """Llama 4.36-era code in a family without a window (and, here, with a normaliser)."""
    source = _replace(
        _replace(MODEL_UPSTREAM, EAGER_CALL + WINDOW_ARG, EAGER_CALL), SDPA_CALL + WINDOW_ARG, SDPA_CALL
    )
    source = _replace(source, NORMALISED, SCALED)
    code, change = apply(MaskGeneration, source, traits=GEMMA.traits)
    assert change.shapes == ("prepare-4d-mask", "head-tuple-cache")
    assert "sliding-window" not in code and SCALED in code
    assert "attention_mask = self._prepare_decoder_attention_mask(" in code


# -- carried: an upstream change inside a legacy unit reaches the output --------------------------
@pytest.mark.parametrize(
    ("codemod", "source", "anchor", "extra", "traits"),
    [
        pytest.param(
            Attention,
            ATTENTION_UPSTREAM,
            "        kv_seq_len = key_states.shape[-2]\n",
            "        kv_seq_len = kv_seq_len + 0\n",
            None,
            id="attention",
        ),
        pytest.param(
            DecoderLayerForward,
            LAYER_UPSTREAM,
            "        residual = hidden_states\n\n",
            "        hidden_states = hidden_states * 0.5\n",
            None,
            id="decoder-layer",
        ),
        pytest.param(
            MaskGeneration,
            MODEL_UPSTREAM,
            "        past_key_values_length = 0\n",
            "        past_key_values_length = past_key_values_length + 0\n",
            MISTRAL.traits,
            id="mask-generation",
        ),
        pytest.param(
            RotaryEmbedding,
            ROTARY_UPSTREAM,
            "        # x: [bs, num_attention_heads, seq_len, head_size]\n",
            "        seq_len = seq_len + 1\n",
            None,
            id="rotary",
        ),
    ],
)
def test_carried(codemod, source: str, anchor: str, extra: str, traits) -> None:
    code, _ = apply(codemod, _replace(source, anchor, anchor + extra), traits=traits)
    assert extra in code


def test_an_argument_of_the_eager_mask_builder_is_carried() -> None:
    changed = "                past_key_values_length + 0,\n"
    source = _replace(
        MODEL_UPSTREAM, EAGER_CALL, EAGER_CALL.replace("                past_key_values_length,\n", changed)
    )
    code, _ = apply(MaskGeneration, source, traits=MISTRAL.traits)
    assert "            past_key_values_length + 0,\n        )\n" in code


# -- near misses: drift -----------------------------------------------------------------------------
USABLE = "            kv_seq_len += past_key_value.get_usable_length(kv_seq_len, self.layer_idx)\n"
WARN = (
    '                "Passing `padding_mask` is deprecated and will be removed in v4.37. '
    'Please make sure use `attention_mask` instead.`"\n'
)
ATTENTION_DRIFT = [
    pytest.param(
        _replace(ATTENTION_UPSTREAM, USABLE, USABLE.replace("kv_seq_len, self", "kv_seq_len + 1, self")),
        "if past_key_value is not None: …",
        id="usable-length-changed",
    ),
    pytest.param(
        _replace(ATTENTION_UPSTREAM, USABLE, USABLE + "            kv_seq_len += 1\n"),
        "if past_key_value is not None: …",
        id="usable-length-extra-statement",
    ),
    pytest.param(
        _replace(ATTENTION_UPSTREAM, "seq_len=kv_seq_len)", "seq_len=kv_seq_len + 1)"),
        "def forward( …",
        id="rotary-seq-len-changed",
    ),
    pytest.param(
        _replace(ATTENTION_UPSTREAM, '{"sin": sin, "cos": cos}', '{"sin": sin, "cos": cos, "x": 1}'),
        "if past_key_value is not None: …",
        id="cache-kwargs-changed",
    ),
    pytest.param(
        _replace(
            ATTENTION_UPSTREAM,
            WARN,
            WARN + '            )\n            attention_mask = kwargs.pop("padding_mask"\n',
        ),
        'if "padding_mask" in kwargs: …',
        id="padding-mask-used",
    ),
]


@pytest.mark.parametrize(("source", "node"), ATTENTION_DRIFT)
def test_attention_near_misses_drift(source: str, node: str) -> None:
    drift = assert_drift(Attention, source, "GemmaAttention.forward")
    assert drift.node is not None and r.first_line(drift.node) == node, drift.found


def apply_render(node) -> str:
    return s.render(node)


def test_a_present_unpacked_but_never_appended_is_drift() -> None:
    """Found by the mutation tier (Gemma 4.38-4.47 and Mistral 4.38-4.41 alike): re-adding the
    append would hide upstream's change."""
    appended = "        if use_cache:\n            outputs += (present_key_value,)\n\n"
    source = _replace(LAYER_UPSTREAM, appended, "")
    drift = assert_drift(DecoderLayerForward, source, "GemmaDecoderLayer.forward")
    assert "does not include it" in drift.found and r.first_line(drift.node) == "return outputs"


def test_layer_near_miss_drift() -> None:
    """A padding_mask that is used, not only warned about, is drift."""
    source = _replace(
        LAYER_UPSTREAM, WARN, WARN + '            )\n            attention_mask = kwargs.pop("padding_mask"\n'
    )
    drift = assert_drift(DecoderLayerForward, source, "GemmaDecoderLayer.forward")
    assert r.first_line(drift.node) == 'if "padding_mask" in kwargs: …'


CONVERSION = "            past_key_values_length = past_key_values.get_usable_length(seq_length)\n"
MODEL_DRIFT = [
    pytest.param(
        _replace(MODEL_UPSTREAM, CONVERSION, CONVERSION.replace("(seq_length)", "(seq_length + 1)")),
        "use_legacy_cache = not isinstance",
        id="usable-length-changed",
    ),
    pytest.param(
        _replace(MODEL_UPSTREAM, SDPA_CALL, SDPA_CALL.replace("inputs_embeds,", "inputs_embeds * 2,")),
        "if self._attn_implementation",
        id="sdpa-branch-changed",
    ),
    pytest.param(
        _replace(MODEL_UPSTREAM, EAGER_CALL + WINDOW_ARG, EAGER_CALL + "                is_causal=False,\n"),
        "if self._attn_implementation",
        id="unknown-mask-argument",
    ),
    pytest.param(
        _replace(
            MODEL_UPSTREAM,
            "next_cache = next_decoder_cache.to_legacy_cache() if use_legacy_cache",
            "next_cache = next_decoder_cache.to_legacy_cache() if not use_legacy_cache",
        ),
        "next_cache = next_decoder_cache.to_legacy_cache() if not",
        id="next-cache-changed",
    ),
]


MODEL_DRIFT.append(  # the mutation tier's find: each statement of the conversion counts
    pytest.param(
        _replace(
            MODEL_UPSTREAM,
            "            if use_legacy_cache:\n"
            "                past_key_values = DynamicCache.from_legacy_cache(past_key_values)\n",
            "",
        ),
        "use_legacy_cache = not isinstance",
        id="conversion-deleted",
    )
)


@pytest.mark.parametrize(("source", "node"), MODEL_DRIFT)
def test_model_near_misses_drift(source: str, node: str) -> None:
    drift = assert_drift(MaskGeneration, source, "GemmaModel.forward", traits=MISTRAL.traits)
    assert drift.node is not None and apply_render(drift.node).lstrip().startswith(node), drift.found


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(
            "    def forward(self, x, seq_len=None):", "    def forward(self, x, seq_len=1):", id="default"
        ),
        pytest.param(
            "    def forward(self, x, seq_len=None):",
            "    def forward(self, x, seq_len=None, **kw):",
            id="kwargs",
        ),
        pytest.param(
            "            self.sin_cached[:seq_len].to(dtype=x.dtype),\n",
            "            self.sin_cached[:seq_len].to(dtype=x.dtype),\n            None,\n",
            id="three-values",
        ),
    ],
)
def test_rotary_near_misses_drift(old: str, new: str) -> None:
    drift = assert_drift(RotaryEmbedding, _replace(ROTARY_UPSTREAM, old, new), "GemmaRotaryEmbedding.forward")
    assert "forward(x, seq_len)" in drift.found


def test_drift_is_a_drift_not_another_error() -> None:
    with pytest.raises(Drift):
        apply(MaskGeneration, MODEL_UPSTREAM, traits=GEMMA.traits)
