"""Shapes that Mistral brought to the shared codemods, before/after on synthetic modules.

The codemods are written in Gemma's names; the engine presents a Mistral upstream to them in
those names (``patcher.series.aliasing``), so these cases are spelled ``Gemma…`` too, and run
with Mistral's traits where the shape is Mistral's own:

* ``sliding-window-mask`` (Mistral 4.53+): ``mask_function = create_causal_mask if
  self.config.sliding_window is None else create_sliding_window_causal_mask`` then
  ``causal_mask = mask_function(...)``: the choice is dropped by the rule ``sliding-window``
  and the mask is the vacc one (plain causal, the vendor's decision); without the family's
  ``sliding_window`` trait (Gemma) the same source is drift;
* ``unscaled-embedding``: no embedding normaliser, for a family without one; with Gemma's
  traits its absence is drift, and a normaliser in a family without one is carried (kept);
* the checkpointed layer call ``partial(decoder_layer.__call__, **flash_attn_kwargs)``
  (Mistral 4.49-4.51) is translated as ``decoder_layer.__call__`` is (the forward's own
  keyword arguments go, as in the direct call), whatever the family.
"""

from __future__ import annotations

from codemod_cases import apply, assert_codemod, assert_drift, assert_idempotent, fixture
from test_mask_generation import (
    CAUSAL_LM_TUPLE,
    CREATE_CAUSAL_MASK_AFTER,
    CREATE_CAUSAL_MASK_FORWARD,
    CREATE_CAUSAL_MASK_UPSTREAM,
    POSITION_EMBEDDINGS_AFTER,
    POSITION_EMBEDDINGS_FORWARD,
    POSITION_EMBEDDINGS_UPSTREAM,
)

from patcher.upstream.families import GEMMA, MISTRAL
from patches.mask_generation import MaskGeneration

NORMALISER = (
    "\n        # normalized\n"
    "        normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)\n"
    "        hidden_states = hidden_states * normalizer\n"
)
GEMMA_MASK = "        causal_mask = create_causal_mask(\n"
CHOICE = (
    "        mask_function = create_causal_mask if self.config.sliding_window is None else "
    "create_sliding_window_causal_mask\n"
)
WINDOWED_MASK = CHOICE + "        causal_mask = mask_function(\n"
IMPORT = "from transformers.masking_utils import create_causal_mask\n"
WINDOWED_IMPORT = (
    "from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask\n"
)
VACC_MASK = "        # vacc: explicit additive mask, all ones over past + current by default\n"
DROPPED_CHOICE = "        # vacc: dropped (sliding-window): " + CHOICE.strip() + "\n"


