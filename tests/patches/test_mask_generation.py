"""mask-generation: tuple cache and explicit masks in GemmaModel.forward, heads without cache_position.

GemmaModel.forward is edited in place: upstream's statements stay where they are unless a named rule
translates or drops them (``patches/_model_forward.py``, ``patches/_rules.py``)."""

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
from patches.mask_generation import MaskGeneration

# Not targets: must come through byte for byte.
HEADER = """\
from typing import List, Optional, Tuple, Union

import torch
from torch import nn

from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GenericForSequenceClassification, GenericForTokenClassification
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, add_start_docstrings_to_model_forward, auto_docstring, logging
from transformers.utils import can_return_tuple

logger = logging.get_logger(__name__)

GEMMA_INPUTS_DOCSTRING = r"Args: input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`)"
"""  # noqa: E501

LAYER = """

class GemmaDecoderLayer(nn.Module):
    def forward(self, hidden_states, cache_position=None):  # another codemod's target
        return (hidden_states,)
"""

MODEL_TOP = '''

class GemmaModel(GemmaPreTrainedModel):
    """Transformer decoder."""

    def __init__(self, config: GemmaConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.post_init()
'''
DYNAMIC_FORWARD = """
    @add_start_docstrings_to_model_forward(GEMMA_INPUTS_DOCSTRING)
    def forward(
        self,
        input_ids: torch.LongTensor = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[Union[Cache, List[torch.FloatTensor]]] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        cache_position: Optional[torch.LongTensor] = None,
    ) -> Union[Tuple, BaseModelOutputWithPast]:
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict

        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        return_legacy_cache = False  # noqa: F841
        if use_cache and not isinstance(past_key_values, Cache):  # kept for BC (non `Cache` `past_key_values` inputs)
            return_legacy_cache = True  # noqa: F841
            if past_key_values is None:
                past_key_values = DynamicCache()
            else:
                past_key_values = DynamicCache.from_legacy_cache(past_key_values)
                logger.warning_once("We detected that you are passing `past_key_values` as a tuple.")

        if cache_position is None:
            past_seen_tokens = past_key_values.get_seq_length() if past_key_values is not None else 0
            cache_position = torch.arange(
                past_seen_tokens, past_seen_tokens + inputs_embeds.shape[1], device=inputs_embeds.device
            )

        if position_ids is None:
            position_ids = cache_position.unsqueeze(0)

        causal_mask = self._update_causal_mask(
            attention_mask, inputs_embeds, cache_position, past_key_values, output_attentions
        )

        # embed positions
        hidden_states = inputs_embeds

        # normalized
        # Gemma downcasts the below to float16, causing sqrt(3072)=55.4256 to become 55.5
        normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)
        hidden_states = hidden_states * normalizer

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
                    causal_mask,
                    position_ids,
                    past_key_values,
                    output_attentions,
                    use_cache,
                    cache_position,
                )
            else:
                layer_outputs = decoder_layer(
                    hidden_states,
                    attention_mask=causal_mask,
                    position_ids=position_ids,
                    past_key_value=past_key_values,
                    output_attentions=output_attentions,
                    use_cache=use_cache,
                    cache_position=cache_position,
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

        next_cache = next_decoder_cache if use_cache else None
        if return_legacy_cache:
            next_cache = next_cache.to_legacy_cache()

        if not return_dict:
            return tuple(v for v in [hidden_states, next_cache, all_hidden_states, all_self_attns] if v is not None)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=next_cache,
            hidden_states=all_hidden_states,
            attentions=all_self_attns,
        )

    def _update_causal_mask(self, attention_mask, input_tensor, cache_position, past_key_values, output_attentions):
        if self.config._attn_implementation == "flash_attention_2":
            return None
        return attention_mask
"""  # noqa: E501

CAUSAL_LM = '''

class GemmaForCausalLM(GemmaPreTrainedModel):
    _tied_weights_keys = ["lm_head.weight"]

    @add_start_docstrings_to_model_forward(GEMMA_INPUTS_DOCSTRING)
    def forward(
        self,
        input_ids: torch.LongTensor = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[Union[Cache, List[torch.FloatTensor]]] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        cache_position: Optional[torch.LongTensor] = None,
        logits_to_keep: Union[int, torch.Tensor] = 0,
        **kwargs,
    ) -> Union[Tuple, CausalLMOutputWithPast]:
        r"""Returns: the logits."""
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict

        # decoder outputs consists of (dec_features, layer_state, dec_hidden, dec_attn)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
            cache_position=cache_position,
            **kwargs,
        )

        hidden_states = outputs[0]
        # Only compute necessary logits, and do not upcast them to float if we are not computing the loss
        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, slice_indices, :])

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)

        if not return_dict:
            output = (logits,) + outputs[1:]
            return (loss,) + output if loss is not None else output

        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=outputs.past_key_values)

    def prepare_inputs_for_generation(self, input_ids, cache_position=None, **kwargs):
        return {"input_ids": input_ids, "cache_position": cache_position}  # another codemod's target
'''  # noqa: E501

SEQUENCE_CLASSIFICATION = """

class GemmaForSequenceClassification(GemmaPreTrainedModel):
    def forward(
        self,
        input_ids: torch.LongTensor = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[Union[Cache, List[torch.FloatTensor]]] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
    ) -> Union[Tuple, SequenceClassifierOutputWithPast]:
        transformer_outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
        )
        return self.score(transformer_outputs[0])
"""

# 4.48-4.52: the rotary tables computed once by GemmaModel for its layers
POSITION_EMBEDDINGS_FORWARD = """
    @add_start_docstrings_to_model_forward(GEMMA_INPUTS_DOCSTRING)
    def forward(
        self,
        input_ids: torch.LongTensor = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[Cache] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        cache_position: Optional[torch.LongTensor] = None,
        **flash_attn_kwargs: Unpack[FlashAttentionKwargs],
    ) -> Union[Tuple, BaseModelOutputWithPast]:
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()

        if cache_position is None:
            past_seen_tokens = past_key_values.get_seq_length() if past_key_values is not None else 0
            cache_position = torch.arange(
                past_seen_tokens, past_seen_tokens + inputs_embeds.shape[1], device=inputs_embeds.device
            )

        if position_ids is None:
            position_ids = cache_position.unsqueeze(0)

        causal_mask = self._update_causal_mask(
            attention_mask, inputs_embeds, cache_position, past_key_values, output_attentions
        )

        # embed positions
        hidden_states = inputs_embeds

        # create position embeddings to be shared across the decoder layers
        position_embeddings = self.rotary_emb(hidden_states, position_ids)

        # normalized
        normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)
        hidden_states = hidden_states * normalizer

        # decoder layers
        all_hidden_states = () if output_hidden_states else None
        all_self_attns = () if output_attentions else None
        next_decoder_cache = None

        for decoder_layer in self.layers[: self.config.num_hidden_layers]:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)

            if self.gradient_checkpointing and self.training:
                layer_outputs = self._gradient_checkpointing_func(
                    decoder_layer.__call__,
                    hidden_states,
                    causal_mask,
                    position_ids,
                    past_key_values,
                    output_attentions,
                    use_cache,
                    cache_position,
                    position_embeddings,
                )
            else:
                layer_outputs = decoder_layer(
                    hidden_states,
                    attention_mask=causal_mask,
                    position_ids=position_ids,
                    past_key_value=past_key_values,
                    output_attentions=output_attentions,
                    use_cache=use_cache,
                    cache_position=cache_position,
                    position_embeddings=position_embeddings,
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

# 4.54-4.57: create_causal_mask, self-checkpointing layers returning their hidden states, inputs and
# outputs handled by a decorator
CHECKPOINTING_LAYER = """

