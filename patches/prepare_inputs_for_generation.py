"""prepare-inputs-for-generation — the tuple-cache ``prepare_inputs_for_generation``.

Why: ``generate()`` asks the model how to feed each step.  Upstream's version (or, in
later releases, ``GenerationMixin``'s) slices inputs by ``cache_position`` and expects
``Cache`` objects; the vacc model keeps the cache as tuples and takes the last token only.

Contract (SPEC §4.9): keep only the last token once a cache exists; ``position_ids`` from
the attention mask's cumulative sum (pad positions set to 1), last column only once a cache
exists; ``inputs_embeds`` only on the first step; return ``input_ids``/``inputs_embeds``,
``position_ids``, ``past_key_values``, ``use_cache``, ``attention_mask``.  A static
``_reorder_cache`` reorders the tuples for beam search.

Shapes recognised (in ``GemmaForCausalLM``):

* ``cache-class-aware`` — upstream's own ``prepare_inputs_for_generation`` handling
  ``Cache`` objects and ``cache_position``: replaced;
* ``inherited`` — no ``prepare_inputs_for_generation`` in the class (4.46+: ``GenerationMixin``'s
  would be used, which is ``cache_position`` and ``Cache`` based): ours is added after ``forward``;
* ``tuple-cache`` — the form this codemod writes (its own output);
* ``tuple-reorder-cache`` — ``_reorder_cache`` already the tuple form: kept as it is.
  A ``_reorder_cache`` in another form is replaced.
"""

from __future__ import annotations

import libcst as cst

from patches import _shapes as s
from patches._base import VaccCodemod

PREPARE_INPUTS = s.parse_def(
    """
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
)

REORDER_CACHE = s.parse_def(
    """
    @staticmethod
    def _reorder_cache(past_key_values, beam_idx):
        reordered_past = ()
        for layer_past in past_key_values:
            reordered_past += (
                tuple(past_state.index_select(0, beam_idx.to(past_state.device)) for past_state in layer_past),
            )
        return reordered_past
    """
)

CACHE_NAMES = {"cache_position", "Cache", "DynamicCache"}


class PrepareInputsForGeneration(VaccCodemod):
    """Tuple-cache ``prepare_inputs_for_generation`` and ``_reorder_cache`` in ``GemmaForCausalLM``."""

    NAME = "prepare-inputs-for-generation"
    DESCRIPTION = "GemmaForCausalLM.prepare_inputs_for_generation and _reorder_cache for the tuple cache."
    TARGETS = ("GemmaForCausalLM.prepare_inputs_for_generation", "GemmaForCausalLM._reorder_cache")
    SHAPES = {
        "cache-class-aware": "upstream prepare_inputs_for_generation handling Cache objects / cache_position",
        "inherited": "no prepare_inputs_for_generation: GenerationMixin's (Cache based) would be used",
        "tuple-cache": "the tuple-cache prepare_inputs_for_generation this codemod writes",
        "tuple-reorder-cache": "a static _reorder_cache over tuples, kept as it is",
    }

    def rewrite(self, module: cst.Module) -> cst.Module:
        hit = s.find_class(module, "GemmaForCausalLM")
        if hit is None:
            raise self.drift("GemmaForCausalLM.prepare_inputs_for_generation", "no class GemmaForCausalLM")
        i, cls = hit
        body = s.class_body(cls)
        prepare = s.find(body, "prepare_inputs_for_generation")
        if prepare is None:
            # inherited from GenerationMixin (cache_position and Cache based): ours goes after forward
            forward = s.find(body, "forward")
            if forward is None:
                raise self.drift(
                    "GemmaForCausalLM.prepare_inputs_for_generation",
                    "GemmaForCausalLM defines neither prepare_inputs_for_generation nor forward",
                    anchor="GemmaForCausalLM",
                )
            self.met("inherited")
            prepare = forward + 1
            body.insert(prepare, s.blank_lines(PREPARE_INPUTS, 1))
        elif s.same_code(body[prepare], PREPARE_INPUTS):
            self.met("tuple-cache")
        elif s.scan(body[prepare]).names & CACHE_NAMES:
            self.met("cache-class-aware")
            body[prepare] = s.keep_leading(body[prepare], PREPARE_INPUTS)
        else:
            raise self.drift(
                "GemmaForCausalLM.prepare_inputs_for_generation",
                "prepare_inputs_for_generation neither handles Cache/cache_position nor is the "
                "tuple-cache form",
                anchor="GemmaForCausalLM.prepare_inputs_for_generation",
            )
        reorder = s.find(body, "_reorder_cache")
        if reorder is None:
            body.insert(prepare + 1, s.blank_lines(REORDER_CACHE, 1))
        elif s.same_code(body[reorder], REORDER_CACHE):
            self.met("tuple-reorder-cache")
        else:
            body[reorder] = s.keep_leading(body[reorder], REORDER_CACHE)
        old_body = s.class_body(cls)
        if len(body) == len(old_body) and all(a is b for a, b in zip(body, old_body, strict=True)):
            return module
        return module.with_changes(body=s.replace_in(module.body, i, s.with_class_body(cls, body)))
