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
  ``Cache`` objects and ``cache_position``: replaced whole, because the contract fixes the
  tuple-cache form; so it is recognised exactly, by the digest of its code (``KNOWN_UPSTREAM``:
  the ten forms of Gemma 4.38.0–4.45.0, four of Mistral 4.38–4.45).  Any other form is drift — a change upstream makes there
  stops the run instead of vanishing;
* ``inherited`` — no ``prepare_inputs_for_generation`` in the class (4.46+: ``GenerationMixin``'s
  would be used, which is ``cache_position`` and ``Cache`` based): ours is added after ``forward``;
* ``tuple-cache`` — the form this codemod writes (its own output);
* ``tuple-reorder-cache`` — ``_reorder_cache`` already the tuple form: kept as it is.
  A ``_reorder_cache`` in another form is drift (replacing it would lose what it computes);
  where there is none (4.43+), the tuple form is added.
"""

from __future__ import annotations

import libcst as cst

from patches import _layout as lay
from patches import _rules as r
from patches import _shapes as s
from patches._base import VaccCodemod

PREPARE_INPUTS = lay.parse_def(
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

REORDER_CACHE = lay.parse_def(
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

#: Digests (``_rules.unit_digest``: the code as Python, docstring and formatting aside) of the
#: upstream ``prepare_inputs_for_generation`` forms this codemod replaces.  The contract fixes the
#: tuple-cache form whole, so upstream's is not edited but recognised exactly: a release (or a
#: fork) whose method differs in any way is drift, for a maintainer to read and add here.
KNOWN_UPSTREAM = {
    "721d32b39fcad4b000134909c2c5364bbc0a41caac5e4fd0a0b90b8115cb1132": "4.38.0-4.38.1",
    "0e832e6f39adeab61d0250299676c8e7547fb4f1d09802889df3f368094af8fb": "4.38.2",
    "7dcad951f676a379b0fea6d9c3e1d7fd18cb02b1525b8a4e09d64b08bdd4f6b7": "4.39.0-4.39.1",
    "69d1505690630bb709e79db7259c6d1bdbf78fb87edaac592c2677e2fba66a67": "4.39.2-4.40.2",
    "512fd0b1f945df1ef68453049f3f887a675953eb593093a378912bff716747b5": "4.41.0",
    "c47e3025c9886d4792a3f7c8193fd0855dd16d4d1692c8134ebf07057babc7af": "4.42.0",
    "32a3b51362734f4de2dae8edcadc6154f8339c0eeffa3d11f5e0279ef39d3fb2": "4.43.0-4.43.2",
    "bf7ad1e67ab9ed40876b2e0e064f911f6fae410398a24f8983a21098ee53625d": "4.44.0",
    "c99a6bb1afd42b5ba37a2a0dc3810e31d3acdc45eee126f8767d01ed13e080a6": "4.44.1",
    "340b03971cc6113c66fbc8bc8d18200964ae6dcfab5116ee363baa7f226be4a0": "4.45.0",
    # Mistral's (in the codemods' names): the same Cache/cache_position forms; 4.42's also crops
    # the mask to a SlidingWindowCache, which the vacc form does not use (plain causal mask)
    "38d657316c8b532c7db079710617370c14bbc19751ba7e83cc7f951b31c7b752": "mistral 4.42.0-4.42.4",
    "de49a1c1afebc329aca8c3c08a5a4341ec1e0212c4bc37131c4aba32b1a3422b": "mistral 4.44.0-4.44.2",
    "76463532979eb72df3a902c7f14437208e0abe875ca9e6e8ce346cb83241f5b9": "mistral 4.45.0-4.45.2",
    # Mistral 4.38-4.41 (the Llama 4.36-era form): past length from `Cache.seen_tokens` or the
    # tuple, the mask cropped to a bounded cache's `get_max_length()`; no cache_position
    "57fbd6fe184eaf54fcd4b2e0f9d13c5968cd3133f8dfeccba8f272b338eeee27": "mistral 4.38.0-4.41.2",
}


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
            body.insert(prepare, lay.blank_lines(PREPARE_INPUTS, 1))
        elif s.same_code(body[prepare], PREPARE_INPUTS):
            self.met("tuple-cache")
        elif r.unit_digest(body[prepare]) in KNOWN_UPSTREAM:
            self.met("cache-class-aware")
            body[prepare] = lay.keep_leading(body[prepare], PREPARE_INPUTS)
        else:
            raise self.drift(
                "GemmaForCausalLM.prepare_inputs_for_generation",
                "prepare_inputs_for_generation is neither a known upstream form (replaced whole: its "
                f"digest {r.unit_digest(body[prepare])[:12]} is not in KNOWN_UPSTREAM) nor the tuple-cache form",
                anchor="GemmaForCausalLM.prepare_inputs_for_generation",
            )
        reorder = s.find(body, "_reorder_cache")
        if reorder is None:
            body.insert(prepare + 1, lay.blank_lines(REORDER_CACHE, 1))
        elif s.same_code(body[reorder], REORDER_CACHE):
            self.met("tuple-reorder-cache")
        else:  # another form would be replaced, and what it computes lost
            raise self.drift(
                "GemmaForCausalLM._reorder_cache",
                "_reorder_cache is not the static tuple form",
                anchor="GemmaForCausalLM._reorder_cache",
            )
        old_body = s.class_body(cls)
        if len(body) == len(old_body) and all(a is b for a, b in zip(body, old_body, strict=True)):
            return module
        return module.with_changes(body=lay.replace_in(module.body, i, lay.with_class_body(cls, body)))