class GemmaDecoderLayer(GradientCheckpointingLayer):
    def forward(self, hidden_states, cache_position=None):  # another codemod's target
        return hidden_states
"""

CREATE_CAUSAL_MASK_FORWARD = """
    @check_model_inputs
    @auto_docstring
    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[Cache] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        use_cache: Optional[bool] = None,
        cache_position: Optional[torch.LongTensor] = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)

        if cache_position is None:
            past_seen_tokens = past_key_values.get_seq_length() if past_key_values is not None else 0
            cache_position = torch.arange(
                past_seen_tokens, past_seen_tokens + inputs_embeds.shape[1], device=inputs_embeds.device
            )

        if position_ids is None:
            position_ids = cache_position.unsqueeze(0)

        causal_mask = create_causal_mask(
            config=self.config,
            input_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache_position=cache_position,
            past_key_values=past_key_values,
            position_ids=position_ids,
        )

        # embed positions
        hidden_states = inputs_embeds

        # create position embeddings to be shared across the decoder layers
        position_embeddings = self.rotary_emb(hidden_states, position_ids)

        # normalized
        normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)
        hidden_states = hidden_states * normalizer

        for decoder_layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=causal_mask,
                position_ids=position_ids,
                past_key_values=past_key_values,
                use_cache=use_cache,
                cache_position=cache_position,
                position_embeddings=position_embeddings,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=past_key_values if use_cache else None,
        )
"""

# 5.x: the embedding scales itself; 5.24+: the cache argument named `cache`
SCALED_MODEL_TOP = """

class GemmaModel(GemmaPreTrainedModel):
    def __init__(self, config: GemmaConfig):
        super().__init__(config)
        self.embed_tokens = GemmaTextScaledWordEmbedding(
            config.vocab_size, config.hidden_size, self.padding_idx, embed_scale=self.config.hidden_size**0.5
        )
        self.post_init()
"""

SCALED_EMBEDDING_FORWARD = """
    @merge_with_config_defaults
    @capture_outputs
    @auto_docstring
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)

        if position_ids is None:
            past_seen_tokens = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )

        # embed positions
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)

        for decoder_layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=causal_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            cache=cache if use_cache else None,
        )
"""  # noqa: E501

CAUSAL_LM_TUPLE = """

class GemmaForCausalLM(GemmaPreTrainedModel):
    def forward(self, input_ids=None, past_key_values=None, labels=None, return_dict=None):
        outputs = self.model(input_ids=input_ids, past_key_values=past_key_values, return_dict=return_dict)
        return self.lm_head(outputs[0])
"""

CACHE_KEYWORD_HEAD = """

class GemmaForCausalLM(GemmaPreTrainedModel, GenerationMixin):
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=cache,
            **kwargs,
        )

        hidden_states = outputs.last_hidden_state
        hidden_states = slice_logits_to_keep(hidden_states, logits_to_keep)
        logits = self.lm_head(hidden_states)
        return CausalLMOutputWithPast(logits=logits, cache=outputs.cache)
"""

GENERIC_HEADS = '''

class GemmaForSequenceClassification(GenericForSequenceClassification, GemmaPreTrainedModel):
    pass


class GemmaForTokenClassification(GenericForTokenClassification, GemmaPreTrainedModel):
    """Token classification head."""
'''

# Upstream's forward in place: the contract's signature; the Cache conversion becomes the past
# length, positions continue from it, the mask comes from _prepare_decoder_attention_mask, each
# layer gets its (key, value) pair and the next cache is the tuple collected; the rest is upstream's.
DYNAMIC_AFTER = """
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

        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        # vacc: dropped (cache-bookkeeping): return_legacy_cache = False  # noqa: F841
        # vacc: dropped (past-length): logger.warning_once("We detected that you are passing `past_key_values` as a tuple.")
        past_key_values_length = 0
        if past_key_values is not None:
            past_key_values_length = past_key_values[0][0].shape[2]

        # vacc: dropped (cache-bookkeeping): if cache_position is None: …

        if position_ids is None:
            position_ids = torch.arange(
                past_key_values_length,
                inputs_embeds.shape[1] + past_key_values_length,
                dtype=torch.long,
                device=inputs_embeds.device,
            )
            position_ids = position_ids.unsqueeze(0)

        # vacc: explicit additive mask, all ones over past + current by default
        if attention_mask is None:
            attention_mask = torch.ones(
                (inputs_embeds.shape[0], inputs_embeds.shape[1] + past_key_values_length),
                dtype=torch.bool,
                device=inputs_embeds.device,
            )
        causal_mask = self._prepare_decoder_attention_mask(
            attention_mask, inputs_embeds.shape[:2], inputs_embeds, past_key_values_length
        )

        # embed positions
        hidden_states = inputs_embeds

        # normalized
        # Gemma downcasts the below to float16, causing sqrt(3072)=55.4256 to become 55.5
        normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)
        hidden_states = hidden_states * normalizer

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
                    causal_mask,
                    position_ids,
                    past_key_value,
                    output_attentions,
                    use_cache,
                )
            else:
                layer_outputs = decoder_layer(
                    hidden_states,
                    attention_mask=causal_mask,
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
        # vacc: dropped (cache-bookkeeping): if return_legacy_cache: …

        if not return_dict:
            return tuple(v for v in [hidden_states, next_cache, all_hidden_states, all_self_attns] if v is not None)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=next_cache,
            hidden_states=all_hidden_states,
            attentions=all_self_attns,
        )
