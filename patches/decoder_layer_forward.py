"""decoder-layer-forward — GemmaDecoderLayer forward with the tuple cache and tuple outputs.

Why: the traced decoder layer passes one layer's ``(key, value)`` in and returns it, and
returns a plain tuple, so the model loop can thread the cache without ``Cache`` objects,
``cache_position`` or position embeddings computed elsewhere.

Contract (SPEC §4.5): ``forward(hidden_states, attention_mask=None, position_ids=None,
past_key_value=None, output_attentions=False, use_cache=False)`` returns
``(hidden_states,)`` plus the attention weights when asked, plus ``present`` when caching.
The computation is upstream Gemma's pre-norm block: ``input_layernorm`` → ``self_attn`` →
residual, ``post_attention_layernorm`` → ``mlp`` → residual.  Upstream's docstring is kept.

Shapes recognised:

* ``cache-position`` — forward taking ``cache_position`` (and ``**kwargs``) and passing them
  to ``self.self_attn``, pre-norm block in the order above: rewritten;
* ``position-embeddings`` — forward also (or instead) taking the ``position_embeddings``
  computed by ``GemmaModel`` (4.48+; the cache argument named ``past_key_value``,
  ``past_key_values`` or ``cache``, possibly returning the bare hidden states): rewritten —
  with the ``attention`` codemod each attention computes its own tables;
* ``tuple-outputs`` — the form this codemod writes (its own output).

A forward whose block calls those four modules in another order (or not at all) is drift:
the rewrite would change what it computes.
"""

from __future__ import annotations

import libcst as cst

from patches import _shapes as s
from patches._base import VaccCodemod

TUPLE_FORWARD = s.parse_def(
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

BLOCK_ORDER = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
#: Parameters of the upstream forward this codemod knows (all others are drift).
KNOWN_PARAMS = {
    "self", "hidden_states", "attention_mask", "position_ids", "past_key_value", "output_attentions",
    "use_cache", "cache_position", "position_embeddings", "past_key_values", "cache", "**kwargs",
}  # fmt: skip


def tuple_forward(docstring: cst.BaseStatement | None) -> cst.FunctionDef:
    """The tuple-output forward, carrying upstream's docstring when it has one."""
    if docstring is None:
        return TUPLE_FORWARD
    return s.with_fn_body(TUPLE_FORWARD, [docstring, *s.fn_body(TUPLE_FORWARD)])


class DecoderLayerForward(VaccCodemod):
    """``GemmaDecoderLayer.forward`` with the tuple cache and tuple outputs."""

    NAME = "decoder-layer-forward"
    DESCRIPTION = "GemmaDecoderLayer.forward with one layer's tuple cache in and tuple outputs."
    TARGETS = ("GemmaDecoderLayer.forward",)
    SHAPES = {
        "cache-position": "forward(..., cache_position, **kwargs) passing them on to self.self_attn",
        "position-embeddings": "forward(..., position_embeddings, **kwargs) with rotary tables from GemmaModel",
        "tuple-outputs": "the tuple-cache forward this codemod writes",
    }

    def rewrite(self, module: cst.Module) -> cst.Module:
        hit = s.find_class(module, "GemmaDecoderLayer")
        if hit is None:
            raise self.drift(
                "GemmaDecoderLayer.forward",
                "no module-level class GemmaDecoderLayer",
                nearest=next((n for n in s.names(module.body) if "Layer" in n), None),
            )
        i, cls = hit
        method = s.find_method(cls, "forward")
        if method is None:
            raise self.drift(
                "GemmaDecoderLayer.forward", "GemmaDecoderLayer has no forward", anchor="GemmaDecoderLayer"
            )
        k, forward = method
        new = tuple_forward(s.docstring_stmt(s.fn_body(forward)))
        if s.same_code(forward, new):
            self.met("tuple-outputs")
            return module
        order = [
            name[5:] for name in s.calls(forward) if name[5:] in BLOCK_ORDER and name.startswith("self.")
        ]
        if tuple(dict.fromkeys(order)) != BLOCK_ORDER:
            raise self.drift(
                "GemmaDecoderLayer.forward",
                f"block calls self.{', self.'.join(order) or '(none)'}; "
                f"expected the pre-norm order {' -> '.join(BLOCK_ORDER)}",
            )
        unknown = [p for p in s.param_names(forward) if p not in KNOWN_PARAMS]
        if unknown:
            raise self.drift(
                "GemmaDecoderLayer.forward",
                f"forward takes {', '.join(unknown)}: a shape this codemod does not know",
                nearest=f"forward({', '.join(s.param_names(forward))})",
            )
        params = s.param_names(forward)
        if "position_embeddings" in params:
            self.met("position-embeddings")
        elif "cache_position" in params:
            self.met("cache-position")
        else:
            raise self.drift(
                "GemmaDecoderLayer.forward",
                "forward takes neither cache_position nor position_embeddings",
                nearest=f"forward({', '.join(params)})",
            )
        new_cls = s.with_class_body(cls, s.replace_in(s.class_body(cls), k, s.keep_leading(forward, new)))
        return module.with_changes(body=s.replace_in(module.body, i, new_cls))