def _replace(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# Mistral 4.53+: no normaliser, and the mask builder chosen by the sliding window
MISTRAL_FORWARD = _replace(_replace(CREATE_CAUSAL_MASK_FORWARD, NORMALISER, "\n"), GEMMA_MASK, WINDOWED_MASK)
MISTRAL_UPSTREAM = _replace(
    _replace(CREATE_CAUSAL_MASK_UPSTREAM, CREATE_CAUSAL_MASK_FORWARD, MISTRAL_FORWARD),
    IMPORT,
    WINDOWED_IMPORT,
)
COLLECTORS = (
    "        all_hidden_states = () if output_hidden_states else None\n"
    "        all_self_attns = () if output_attentions else None\n"
    "        next_decoder_cache = () if use_cache else None\n"
)
EMBEDDED = "        hidden_states = inputs_embeds\n"
# Gemma's expected output, less the normaliser: the collectors then follow the embedding (the
# last statement before the layers that upstream has), and the dropped choice precedes the mask
MISTRAL_AFTER = _replace(
    _replace(
        _replace(CREATE_CAUSAL_MASK_AFTER, NORMALISER + COLLECTORS, "\n"),
        EMBEDDED,
        EMBEDDED + COLLECTORS,
    ),
    VACC_MASK,
    DROPPED_CHOICE + VACC_MASK,
)
MISTRAL_OUTPUT = _replace(MISTRAL_UPSTREAM, MISTRAL_FORWARD, MISTRAL_AFTER)


def test_sliding_window_choice_is_dropped_and_the_mask_is_plain_causal() -> None:
    assert_codemod(
        MaskGeneration,
        MISTRAL_UPSTREAM,
        MISTRAL_OUTPUT,
        ("sliding-window-mask", "unscaled-embedding", "head-tuple-cache"),
        traits=MISTRAL.traits,
    )
    assert (
        "create_sliding_window_causal_mask(" not in fixture(MISTRAL_OUTPUT).split(DROPPED_CHOICE.strip())[1]
    )


def test_mistral_output_is_a_noop() -> None:
    assert_idempotent_with(MISTRAL_OUTPUT)


def assert_idempotent_with(source: str) -> None:
    assert_codemod(MaskGeneration, source, source, ("tuple-cache", "head-tuple-cache"), traits=MISTRAL.traits)


def test_the_sliding_window_choice_is_drift_for_gemma() -> None:
    """Gemma's traits: no normaliser is drift first; with the normaliser kept, the choice is."""
    assert_drift(MaskGeneration, MISTRAL_UPSTREAM, "GemmaModel.forward", traits=GEMMA.traits)
    with_normaliser = _replace(CREATE_CAUSAL_MASK_UPSTREAM, GEMMA_MASK, WINDOWED_MASK).replace(
        IMPORT, WINDOWED_IMPORT
    )
    drift = assert_drift(MaskGeneration, with_normaliser, "GemmaModel.forward", traits=GEMMA.traits)
    assert "mask" in drift.found


def test_a_normaliser_in_a_family_without_one_is_carried() -> None:
    """Kept where upstream has it, as any upstream statement: the output computes what upstream does."""
    scaled = _replace(CREATE_CAUSAL_MASK_UPSTREAM, GEMMA_MASK, WINDOWED_MASK).replace(IMPORT, WINDOWED_IMPORT)
    code, change = apply(MaskGeneration, scaled, traits=MISTRAL.traits)
    assert NORMALISER.strip() in code
    assert "unscaled-embedding" not in change.shapes and "sliding-window-mask" in change.shapes


def test_default_traits_are_gemmas() -> None:
    """Outside patcher (libcst's tool), a codemod runs with the canonical family's traits."""
    assert_drift(MaskGeneration, MISTRAL_UPSTREAM, "GemmaModel.forward")


# -- partial(decoder_layer.__call__, **flash_attn_kwargs) in the checkpointed call ------------------
PLAIN = "                    decoder_layer.__call__,\n"
PARTIAL = "                    partial(decoder_layer.__call__, **flash_attn_kwargs),\n"
DIRECT = "                    position_embeddings=position_embeddings,\n                )\n"
DIRECT_KWARGS = (
    "                    position_embeddings=position_embeddings,\n"
    "                    **flash_attn_kwargs,\n"
    "                )\n"
)


def test_partial_layer_call_in_checkpointing_is_translated() -> None:
    forward = _replace(_replace(POSITION_EMBEDDINGS_FORWARD, PLAIN, PARTIAL), DIRECT, DIRECT_KWARGS)
    before = _replace(POSITION_EMBEDDINGS_UPSTREAM, POSITION_EMBEDDINGS_FORWARD, forward)
    after = _replace(before, forward, POSITION_EMBEDDINGS_AFTER)
    assert_codemod(MaskGeneration, before, after, ("position-embeddings", "head-tuple-cache"))
    assert_idempotent(MaskGeneration, after)


def test_partial_binding_anything_else_is_drift() -> None:
    other = "                    partial(decoder_layer.__call__, scale=2.0),\n"
    forward = _replace(POSITION_EMBEDDINGS_FORWARD, PLAIN, other)
    before = _replace(POSITION_EMBEDDINGS_UPSTREAM, POSITION_EMBEDDINGS_FORWARD, forward)
    assert_drift(MaskGeneration, before, "GemmaModel.forward")


# the heads of these modules are Gemma's own (no head shape is Mistral's)
assert CAUSAL_LM_TUPLE in CREATE_CAUSAL_MASK_UPSTREAM