"""  # noqa: E501


POSITION_EMBEDDINGS_AFTER = """
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

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        past_key_values_length = 0
        if past_key_values is not None:
            past_key_values_length = past_key_values[0][0].shape[2]

        # vacc: dropped (cache-bookkeeping): if cache_position is None: …

        if position_ids is None:
            position_ids = torch.arange(
                past_key_values_length,
                inputs_embeds.shape[1] + past_key_values_length,
                dtype=torch.long,
                device=inputs_embeds.device,
            )
            position_ids = position_ids.unsqueeze(0)

        # vacc: explicit additive mask, all ones over past + current by default
        if attention_mask is None:
            attention_mask = torch.ones(
                (inputs_embeds.shape[0], inputs_embeds.shape[1] + past_key_values_length),
                dtype=torch.bool,
                device=inputs_embeds.device,
            )
        causal_mask = self._prepare_decoder_attention_mask(
            attention_mask, inputs_embeds.shape[:2], inputs_embeds, past_key_values_length
        )

        # embed positions
        hidden_states = inputs_embeds

        # create position embeddings to be shared across the decoder layers
        # vacc: dropped (model-rotary): position_embeddings = self.rotary_emb(hidden_states, position_ids)

        # normalized
        normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)
        hidden_states = hidden_states * normalizer

        # decoder layers
        all_hidden_states = () if output_hidden_states else None
        all_self_attns = () if output_attentions else None
        next_decoder_cache = () if use_cache else None

        for idx, decoder_layer in enumerate(self.layers[: self.config.num_hidden_layers]):
            past_key_value = past_key_values[idx] if past_key_values is not None else None
            if output_hidden_states:
                all_hidden_states += (hidden_states,)

            if self.gradient_checkpointing and self.training:
                layer_outputs = self._gradient_checkpointing_func(
                    decoder_layer.__call__,
                    hidden_states,
                    causal_mask,
                    position_ids,
                    past_key_value,
                    output_attentions,
                    use_cache,
                )
            else:
                layer_outputs = decoder_layer(
                    hidden_states,
                    attention_mask=causal_mask,
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


# What upstream leaves to its decorators (argument defaults, collecting hidden states and
# attentions, the tuple return) written out; each layer's tuple output unpacked.
CREATE_CAUSAL_MASK_AFTER = """
    @auto_docstring
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
        # vacc: argument defaults (upstream: decorators)
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        past_key_values_length = 0
        if past_key_values is not None:
            past_key_values_length = past_key_values[0][0].shape[2]

        # vacc: dropped (cache-bookkeeping): if cache_position is None: …

        if position_ids is None:
            position_ids = torch.arange(
                past_key_values_length,
                inputs_embeds.shape[1] + past_key_values_length,
                dtype=torch.long,
                device=inputs_embeds.device,
            )
            position_ids = position_ids.unsqueeze(0)

        # vacc: explicit additive mask, all ones over past + current by default
        if attention_mask is None:
            attention_mask = torch.ones(
                (inputs_embeds.shape[0], inputs_embeds.shape[1] + past_key_values_length),
                dtype=torch.bool,
                device=inputs_embeds.device,
            )
        causal_mask = self._prepare_decoder_attention_mask(
            attention_mask, inputs_embeds.shape[:2], inputs_embeds, past_key_values_length
        )

        # embed positions
        hidden_states = inputs_embeds

        # create position embeddings to be shared across the decoder layers
        # vacc: dropped (model-rotary): position_embeddings = self.rotary_emb(hidden_states, position_ids)

        # normalized
        normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)
        hidden_states = hidden_states * normalizer
        all_hidden_states = () if output_hidden_states else None
        all_self_attns = () if output_attentions else None
        next_decoder_cache = () if use_cache else None

        for idx, decoder_layer in enumerate(self.layers[: self.config.num_hidden_layers]):
            past_key_value = past_key_values[idx] if past_key_values is not None else None
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            layer_outputs = decoder_layer(
                hidden_states,
                attention_mask=causal_mask,
                position_ids=position_ids,
                past_key_value=past_key_value,
                use_cache=use_cache,
                output_attentions=output_attentions,
            )
            hidden_states = layer_outputs[0]
            if use_cache:
                next_decoder_cache += (layer_outputs[2 if output_attentions else 1],)
            if output_attentions:
                all_self_attns += (layer_outputs[1],)
        hidden_states = self.norm(hidden_states)
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


SCALED_EMBEDDING_AFTER = """
    @auto_docstring
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
        # vacc: argument defaults (upstream: decorators)
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        past_key_values_length = 0
        if past_key_values is not None:
            past_key_values_length = past_key_values[0][0].shape[2]

        if position_ids is None:
            position_ids = torch.arange(
                past_key_values_length,
                inputs_embeds.shape[1] + past_key_values_length,
                dtype=torch.long,
                device=inputs_embeds.device,
            )
            position_ids = position_ids.unsqueeze(0)

        # vacc: explicit additive mask, all ones over past + current by default
        if attention_mask is None:
            attention_mask = torch.ones(
                (inputs_embeds.shape[0], inputs_embeds.shape[1] + past_key_values_length),
                dtype=torch.bool,
                device=inputs_embeds.device,
            )
        causal_mask = self._prepare_decoder_attention_mask(
            attention_mask, inputs_embeds.shape[:2], inputs_embeds, past_key_values_length
        )

        # embed positions
        hidden_states = inputs_embeds
        all_hidden_states = () if output_hidden_states else None
        all_self_attns = () if output_attentions else None
        next_decoder_cache = () if use_cache else None
        # vacc: dropped (model-rotary): position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)

        for idx, decoder_layer in enumerate(self.layers[: self.config.num_hidden_layers]):
            past_key_value = past_key_values[idx] if past_key_values is not None else None
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            layer_outputs = decoder_layer(
                hidden_states,
                attention_mask=causal_mask,
                position_ids=position_ids,
                past_key_value=past_key_value,
                use_cache=use_cache,
                output_attentions=output_attentions,
            )
            hidden_states = layer_outputs[0]
            if use_cache:
                next_decoder_cache += (layer_outputs[2 if output_attentions else 1],)
            if output_attentions:
                all_self_attns += (layer_outputs[1],)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        next_cache = next_decoder_cache if use_cache else None
        if not return_dict:
            return tuple(v for v in [hidden_states, next_cache, all_hidden_states, all_self_attns] if v is not None)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            cache=next_cache,
            hidden_states=all_hidden_states,
            attentions=all_self_attns,
        )
