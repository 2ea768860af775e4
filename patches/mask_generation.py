"""mask-generation — 修改attention mask的生成方式: tuple cache and explicit masks in GemmaModel.

Why: the vacc graphs take the KV cache as one ``(key, value)`` tuple per layer and the
mask as an explicit additive tensor; upstream's ``GemmaModel.forward`` converts caches to
``Cache`` objects, tracks ``cache_position`` and builds masks through backend-dependent
helpers (``_update_causal_mask``), none of which the compiler can take.

Contract (SPEC §4.7): ``GemmaModel.forward(input_ids=None, attention_mask=None,
position_ids=None, past_key_values=None, inputs_embeds=None, use_cache=None,
output_attentions=None, output_hidden_states=None, return_dict=None)``; past length
``past_key_values[0][0].shape[2]``; default ``position_ids`` continue from it; default mask
all ones over past + current; the 4D mask from ``_prepare_decoder_attention_mask``; the next
cache returned as the same kind of tuple.  Upstream's decorators, docstring, embedding
normalisation statements (``normalizer`` and its dtype) and output construction are carried
over as they are, so the rewritten forward computes what upstream computes.  The heads'
``forward`` lose ``cache_position`` (SPEC §4, heads).

Shapes recognised:

* ``dynamic-cache`` — ``GemmaModel.forward(..., cache_position)`` converting to
  ``DynamicCache`` and calling ``self._update_causal_mask``, layers called through
  ``self._gradient_checkpointing_func(decoder_layer.__call__, ...)`` when checkpointing:
  rewritten, ``_update_causal_mask`` removed;
* ``position-embeddings`` — as ``dynamic-cache``, also computing the rotary tables for its
  layers with ``self.rotary_emb`` (4.48–4.52; dropped: the attention computes its own);
* ``create-causal-mask`` — the mask built with ``create_causal_mask`` (4.53+); the forward
  may have no ``return_dict`` and be decorated with ``@can_return_tuple``,
  ``@check_model_inputs``, ``@capture_outputs``, ``@merge_with_config_defaults`` or
  ``@deprecate_kwarg`` — dropped, the rewritten forward handles its inputs and outputs itself
  (documentation decorators are kept); the cache argument may be named ``cache`` (5.24+);
* ``scaled-embedding`` — no normaliser in the forward because ``embed_tokens`` is a scaled
  embedding class (5.x): nothing to carry over;
* ``unscaled-embedding`` — no normaliser and no scaled embedding, in a family whose upstream
  has none (Mistral; ``families.Traits.embedding_normaliser``): nothing to carry over.  For
  Gemma the same absence is drift;
* ``sliding-window-mask`` — the mask built by ``mask_function = create_causal_mask if
  self.config.sliding_window is None else create_sliding_window_causal_mask`` then
  ``causal_mask = mask_function(...)`` (Mistral 4.53+, a family with the ``sliding_window``
  trait): the choice is dropped by the rule ``sliding-window`` and the mask is the vacc one,
  plain causal (the vendor does not use the sliding window); drift for Gemma;
* ``prepare-4d-mask`` — the legacy forward (Llama 4.36 era; Mistral 4.38–4.41): no
  ``cache_position``; a tuple turned into a ``DynamicCache`` by ``if use_cache:`` (noting
  ``use_legacy_cache``, reading ``get_usable_length``) and back by ``to_legacy_cache()``; the
  4D mask built by ``_prepare_4d_causal_attention_mask`` (or its ``_for_sdpa`` twin, or left 2D
  for flash attention) chosen by ``self._attn_implementation``, with ``sliding_window=`` in a
  sliding-window family: the eager builder becomes ``_prepare_decoder_attention_mask``, the other
  backends are dropped (``attention-dispatch``) and so is the window (``sliding-window``, the
  vendor's decision; drift for a family without the trait); see ``patches/_model_forward.py``;
* ``tuple-cache`` — forward already calling ``self._prepare_decoder_attention_mask`` with no
  ``cache_position`` (this codemod's output);
* ``head-cache-position`` — a head's forward taking ``cache_position`` and passing it to
  ``self.model``: both removed;
* ``head-logits-to-keep`` — a head's forward taking ``num_logits_to_keep``/``logits_to_keep``
  to slice positions before ``lm_head`` (4.45+): the parameter goes and logits are computed
  for every position (upstream's default, 0, does the same);
* ``head-cache-keyword`` — a head's forward taking the cache as ``cache`` (5.24+, behind
  ``@deprecate_kwarg``): the parameter becomes ``past_key_values`` and the renaming decorator goes;
* ``head-tuple-cache`` — a head's forward with none of these: unchanged;
* ``generic-head`` — ``GemmaForSequenceClassification``/``GemmaForTokenClassification`` whose
  body is inherited from ``Generic…ForSequenceClassification``/``…ForTokenClassification``
  (4.54+), which build their model with ``AutoModel.from_config`` — upstream's GemmaModel, not
  the vacc one: both get an ``__init__`` building ``GemmaModel``; both also get a tuple-cache
  ``forward`` of their own (the sequence classifier with the generic last-token search, which
  ``sequence-lengths`` then rewrites; the token classifier because the generic forward passes the
  cache under the release's keyword, ``cache`` in 5.24+, which the vacc GemmaModel does not take),
  and the sequence classifier loses the generic base.

Layers derived from ``GradientCheckpointingLayer`` (4.52+) checkpoint themselves, so the
rewritten loop then calls them directly instead of through ``_gradient_checkpointing_func``.
The output is upstream's output class with the tuple cache in whichever field it has
(``past_key_values`` or ``cache``), plus the collected hidden states and attentions.

The layer loop iterates what upstream's iterates (``self.layers`` or
``self.layers[: self.config.num_hidden_layers]``).

This module recognises the shapes and dispatches; the rules live beside it: the model's
forward in ``patches/_model_forward.py``, the heads' forwards in ``patches/_heads.py``, the
generic heads' members in ``patches/_generic_heads.py``.
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from patches import _generic_heads, _heads
from patches import _layout as lay
from patches import _rules as r
from patches import _shapes as s
from patches._base import VaccCodemod
from patches._generic_heads import GENERIC_HEADS
from patches._heads import HEADS, OPTIONAL_HEADS
from patches._model_forward import LEGACY_MASK_BUILDERS, SLIDING_WINDOW_BUILDER, ModelForward

_SCALE = s.assigns(
    m.Name("hidden_states"), m.BinaryOperation(left=m.Name("hidden_states"), operator=m.Multiply())
)
CACHE_FIELDS = ("past_key_values", "cache")


class MaskGeneration(VaccCodemod):
    """Tuple cache and ``_prepare_decoder_attention_mask`` in ``GemmaModel.forward``; heads without
    ``cache_position``."""

    NAME = "mask-generation"
    DESCRIPTION = (
        "GemmaModel.forward with a tuple cache and explicit additive masks; heads without cache_position."
    )
    TARGETS = (
        "GemmaModel.forward",
        "GemmaModel._update_causal_mask",
        *(f"{head}.forward" for head in (*HEADS, *OPTIONAL_HEADS)),
        *(f"{head}.{member}" for head in GENERIC_HEADS for member in ("<bases>", "__init__")),
        "GemmaForSequenceClassification.get_input_embeddings",
        "GemmaForSequenceClassification.set_input_embeddings",
    )
    DROPS = {
        "GemmaModel._update_causal_mask": "mask-builder: the vacc mask comes from _prepare_decoder_attention_mask"
    }
    SHAPES = {
        "dynamic-cache": "GemmaModel.forward(..., cache_position) with DynamicCache and _update_causal_mask",
        "position-embeddings": "as dynamic-cache, with rotary tables computed by GemmaModel for its layers",
        "create-causal-mask": "GemmaModel.forward building its mask with create_causal_mask (4.53+)",
        "scaled-embedding": "no normaliser in forward: embed_tokens is a scaled embedding (5.x)",
        "tuple-cache": "GemmaModel.forward calling _prepare_decoder_attention_mask (this codemod's output)",
        "head-cache-position": "a head's forward taking cache_position and passing it to self.model",
        "head-logits-to-keep": "a head's forward taking (num_)logits_to_keep to slice positions before lm_head",
        "head-cache-keyword": "a head's forward taking the cache as `cache` (5.24+): renamed past_key_values",
        "head-tuple-cache": "a head's forward without cache_position or logits_to_keep",
        "generic-head": "a head inheriting __init__/forward from a Generic…ForXxx class (4.54+)",
        "unscaled-embedding": "no embedding normaliser, in a family whose upstream has none (Mistral)",
        "prepare-4d-mask": "legacy GemmaModel.forward: DynamicCache.from_legacy_cache and "
        "_prepare_4d_causal_attention_mask(_for_sdpa) chosen by self._attn_implementation",
        "sliding-window-mask": "forward choosing create_causal_mask or create_sliding_window_causal_mask by "
        "config.sliding_window (Mistral 4.53+): the choice dropped, the mask plain causal",
    }

    def rewrite(self, module: cst.Module) -> cst.Module:
        body = list(module.body)
        i = s.find(body, "GemmaModel")
        if i is None or not isinstance(body[i], cst.ClassDef):
            raise self.drift("GemmaModel.forward", "no module-level class GemmaModel")
        body[i] = self._model(body[i], module)
        for head in (*HEADS, *OPTIONAL_HEADS):
            j = s.find(body, head)
            if j is None or not isinstance(body[j], cst.ClassDef):
                if head in OPTIONAL_HEADS:
                    continue
                raise self.drift(f"{head}.forward", f"no module-level class {head}")
            body[j] = self._head(head, body[j], module)
        return module.with_changes(body=body)

    def _model(self, cls: cst.ClassDef, module: cst.Module) -> cst.ClassDef:
        hit = s.find_method(cls, "forward")
        if hit is None:
            raise self.drift("GemmaModel.forward", "GemmaModel has no forward", anchor="GemmaModel")
        k, forward = hit
        params = s.param_names(forward)
        called = set(s.calls(forward))
        if "self._prepare_decoder_attention_mask" in called and not {"cache_position", "cache"} & set(params):
            self.met("tuple-cache")
            self._cache_field = _cache_field(forward)
            return cls
        if "self._update_causal_mask" in called:
            self.met("position-embeddings" if "self.rotary_emb" in called else "dynamic-cache")
        elif "create_causal_mask" in called:
            self.met("create-causal-mask")
        elif SLIDING_WINDOW_BUILDER in called and self.trait("sliding_window"):
            self.met("sliding-window-mask")
        elif LEGACY_MASK_BUILDERS & called and "cache_position" not in params:
            self.met("prepare-4d-mask")
        else:
            raise self.drift(
                "GemmaModel.forward",
                "forward builds its mask neither with self._update_causal_mask, create_causal_mask or "
                "_prepare_4d_causal_attention_mask nor with self._prepare_decoder_attention_mask",
                nearest=f"forward({', '.join(params)})",
            )
        if "self._gradient_checkpointing_func" not in called and not _layers_checkpoint_themselves(module):
            raise self.drift(
                "GemmaModel.forward",
                "no `self._gradient_checkpointing_func(decoder_layer.__call__, ...)` call and GemmaDecoderLayer is "
                "not a GradientCheckpointingLayer: unknown gradient checkpointing form",
            )
        if not any(r.known("hidden_states = hidden_states * normalizer")(x) for x in s.fn_body(forward)):
            if _embedding_is_scaled(cls):
                self.met("scaled-embedding")
            elif _scales_embedding(forward):
                pass  # 4.38: a bare float factor, carried as it is
            elif self.trait("embedding_normaliser"):
                raise self.drift(
                    "GemmaModel.forward",
                    "no embedding normalisation `hidden_states = hidden_states * <normalizer>` in forward, "
                    "and embed_tokens is no scaled embedding",
                )
            else:  # a family whose upstream has no normaliser (Mistral)
                self.met("unscaled-embedding")
        translation = ModelForward(self, forward, module, _layers_checkpoint_themselves(module))
        body = s.class_body(cls)
        body[k] = translation.translate()
        self._cache_field = translation.cache_field
        update = s.find(body, "_update_causal_mask")
        if update is not None:
            del body[update]
        return lay.with_class_body(cls, body)

    def _head(self, head: str, cls: cst.ClassDef, module: cst.Module) -> cst.ClassDef:
        if s.find_method(cls, "forward") is None and _generic_heads.is_generic(head, cls):
            self.met("generic-head")
            return _generic_heads.rewrite(head, cls, self._cache_field)
        return _heads.rewrite_forward(self, head, cls, module)


def _cache_field(forward: cst.FunctionDef) -> str:
    """The field of the model's output class that carries the cache (``past_key_values``, or
    ``cache`` from 5.24 on), in an already rewritten forward."""
    keywords = {a.keyword.value for a in m.findall(forward, m.Arg(keyword=m.Name())) if a.keyword}
    return next((f for f in CACHE_FIELDS if f in keywords and f != "past_key_values"), "past_key_values")


def _scales_embedding(forward: cst.FunctionDef) -> bool:
    """``hidden_states = hidden_states * <factor>`` in the forward (4.38: a bare float factor)."""
    return any(m.matches(x, _SCALE) for x in s.fn_body(forward))


def _layers_checkpoint_themselves(module: cst.Module) -> bool:
    """GemmaDecoderLayer derives from GradientCheckpointingLayer (its __call__ checkpoints)."""
    hit = s.find_class(module, "GemmaDecoderLayer")
    return bool(hit) and any(s.dotted(b.value) == "GradientCheckpointingLayer" for b in hit[1].bases)


def _embedding_is_scaled(model: cst.ClassDef) -> bool:
    """``self.embed_tokens`` is built from a class that scales the embedding itself (5.x)."""
    init = s.find_method(model, "__init__")
    value = s.find_assignment(s.fn_body(init[1]), "self.embed_tokens") if init else None
    return isinstance(value, cst.Call) and "Scaled" in (s.dotted(value.func) or "")
