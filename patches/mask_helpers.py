"""mask-helpers — 添加生成attention mask时需要的函数: explicit additive mask builders.

Why: the vacc compiler takes the attention mask as an explicit additive tensor built by
plain tensor ops, not by the library's mask utilities (``AttentionMaskConverter``,
``create_causal_mask``), which change with every release and branch on the attention
backend.  ``mask-generation`` then calls ``GemmaModel._prepare_decoder_attention_mask``.

Adds (SPEC §4.2):

* ``_make_causal_mask(input_ids_shape, dtype, device, past_key_values_length=0)`` — an
  additive ``[bsz, 1, tgt, tgt + past]`` mask: 0 where visible, ``finfo(dtype).min`` above
  the diagonal, past columns visible;
* ``_expand_mask(mask, dtype, tgt_len=None)`` — ``[bsz, src]`` 0/1 into additive
  ``[bsz, 1, tgt, src]``;
* ``GemmaModel._prepare_decoder_attention_mask(attention_mask, input_shape, inputs_embeds,
  past_key_values_length)`` combining them (causal part only when the query length > 1).

Shapes recognised:

* ``absent`` — upstream has none of the three (every Gemma release so far): they are added,
  the functions before the first module-level class, the method before ``GemmaModel.forward``;
* ``present`` — all three exist exactly as this codemod writes them (its own output).

An upstream definition of any of the three names in another form is drift: it would be
silently shadowed otherwise.
"""

from __future__ import annotations

import libcst as cst

from patches import _layout as lay
from patches import _shapes as s
from patches._base import VaccCodemod

MAKE_CAUSAL_MASK = lay.parse_def(
    '''
    def _make_causal_mask(
        input_ids_shape: torch.Size, dtype: torch.dtype, device: torch.device, past_key_values_length: int = 0
    ):
        """
        Make the additive causal mask used for uni-directional self-attention (vacc).
        """
        bsz, tgt_len = input_ids_shape
        mask = torch.full((tgt_len, tgt_len), torch.finfo(dtype).min, device=device)
        mask_cond = torch.arange(mask.size(-1), device=device)
        mask.masked_fill_(mask_cond < (mask_cond + 1).view(mask.size(-1), 1), 0)
        mask = mask.to(dtype)

        if past_key_values_length > 0:
            mask = torch.cat([torch.zeros(tgt_len, past_key_values_length, dtype=dtype, device=device), mask], dim=-1)
        return mask[None, None, :, :].expand(bsz, 1, tgt_len, tgt_len + past_key_values_length)
    '''
)

EXPAND_MASK = lay.parse_def(
    '''
    def _expand_mask(mask: torch.Tensor, dtype: torch.dtype, tgt_len=None):
        """
        Expands attention_mask from `[bsz, seq_len]` to the additive `[bsz, 1, tgt_seq_len, src_seq_len]` (vacc).
        """
        bsz, src_len = mask.size()
        tgt_len = tgt_len if tgt_len is not None else src_len

        expanded_mask = mask[:, None, None, :].expand(bsz, 1, tgt_len, src_len).to(dtype)

        inverted_mask = 1.0 - expanded_mask

        return inverted_mask.masked_fill(inverted_mask.to(torch.bool), torch.finfo(dtype).min)
    '''
)

PREPARE_DECODER_ATTENTION_MASK = lay.parse_def(
    """
    def _prepare_decoder_attention_mask(self, attention_mask, input_shape, inputs_embeds, past_key_values_length):
        # vacc: [bsz, seq_len] -> additive [bsz, 1, tgt_seq_len, src_seq_len], causal part only when tgt_len > 1
        combined_attention_mask = None
        if input_shape[-1] > 1:
            combined_attention_mask = _make_causal_mask(
                input_shape,
                inputs_embeds.dtype,
                device=inputs_embeds.device,
                past_key_values_length=past_key_values_length,
            )

        if attention_mask is not None:
            expanded_attn_mask = _expand_mask(attention_mask, inputs_embeds.dtype, tgt_len=input_shape[-1]).to(
                inputs_embeds.device
            )
            combined_attention_mask = (
                expanded_attn_mask if combined_attention_mask is None else expanded_attn_mask + combined_attention_mask
            )

        return combined_attention_mask
    """
)


class MaskHelpers(VaccCodemod):
    """Adds ``_make_causal_mask``, ``_expand_mask`` and ``GemmaModel._prepare_decoder_attention_mask``."""

    NAME = "mask-helpers"
    DESCRIPTION = "Add _make_causal_mask, _expand_mask and GemmaModel._prepare_decoder_attention_mask."
    TARGETS = ("_make_causal_mask", "_expand_mask", "GemmaModel._prepare_decoder_attention_mask")
    SHAPES = {
        "absent": "none of the three helpers exists upstream",
        "present": "all three exist exactly as this codemod writes them",
    }

    def rewrite(self, module: cst.Module) -> cst.Module:
        model = s.find_class(module, "GemmaModel")
        if model is None:
            raise self.drift(
                "GemmaModel._prepare_decoder_attention_mask",
                "no class GemmaModel",
                nearest=_nearest_model(module),
            )
        wanted = {"_make_causal_mask": MAKE_CAUSAL_MASK, "_expand_mask": EXPAND_MASK}
        existing = {name: s.find_function(module, name) for name in wanted}
        method = s.find_method(model[1], "_prepare_decoder_attention_mask")
        found = [*(name for name, hit in existing.items() if hit), *(["method"] if method else [])]
        if (
            len(found) == 3
            and all(s.same_code(hit[1], wanted[n]) for n, hit in existing.items())
            and (s.same_code(method[1], PREPARE_DECODER_ATTENTION_MASK))
        ):
            self.met("present")
            return module
        if found:
            name = found[0] if found[0] != "method" else "GemmaModel._prepare_decoder_attention_mask"
            raise self.drift(name, f"upstream already defines {name} in a form this codemod does not know")
        self.met("absent")

        i, cls = model
        body = s.class_body(cls)
        forward = s.find(body, "forward")
        if forward is None:
            raise self.drift(
                "GemmaModel._prepare_decoder_attention_mask", "GemmaModel has no forward", anchor="GemmaModel"
            )
        body.insert(forward, lay.blank_lines(PREPARE_DECODER_ATTENTION_MASK, 1))
        new_body = lay.replace_in(module.body, i, lay.with_class_body(cls, body))
        first_class = s.first_index(new_body, lambda x: isinstance(x, cst.ClassDef))
        helpers = [lay.blank_lines(MAKE_CAUSAL_MASK, 2), lay.blank_lines(EXPAND_MASK, 2)]
        new_body[first_class:first_class] = helpers
        return module.with_changes(body=new_body)


def _nearest_model(module: cst.Module) -> str | None:
    return next((n for n in s.names(module.body) if n.endswith("Model") and "Pre" not in n), None)