"""  # noqa: E501


UPSTREAM = HEADER + LAYER + MODEL_TOP + DYNAMIC_FORWARD + CAUSAL_LM_TUPLE + SEQUENCE_CLASSIFICATION
OUTPUT = HEADER + LAYER + MODEL_TOP + DYNAMIC_AFTER + CAUSAL_LM_TUPLE + SEQUENCE_CLASSIFICATION
POSITION_EMBEDDINGS_UPSTREAM = (
    HEADER + LAYER + MODEL_TOP + POSITION_EMBEDDINGS_FORWARD + CAUSAL_LM_TUPLE + SEQUENCE_CLASSIFICATION
)
CREATE_CAUSAL_MASK_UPSTREAM = (
    HEADER
    + CHECKPOINTING_LAYER
    + MODEL_TOP
    + CREATE_CAUSAL_MASK_FORWARD
    + CAUSAL_LM_TUPLE
    + SEQUENCE_CLASSIFICATION
)
SCALED_EMBEDDING_UPSTREAM = (
    HEADER
    + CHECKPOINTING_LAYER
    + SCALED_MODEL_TOP
    + SCALED_EMBEDDING_FORWARD
    + CAUSAL_LM_TUPLE
    + SEQUENCE_CLASSIFICATION
)
HEADS = CAUSAL_LM_TUPLE + SEQUENCE_CLASSIFICATION


def _outputs(upstream: str, forward: str, after: str) -> str:
    assert upstream.count(forward) == 1
    return upstream.replace(forward, after)


# -- one before/after pair per shape of GemmaModel.forward -----------------------------------------

SHAPE_CASES = [
    pytest.param(UPSTREAM, OUTPUT, ("dynamic-cache", "head-tuple-cache"), id="dynamic-cache"),
    pytest.param(
        POSITION_EMBEDDINGS_UPSTREAM,
        _outputs(POSITION_EMBEDDINGS_UPSTREAM, POSITION_EMBEDDINGS_FORWARD, POSITION_EMBEDDINGS_AFTER),
        ("position-embeddings", "head-tuple-cache"),
        id="position-embeddings",
    ),
    pytest.param(
        CREATE_CAUSAL_MASK_UPSTREAM,
        _outputs(CREATE_CAUSAL_MASK_UPSTREAM, CREATE_CAUSAL_MASK_FORWARD, CREATE_CAUSAL_MASK_AFTER),
        ("create-causal-mask", "head-tuple-cache"),
        id="create-causal-mask",
    ),
    pytest.param(
        SCALED_EMBEDDING_UPSTREAM,
        _outputs(SCALED_EMBEDDING_UPSTREAM, SCALED_EMBEDDING_FORWARD, SCALED_EMBEDDING_AFTER),
        ("create-causal-mask", "scaled-embedding", "head-tuple-cache"),
        id="scaled-embedding-cache-keyword",
    ),
]


@pytest.mark.parametrize(("before", "after", "shapes"), SHAPE_CASES)
def test_model_shapes(before: str, after: str, shapes: tuple[str, ...]) -> None:
    assert_codemod(MaskGeneration, before, after, shapes)


@pytest.mark.parametrize(
    "source", [pytest.param(case.values[1], id=f"{case.id}-output_noop") for case in SHAPE_CASES]
)
def test_tuple_cache_noop(source: str) -> None:
    assert_noop(MaskGeneration, source, ("tuple-cache", "head-tuple-cache"))


@pytest.mark.parametrize("source", [pytest.param(case.values[0], id=case.id) for case in SHAPE_CASES])
def test_idempotent(source: str) -> None:
    assert_idempotent(MaskGeneration, source)


def test_reformatted_own_output_noop() -> None:
    source = OUTPUT.replace("        # embed positions\n", "").replace(
        '"You must specify exactly one of input_ids or inputs_embeds"',
        "'You must specify exactly one of input_ids or inputs_embeds'",
    )
    assert_noop(MaskGeneration, source, ("tuple-cache", "head-tuple-cache"))


def test_unclaimed_code_untouched() -> None:
    code, _ = apply(MaskGeneration, UPSTREAM)
    for unit in (HEADER, LAYER, MODEL_TOP, HEADS):
        assert unit in code
    assert "_update_causal_mask" not in code


# -- carried: what upstream adds inside the forward reaches the output, in place -------------------


def _insert_after(source: str, anchor: str, extra: str) -> str:
    assert source.count(anchor) == 1, anchor
    return source.replace(anchor, anchor + extra)


NORMALIZED = "        hidden_states = hidden_states * normalizer\n"
LAYER_OUTPUT = "            hidden_states = layer_outputs[0]\n"
FINAL_NORM = "        hidden_states = self.norm(hidden_states)\n"
EMBEDDED = "            inputs_embeds = self.embed_tokens(input_ids)\n"


@pytest.mark.parametrize(
    ("before", "after", "anchor", "extra"),
    [
        pytest.param(
            UPSTREAM,
            OUTPUT,
            NORMALIZED,
            "        hidden_states = self.embed_dropout(hidden_states)\n",
            id="after-the-normaliser",
        ),
        pytest.param(
            UPSTREAM,
            OUTPUT,
            LAYER_OUTPUT,
            "            hidden_states = hidden_states * 0.5\n",
            id="inside-the-layer-loop",
        ),
        pytest.param(
            UPSTREAM,
            OUTPUT,
            FINAL_NORM,
            "        hidden_states = self.final_proj(hidden_states)\n",
            id="after-the-final-norm",
        ),
        pytest.param(
            UPSTREAM,
            OUTPUT,
            EMBEDDED,
            "            inputs_embeds = inputs_embeds.to(self.dtype)\n",
            id="inside-a-kept-block",
        ),
        pytest.param(
            CREATE_CAUSAL_MASK_UPSTREAM,
            _outputs(CREATE_CAUSAL_MASK_UPSTREAM, CREATE_CAUSAL_MASK_FORWARD, CREATE_CAUSAL_MASK_AFTER),
            NORMALIZED,
            "        hidden_states = self.embed_dropout(hidden_states)\n",
            id="create-causal-mask-after-the-normaliser",
        ),
    ],
)
def test_carries_upstream_statements(before: str, after: str, anchor: str, extra: str) -> None:
    code, _ = apply(MaskGeneration, _insert_after(before, anchor, extra))
    assert code == _insert_after(after, anchor, extra)


def test_a_statement_after_a_self_checkpointing_layer_call_stays_after_it() -> None:
    """4.54+: the layer call returning hidden states becomes ``layer_outputs = ...`` plus
    ``hidden_states = layer_outputs[0]``; what upstream does next follows both."""
    call_end = "                **kwargs,\n            )\n        hidden_states = self.norm(hidden_states)\n"
    before = CREATE_CAUSAL_MASK_UPSTREAM.replace(
        call_end,
        "                **kwargs,\n            )\n            hidden_states = hidden_states * 0.5\n"
        "        hidden_states = self.norm(hidden_states)\n",
    )
    assert before != CREATE_CAUSAL_MASK_UPSTREAM
    code, _ = apply(MaskGeneration, before)
    assert (
        "            hidden_states = layer_outputs[0]\n            hidden_states = hidden_states * 0.5\n"
        "            if use_cache:\n"
    ) in code


def test_an_upstream_argument_of_the_layer_call_is_carried() -> None:
    before = UPSTREAM.replace(
        "                    attention_mask=causal_mask,\n",
        "                    attention_mask=causal_mask * 2,\n",
    )
    after = OUTPUT.replace(
        "                    attention_mask=causal_mask,\n",
        "                    attention_mask=causal_mask * 2,\n",
    )
    assert before != UPSTREAM and after != OUTPUT
    assert_codemod(MaskGeneration, before, after, ("dynamic-cache", "head-tuple-cache"))


# -- the heads ----------------------------------------------------------------------------------------

TUPLE_MODEL = HEADER + LAYER + MODEL_TOP + DYNAMIC_AFTER

# 4.50-4.53: cache_position passed on, logits_to_keep narrowing what lm_head sees
CAUSAL_LM_AFTER = (
    CAUSAL_LM.replace(
        "        cache_position: Optional[torch.LongTensor] = None,\n"
        "        logits_to_keep: Union[int, torch.Tensor] = 0,\n",
        "",
    )
    .replace("            cache_position=cache_position,\n            **kwargs,\n", "")
    .replace(
        "        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep\n",  # noqa: E501
        "        # vacc: dropped (logits-to-keep): slice_indices = slice(-logits_to_keep, None) if "
        "isinstance(logits_to_keep, int) else logits_to_keep\n",
    )
    .replace("self.lm_head(hidden_states[:, slice_indices, :])", "self.lm_head(hidden_states)")
)
# 4.38-4.44: cache_position only
CAUSAL_LM_438 = CAUSAL_LM.replace("        logits_to_keep: Union[int, torch.Tensor] = 0,\n", "").replace(
    "        # Only compute necessary logits, and do not upcast them to float if we are not computing the loss\n"  # noqa: E501
    "        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep\n"  # noqa: E501
    "        logits = self.lm_head(hidden_states[:, slice_indices, :])\n",
    "        logits = self.lm_head(hidden_states).float()\n",
)
CAUSAL_LM_438_AFTER = CAUSAL_LM_438.replace(
    "        cache_position: Optional[torch.LongTensor] = None,\n", ""
).replace("            cache_position=cache_position,\n            **kwargs,\n", "")
# 4.45-4.49: num_logits_to_keep sliced inline
CAUSAL_LM_445 = CAUSAL_LM_438.replace(
    "        cache_position: Optional[torch.LongTensor] = None,\n",
    "        cache_position: Optional[torch.LongTensor] = None,\n        num_logits_to_keep: int = 0,\n",
).replace(
    "self.lm_head(hidden_states).float()", "self.lm_head(hidden_states[:, -num_logits_to_keep:, :]).float()"
)
CACHE_KEYWORD_HEAD_AFTER = """

class GemmaForCausalLM(GemmaPreTrainedModel, GenerationMixin):
    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
        )

        hidden_states = outputs.last_hidden_state
        # vacc: dropped (logits-to-keep): hidden_states = slice_logits_to_keep(hidden_states, logits_to_keep)
        logits = self.lm_head(hidden_states)
        return CausalLMOutputWithPast(logits=logits, cache=outputs.cache)
"""


@pytest.mark.parametrize(
    ("head", "after", "shapes"),
    [
        pytest.param(CAUSAL_LM_438, CAUSAL_LM_438_AFTER, ("head-cache-position",), id="cache-position"),
        pytest.param(
            CAUSAL_LM_445,
            CAUSAL_LM_438_AFTER,
            ("head-cache-position", "head-logits-to-keep"),
            id="num-logits-to-keep",
        ),
        pytest.param(
            CAUSAL_LM, CAUSAL_LM_AFTER, ("head-cache-position", "head-logits-to-keep"), id="slice-indices"
        ),
        pytest.param(
            CACHE_KEYWORD_HEAD,
            CACHE_KEYWORD_HEAD_AFTER,
            ("head-logits-to-keep", "head-cache-keyword"),
            id="cache-keyword",
        ),
    ],
)
def test_head_shapes(head: str, after: str, shapes: tuple[str, ...]) -> None:
    assert_codemod(
        MaskGeneration,
        TUPLE_MODEL + head + SEQUENCE_CLASSIFICATION,
        TUPLE_MODEL + after + SEQUENCE_CLASSIFICATION,
        ("tuple-cache", *shapes, "head-tuple-cache"),
    )
    assert_noop(
        MaskGeneration, TUPLE_MODEL + after + SEQUENCE_CLASSIFICATION, ("tuple-cache", "head-tuple-cache")
    )


def test_head_carries_upstream_statements() -> None:
    extra = "        logits = logits / self.config.final_logit_softcapping\n"
    anchor = "        logits = self.lm_head(hidden_states[:, slice_indices, :])\n"
    code, _ = apply(
        MaskGeneration, TUPLE_MODEL + _insert_after(CAUSAL_LM, anchor, extra) + SEQUENCE_CLASSIFICATION
    )
    expected = _insert_after(CAUSAL_LM_AFTER, "        logits = self.lm_head(hidden_states)\n", extra)
    assert code == TUPLE_MODEL + expected + SEQUENCE_CLASSIFICATION


def test_generic_heads_build_the_vacc_model() -> None:
    code, change = apply(MaskGeneration, TUPLE_MODEL + CAUSAL_LM_TUPLE + GENERIC_HEADS)
    assert change.shapes == ("tuple-cache", "head-tuple-cache", "generic-head")
    seq = code.split("class GemmaForSequenceClassification")[1].split("class GemmaForTokenClassification")[0]
    tok = code.split("class GemmaForTokenClassification")[1]
    # the sequence classifier becomes a head of its own, with a tuple-cache forward
    assert seq.startswith("(GemmaPreTrainedModel):")
    assert "self.model = GemmaModel(config)" in seq and "def forward(" in seq
    assert "past_key_values=past_key_values" in seq and "return_dict=return_dict" in seq
    assert "last_non_pad_token = (token_indices * non_pad_mask).argmax(-1)" in seq  # for sequence-lengths
    assert "past_key_values=transformer_outputs.past_key_values" in seq
    # the token classifier keeps its base and docstring, builds the vacc model, passes the tuple cache
    assert tok.startswith(
        '(GenericForTokenClassification, GemmaPreTrainedModel):\n    """Token classification head."""'
    )
    assert "self.model = GemmaModel(config)" in tok and "def forward(" in tok
    assert "past_key_values=past_key_values" in tok
    assert_idempotent(MaskGeneration, TUPLE_MODEL + CAUSAL_LM_TUPLE + GENERIC_HEADS)


def test_generic_heads_take_the_cache_field_of_the_release() -> None:
    """5.24+: the model output's cache field is `cache`; the generic sequence classifier reads it there."""
    code, _ = apply(
        MaskGeneration, SCALED_EMBEDDING_UPSTREAM.replace(HEADS, CACHE_KEYWORD_HEAD + GENERIC_HEADS)
    )
    seq = code.split("class GemmaForSequenceClassification")[1].split("class GemmaForTokenClassification")[0]
    assert "cache=transformer_outputs.cache," in seq


# -- drift -------------------------------------------------------------------------------------------

MODEL = "GemmaModel.forward"
CACHE_POSITION_BLOCK = (
    "        if cache_position is None:\n"
    "            past_seen_tokens = past_key_values.get_seq_length() if past_key_values is not None else 0\n"
    "            cache_position = torch.arange(\n"
    "                past_seen_tokens, past_seen_tokens + inputs_embeds.shape[1], device=inputs_embeds.device\n"  # noqa: E501
    "            )\n"
)
CONVERSION = "                past_key_values = DynamicCache.from_legacy_cache(past_key_values)\n"
LAYER_CALL = "                layer_outputs = decoder_layer(\n"
SIGNATURE_END = "        cache_position: Optional[torch.LongTensor] = None,\n    ) -> Union[Tuple, BaseModelOutputWithPast]:\n"  # noqa: E501
MASK = (
    "        causal_mask = self._update_causal_mask(\n"
    "            attention_mask, inputs_embeds, cache_position, past_key_values, output_attentions\n"
    "        )\n"
)
CHECKPOINT_CALL = "                layer_outputs = self._gradient_checkpointing_func(\n"


DECORATED = "@add_start_docstrings_to_model_forward(GEMMA_INPUTS_DOCSTRING) …"  # the forward, decorated


def test_a_warning_of_the_cache_conversion_is_dropped_by_name() -> None:
    """The translated conversion carries no warning, but each one it drops leaves its comment:
    an upstream that stops warning changes the output (by that line alone)."""
    text = 'logger.warning_once("We detected that you are passing `past_key_values` as a tuple.")\n'
    nested = (
        "            if past_key_values is None:\n"
        "                past_key_values = DynamicCache()\n"
        "            else:\n"
        "                past_key_values = DynamicCache.from_legacy_cache(past_key_values)\n"
        "                " + text
    )
    warning = "            " + text
    flat = "            past_key_values = DynamicCache.from_legacy_cache(past_key_values)\n" + warning
    loud = UPSTREAM.replace(nested, flat, 1)  # the 4.41-4.44 form, warning and all
    quiet = loud.replace(warning, "", 1)  # the same without the warning: a form of its own
    assert UPSTREAM != loud != quiet
    with_warning, _ = apply(MaskGeneration, loud)
    without, _ = apply(MaskGeneration, quiet)
    lost = set(with_warning.splitlines()) - set(without.splitlines())
    assert lost == {"        # vacc: dropped (past-length): " + warning.strip()}
    assert set(without.splitlines()) <= set(with_warning.splitlines())


def _drift_node(source: str, target: str) -> str | None:
    drift = assert_drift(MaskGeneration, source, target)
    return None if drift.node is None else r.first_line(drift.node)


@pytest.mark.parametrize(
    ("source", "target", "node"),
    [
        # translate/drop statements perturbed, plumbing no rule knows
        pytest.param(
            _insert_after(
                UPSTREAM, CACHE_POSITION_BLOCK, "        cache_position = cache_position.clamp(min=0)\n"
            ),
            MODEL,
            "cache_position = cache_position.clamp(min=0)",
            id="statement-using-cache-position",
        ),
        pytest.param(
            _insert_after(UPSTREAM, CONVERSION, "                past_key_values.crop(16)\n"),
            MODEL,
            "if use_cache and not isinstance(past_key_values, Cache):  # kept for BC (non `Cache` `past_key_values` inputs) …",  # noqa: E501
            id="cache-conversion-does-more",
        ),
        pytest.param(
            UPSTREAM.replace("            return_legacy_cache = True  # noqa: F841\n", "", 1),
            MODEL,
            "if use_cache and not isinstance(past_key_values, Cache):  # kept for BC (non `Cache` `past_key_values` inputs) …",  # noqa: E501
            id="cache-conversion-does-less",
        ),
        pytest.param(
            UPSTREAM.replace(
                "        if use_cache and not isinstance(past_key_values, Cache):",
                "        if use_cache and not isinstance(past_key_values, Cache) * 1.5:",
                1,
            ),
            MODEL,
            "if use_cache and not isinstance(past_key_values, Cache) * 1.5:  # kept for BC (non `Cache` `past_key_values` inputs) …",  # noqa: E501
            id="cache-conversion-test-changed",
        ),
        pytest.param(
            UPSTREAM.replace(
                "            position_ids = cache_position.unsqueeze(0)\n",
                "            position_ids = cache_position.unsqueeze(0) + 1\n",
            ),
            MODEL,
            "position_ids = cache_position.unsqueeze(0) + 1",
            id="default-positions-changed",
        ),
        pytest.param(
            UPSTREAM.replace(
                "                    cache_position=cache_position,\n                )",
                "                    cache_position=cache_position + 1,\n                )",
            ),
            MODEL,
            "layer_outputs = decoder_layer( …",
            id="layer-called-with-computed-cache-position",
        ),
        pytest.param(
            UPSTREAM.replace(
                "                next_decoder_cache = layer_outputs[2 if output_attentions else 1]\n",
                "                next_decoder_cache = layer_outputs[-1]\n",
            ),
            MODEL,
            "next_decoder_cache = layer_outputs[-1]",
            id="present-collected-otherwise",
        ),
        pytest.param(
            UPSTREAM.replace(
                "            past_key_values=next_cache,\n", "            past_key_values=next_cache[:1],\n"
            ),
            MODEL,
            "return BaseModelOutputWithPast( …",
            id="output-cache-field-changed",
        ),
        pytest.param(
            POSITION_EMBEDDINGS_UPSTREAM.replace(
                "self.rotary_emb(hidden_states, position_ids)",
                "self.rotary_emb(hidden_states, position_ids * 2)",
            ),
            MODEL,
            "position_embeddings = self.rotary_emb(hidden_states, position_ids * 2)",
            id="model-rotary-changed",
        ),
        pytest.param(
            UPSTREAM.replace(
                CHECKPOINT_CALL, "                hidden_states = hidden_states.detach()\n" + CHECKPOINT_CALL
            ),
            MODEL,
            "if self.gradient_checkpointing and self.training: …",
            id="checkpointing-branch-does-more",
        ),
        pytest.param(
            UPSTREAM.replace(
                "                    cache_position,\n                )\n            else:",
                "                    cache_position=cache_position,\n                )\n            else:",
            ),
            MODEL,
            "if self.gradient_checkpointing and self.training: …",
            id="checkpointed-call-with-keywords",
        ),
        # required translations missing or doubled
        pytest.param(_insert_after(UPSTREAM, MASK, MASK), MODEL, DECORATED, id="mask-built-twice"),
        pytest.param(
            UPSTREAM.replace(
                LAYER_OUTPUT, LAYER_OUTPUT + "            layer_outputs = decoder_layer(hidden_states)\n"
            ),
            MODEL,
            "for decoder_layer in self.layers: …",
            id="layer-called-twice",
        ),
        pytest.param(
            CREATE_CAUSAL_MASK_UPSTREAM.replace("        hidden_states = self.norm(hidden_states)\n", ""),
            MODEL,
            "@check_model_inputs …",
            id="no-final-norm-to-collect-after",
        ),
        # the signature and decorators
        pytest.param(
            UPSTREAM.replace(
                SIGNATURE_END, "        token_type_ids: Optional[torch.LongTensor] = None,\n" + SIGNATURE_END
            ),
            MODEL,
            DECORATED,
            id="new-parameter",
        ),
        pytest.param(
            UPSTREAM.replace(
                "        use_cache: Optional[bool] = None,\n", "        use_cache: Optional[bool] = False,\n"
            ),
            MODEL,
            DECORATED,
            id="changed-default",
        ),
        pytest.param(
            UPSTREAM.replace(
                "    @add_start_docstrings_to_model_forward(GEMMA_INPUTS_DOCSTRING)\n    def forward(\n        self,\n        input_ids",  # noqa: E501
                "    @intercept_outputs\n    def forward(\n        self,\n        input_ids",
            ),
            MODEL,
            "@intercept_outputs",
            id="unknown-decorator",
        ),
        # the units
        pytest.param(
            UPSTREAM.replace("class GemmaModel(", "class GemmaTextModel("), MODEL, None, id="model-renamed"
        ),
        pytest.param(HEADER + LAYER + HEADS, MODEL, None, id="model-removed"),
        pytest.param(
            UPSTREAM.replace(
                "    def forward(\n        self,\n        input_ids: torch.LongTensor = None,",
                "    def run(\n        self,\n        input_ids: torch.LongTensor = None,",
                1,
            ),
            MODEL,
            None,
            id="model-forward-renamed",
        ),
        pytest.param(
            UPSTREAM.replace("causal_mask = self._update_causal_mask(", "causal_mask = build_mask("),
            MODEL,
            None,
            id="unknown-mask-builder",
        ),
        pytest.param(
            UPSTREAM.replace("self._gradient_checkpointing_func(\n", "checkpoint(\n"),
            MODEL,
            None,
            id="unknown-checkpointing",
        ),
        pytest.param(
            UPSTREAM.replace(
                "        normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)\n        hidden_states = hidden_states * normalizer\n",  # noqa: E501
                "",
            ),
            MODEL,
            None,
            id="no-normalizer",
        ),
        pytest.param(
            UPSTREAM.replace(
                "        return BaseModelOutputWithPast(\n            last_hidden_state=hidden_states,\n"
                "            past_key_values=next_cache,\n            hidden_states=all_hidden_states,\n"
                "            attentions=all_self_attns,\n        )\n",
                "",
            ),
            MODEL,
            DECORATED,
            id="no-output-class",
        ),
    ],
)
def test_model_drift(source: str, target: str, node: str | None) -> None:
    assert _drift_node(source, target) == node


HEAD_MODEL_CALL = "            cache_position=cache_position,\n            **kwargs,\n"


@pytest.mark.parametrize(
    ("source", "target", "node"),
    [
        pytest.param(
            TUPLE_MODEL
            + CAUSAL_LM.replace(HEAD_MODEL_CALL, "            cache_position=cache_position[-1:],\n")
            + SEQUENCE_CLASSIFICATION,
            "GemmaForCausalLM.forward",
            "outputs = self.model( …",
            id="model-called-with-computed-cache-position",
        ),
        pytest.param(
            TUPLE_MODEL
            + _insert_after(
                CAUSAL_LM, "        hidden_states = outputs[0]\n", "        position = cache_position[-1]\n"
            )
            + SEQUENCE_CLASSIFICATION,
            "GemmaForCausalLM.forward",
            "position = cache_position[-1]",
            id="statement-using-cache-position",
        ),
        pytest.param(
            TUPLE_MODEL
            + CAUSAL_LM.replace("hidden_states[:, slice_indices, :]", "hidden_states[:, slice_indices, 1:]")
            + SEQUENCE_CLASSIFICATION,
            "GemmaForCausalLM.forward",
            "logits = self.lm_head(hidden_states[:, slice_indices, 1:])",
            id="logits-narrowed-otherwise",
        ),
        pytest.param(
            TUPLE_MODEL
            + CAUSAL_LM.replace(
                "        labels: Optional[torch.LongTensor] = None,\n",
                "        labels: Optional[torch.LongTensor] = None,\n        token_type_ids=None,\n",
            )
            + SEQUENCE_CLASSIFICATION,
            "GemmaForCausalLM.forward",
            None,
            id="unknown-head-parameter",
        ),
        pytest.param(
            TUPLE_MODEL
            + CAUSAL_LM.replace("        outputs = self.model(\n", "        outputs = self.transformer(\n")
            + SEQUENCE_CLASSIFICATION,
            "GemmaForCausalLM.forward",
            None,
            id="head-without-self-model",
        ),
        pytest.param(
            TUPLE_MODEL + CAUSAL_LM_TUPLE,
            "GemmaForSequenceClassification.forward",
            None,
            id="sequence-classification-removed",
        ),
        pytest.param(
            TUPLE_MODEL
            + CAUSAL_LM_TUPLE.replace("class GemmaForCausalLM(", "class GemmaForConditionalGeneration(")
            + SEQUENCE_CLASSIFICATION,
            "GemmaForCausalLM.forward",
            None,
            id="causal-lm-renamed",
        ),
        pytest.param(
            TUPLE_MODEL
            + CAUSAL_LM_TUPLE
            + "\n\nclass GemmaForSequenceClassification(GemmaPreTrainedModel):\n    pass\n",
            "GemmaForSequenceClassification.forward",
            None,
            id="head-without-forward",
        ),
        pytest.param(  # removing logits_to_keep is right only where its default keeps every position
            TUPLE_MODEL
            + CAUSAL_LM.replace(
                "        logits_to_keep: Union[int, torch.Tensor] = 0,\n",
                "        logits_to_keep: Union[int, torch.Tensor] = 1,\n",
            )
            + SEQUENCE_CLASSIFICATION,
            "GemmaForCausalLM.forward",
            DECORATED,
            id="removed-parameter-default-changed",
        ),
    ],
)
def test_head_drift(source: str, target: str, node: str | None) -> None:
    assert _drift_node(source, target) == node


# -- suspected bugs (reported; each test expects the correct behaviour) --------------------------------

NEXT_CACHE_438 = """\
        next_cache = None
        if use_cache:
            next_cache = (
                next_decoder_cache.to_legacy_cache() if isinstance(next_decoder_cache, Cache) else next_decoder_cache
            )
"""  # noqa: E501
NEXT_CACHE_445 = """\
        next_cache = next_decoder_cache if use_cache else None
        if return_legacy_cache:
            next_cache = next_cache.to_legacy_cache()
"""


def test_next_cache_pair_of_438_becomes_one_statement() -> None:
    before = UPSTREAM.replace(NEXT_CACHE_445, NEXT_CACHE_438)
    assert before != UPSTREAM
    code, _ = apply(MaskGeneration, before)
    assert code.count("next_cache = next_decoder_cache if use_cache else None") == 1


TUPLE_RETURN_AND_OUTPUT = """\
        if not return_dict:
            return tuple(v for v in [hidden_states, next_cache, all_hidden_states, all_self_attns] if v is not None)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=next_cache,
            hidden_states=all_hidden_states,
            attentions=all_self_attns,
        )
"""  # noqa: E501


def test_an_output_returning_to_tuple_itself_gets_no_tuple_return() -> None:
    before = POSITION_EMBEDDINGS_UPSTREAM.replace(
        "        next_cache = next_decoder_cache if use_cache else None\n" + TUPLE_RETURN_AND_OUTPUT,
        "        output = BaseModelOutputWithPast(\n"
        "            last_hidden_state=hidden_states,\n"
        "            past_key_values=past_key_values if use_cache else None,\n"
        "            hidden_states=all_hidden_states,\n"
        "            attentions=all_self_attns,\n"
        "        )\n"
        "        return output if return_dict else output.to_tuple()\n",
    )
    # 4.48's form: the cache stays in past_key_values, no next_decoder_cache at all
    before = before.replace("        next_decoder_cache = None\n", "").replace(
        "            if use_cache:\n"
        "                next_decoder_cache = layer_outputs[2 if output_attentions else 1]\n\n",
        "",
    )
    assert "next_decoder_cache" not in before
    code, _ = apply(MaskGeneration, before)
    assert "return output if return_dict else output.to_tuple()" in code
    assert "return tuple(v for v in" not in code


def test_a_forward_without_return_dict_defaults_it_from_the_config() -> None:
    before = (
        POSITION_EMBEDDINGS_UPSTREAM.replace("        return_dict: Optional[bool] = None,\n", "")
        .replace(
            "        return_dict = return_dict if return_dict is not None else self.config.use_return_dict\n",
            "",
        )
        .replace(
            "    @add_start_docstrings_to_model_forward(GEMMA_INPUTS_DOCSTRING)\n    def forward(\n        self,\n        input_ids",  # noqa: E501
            "    @can_return_tuple\n    @add_start_docstrings_to_model_forward(GEMMA_INPUTS_DOCSTRING)\n"
            "    def forward(\n        self,\n        input_ids",
        )
        .replace(
            "        if not return_dict:\n"
            "            return tuple(v for v in [hidden_states, next_cache, all_hidden_states, all_self_attns] if v is not None)\n",  # noqa: E501
            "",
        )
    )
    code, _ = apply(MaskGeneration, before)
    model = code.split("class GemmaModel")[1].split("class GemmaForCausalLM")[0]
    assert "if not return_dict:" in model
    assert "return_dict = return_dict if return_dict is not None else self.config." in model


def test_a_comment_over_the_narrowed_logits_is_kept_once() -> None:
    comment = "        # Only compute necessary logits\n"
    head = CAUSAL_LM_445.replace("        logits = self.lm_head(", comment + "        logits = self.lm_head(")
    code, _ = apply(MaskGeneration, TUPLE_MODEL + head + SEQUENCE_CLASSIFICATION)
    assert code.count(comment) == 1


# -- formatting ----------------------------------------------------------------------------------------


def test_formatting_insensitive() -> None:
    reformatted = (
        HEADER
        + LAYER
        + MODEL_TOP.replace('"""Transformer decoder."""', "'Transformer decoder.'")
        + DYNAMIC_FORWARD.replace("        # embed positions\n", "")
        .replace(
            MASK,
            "        causal_mask = self._update_causal_mask("
            "attention_mask, inputs_embeds, cache_position, past_key_values, output_attentions)  # on one line\n",  # noqa: E501
        )
        .replace('"flash_attention_2"', "'flash_attention_2'")
        .replace(
            '"We detected that you are passing `past_key_values` as a tuple."',
            "'We detected that you are passing `past_key_values` as a tuple.'",
        )
        + HEADS.replace("        return self.score(", "        # score\n        return self.score(")
    )
    assert_formatting_insensitive(MaskGeneration, UPSTREAM, reformatted)


def test_create_causal_mask_formatting_insensitive() -> None:
    reformatted = CREATE_CAUSAL_MASK_UPSTREAM.replace(
        "        if use_cache and past_key_values is None:\n            past_key_values = DynamicCache(config=self.config)\n",  # noqa: E501
        "        if use_cache and past_key_values is None: past_key_values = DynamicCache(config = self.config)\n",  # noqa: E501
    ).replace(
        "        return BaseModelOutputWithPast(\n            last_hidden_state=hidden_states,\n",
        "        return BaseModelOutputWithPast(last_hidden_state=hidden_states,\n",
    )
    assert_formatting_insensitive(MaskGeneration, CREATE_CAUSAL_MASK_UPSTREAM, reformatted)


def test_formatting_insensitive_to_joined_statements() -> None:
    """The normaliser and the scaling on one line (``a; b``), and a head whose logits slicing
    shares its line with the statement before it: the same result as laid out."""
    source = TUPLE_MODEL.replace(DYNAMIC_AFTER, DYNAMIC_FORWARD) + CAUSAL_LM + SEQUENCE_CLASSIFICATION
    joined = source.replace(
        "normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)\n"
        "        hidden_states = hidden_states * normalizer\n",
        "normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype); "
        "hidden_states = hidden_states * normalizer\n",
    ).replace(
        "        hidden_states = outputs[0]\n"
        "        # Only compute necessary logits, and do not upcast them to float if we are not computing the loss\n"  # noqa: E501
        "        slice_indices = slice(",
        "        hidden_states = outputs[0]; slice_indices = slice(",
    )
    assert joined.count("; ") == 2
    assert_formatting_insensitive(MaskGeneration, source, joined)
    code, _ = apply(MaskGeneration, joined)
    assert "hidden_states = outputs[0]" in code and "slice_indices" not in code.replace(
        "dropped (logits-to-keep): slice_indices", ""
    )
