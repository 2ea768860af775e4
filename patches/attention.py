"""attention — self attention as in Llama 4.31: one eager ``GemmaAttention`` with a tuple cache.

Why: the vacc compiler traces one attention graph with an explicit additive mask and the
KV cache as plain ``(key, value)`` tensors in and out; upstream's attention dispatches to
FlashAttention2/SDPA classes or an attention-interface lookup and updates ``Cache`` objects.

Contract (SPEC §4.4): ``forward(hidden_states, attention_mask=None, position_ids=None,
past_key_value=None, output_attentions=False, use_cache=False)`` returns ``(attn_output,
attn_weights or None, present)``; ``present`` is ``(key, value)``, each ``[bsz,
num_key_value_heads, kv_len, head_dim]`` after rotary and before ``repeat_kv``, when
``use_cache``; the additive mask must be ``[bsz, 1, q_len, kv_len]`` (``ValueError``
otherwise); softmax in float32.  The attention scores use upstream's own expression
(``/ math.sqrt(self.head_dim)``, a ``self.scaling`` …), so the scaling stays upstream's.

Shapes recognised:

* ``three-classes`` — ``GemmaAttention`` (eager) with ``GemmaFlashAttention2`` and
  ``GemmaSdpaAttention`` subclasses, the ``GEMMA_ATTENTION_CLASSES`` mapping, and
  ``GemmaDecoderLayer.__init__`` picking ``GEMMA_ATTENTION_CLASSES[config._attn_implementation]``:
  the variants and the mapping are removed, the layer builds ``GemmaAttention``, and
  ``GemmaAttention.forward`` becomes the tuple-cache form (``__init__`` is kept);
* ``eager-function`` — ``eager_attention_forward(module, query, key, value, attention_mask,
  scaling, ...)`` at module level and ``GemmaAttention.forward(hidden_states,
  position_embeddings, ...)`` dispatching through an attention interface (4.48+): the function
  is removed, the scores keep its expression (``* scaling``, with the ``scaling=`` the forward
  passes, i.e. ``self.scaling``), and since the rotary tables are no longer handed down by
  ``GemmaModel``, ``GemmaAttention.__init__`` gains ``self.rotary_emb`` built exactly as
  ``GemmaModel.__init__`` builds it;
* ``tuple-cache`` — ``GemmaAttention.forward`` already the tuple-cache form, no variants
  (this codemod's output).
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from patches import _shapes as s
from patches._base import VaccCodemod

VARIANTS = ("GemmaFlashAttention2", "GemmaSdpaAttention")
MAPPING = "GEMMA_ATTENTION_CLASSES"

TUPLE_CACHE_FORWARD = s.parse_def(
    """
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

    attn_weights = __scores__

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
"""
)

_SCORES = s.assigns(
    m.Name("attn_weights"),
    m.BinaryOperation(left=m.Call(func=m.Attribute(value=m.Name("torch"), attr=m.Name("matmul")))),
)
_MAPPING_CALL = m.Call(func=m.Subscript(value=m.Name(MAPPING)))


def tuple_cache_forward(scores: cst.BaseExpression) -> cst.FunctionDef:
    """The tuple-cache forward, with upstream's attention-score expression."""
    return s.fill(TUPLE_CACHE_FORWARD, scores=scores)


EAGER_FUNCTION = "eager_attention_forward"
_INTERFACE_CALL = m.Call(func=m.Name("attention_interface") | m.Name(EAGER_FUNCTION))


class Attention(VaccCodemod):
    """One eager, tuple-cache ``GemmaAttention``; the variants, the eager function and the class
    mapping removed."""

    NAME = "attention"
    DESCRIPTION = (
        "One eager GemmaAttention with a (key, value) tuple cache; FA2/SDPA variants, eager function and "
        "attention-interface lookup removed."
    )
    TARGETS = ("GemmaAttention", *VARIANTS, MAPPING, EAGER_FUNCTION, "GemmaDecoderLayer.__init__")
    SHAPES = {
        "three-classes": "GemmaAttention + GemmaFlashAttention2 + GemmaSdpaAttention + GEMMA_ATTENTION_CLASSES",
        "eager-function": "eager_attention_forward(module, query, ...) + an attention-interface lookup in forward; "
        "rotary position embeddings computed by GemmaModel",
        "tuple-cache": "GemmaAttention.forward already the tuple-cache form (this codemod's output)",
    }

    def rewrite(self, module: cst.Module) -> cst.Module:
        hit = s.find_class(module, "GemmaAttention")
        if hit is None:
            raise self.drift(
                "GemmaAttention",
                "no module-level class GemmaAttention",
                nearest=next((n for n in s.names(module.body) if "ttention" in n), None),
            )
        i, cls = hit
        k, forward = self._forward(cls)
        variants = {name for name in (*VARIANTS, MAPPING) if s.find(module.body, name) is not None}
        eager = s.find_function(module, EAGER_FUNCTION)
        own = s.find_assignment(s.fn_body(forward), "attn_weights")
        if (
            not variants
            and eager is None
            and own is not None
            and s.same_code(forward, tuple_cache_forward(own))
        ):
            self.met("tuple-cache")
            return module
        if eager is None:
            return self._three_classes(module, i, cls, k, forward, variants)
        if variants:
            raise self.drift("GemmaAttention", f"both {EAGER_FUNCTION} and {sorted(variants)} present")
        return self._eager_function(module, i, cls, k, forward, eager[1])

    def _three_classes(self, module, i, cls, k, forward, present) -> cst.Module:
        scores = s.first_index(s.fn_body(forward), lambda x: m.matches(x, _SCORES))
        if scores is None:
            raise self.drift(
                "GemmaAttention.forward",
                "no `attn_weights = torch.matmul(q, k^T) <op> <scale>` "
                f"statement to take the attention scaling from (and no {EAGER_FUNCTION})",
                nearest=s.closest(module.body, EAGER_FUNCTION),  # a renamed eager function?
            )
        if present != {*VARIANTS, MAPPING}:
            raise self.drift(
                "GemmaAttention",
                f"attention variants present: {sorted(present) or 'none'}; "
                f"expected all of {', '.join((*VARIANTS, MAPPING))}",
            )
        self.met("three-classes")
        new_forward = tuple_cache_forward(s.fn_body(forward)[scores].body[0].value)
        cls = s.with_class_body(cls, s.replace_in(s.class_body(cls), k, s.keep_leading(forward, new_forward)))
        body = [cls if n == i else stmt for n, stmt in enumerate(module.body)]
        body = [stmt for stmt in body if s.stmt_name(stmt) not in present]
        return module.with_changes(body=self._layer_builds_attention(body))

    def _eager_function(self, module, i, cls, k, forward, eager: cst.FunctionDef) -> cst.Module:
        """The scores come from the eager function, its names mapped to the forward's; the
        attention gets its own rotary embedding, built as GemmaModel builds it."""
        scores = s.find_assignment(s.fn_body(eager), "attn_weights")
        if scores is None or not m.matches(scores, _SCORES.body[0].value):
            raise self.drift(
                EAGER_FUNCTION, "no `attn_weights = torch.matmul(query, key^T) <op> <scale>` statement"
            )
        calls = m.findall(forward, _INTERFACE_CALL)
        scaling = [a.value for c in calls for a in c.args if m.matches(a, m.Arg(keyword=m.Name("scaling")))]
        if len(scaling) != 1:
            raise self.drift(
                "GemmaAttention.forward",
                "forward does not call the attention interface with one `scaling=` argument",
            )
        params = s.param_names(eager)
        names = {"query": cst.Name("query_states"), "scaling": scaling[0]}
        if params and params[0] == "module":
            names["module"] = cst.Name("self")
        new_forward = tuple_cache_forward(s.rename(scores, names))
        init = s.find_method(cls, "__init__")
        if init is None:
            raise self.drift("GemmaAttention", "GemmaAttention has no __init__")
        body = s.class_body(cls)
        if s.find_assignment(s.fn_body(init[1]), "self.rotary_emb") is None:
            body[init[0]] = s.with_fn_body(init[1], [*s.fn_body(init[1]), self._rotary_construction(module)])
        body[k] = s.keep_leading(forward, new_forward)
        self.met("eager-function")
        new_body = [s.with_class_body(cls, body) if n == i else x for n, x in enumerate(module.body)]
        return module.with_changes(body=[x for x in new_body if s.stmt_name(x) != EAGER_FUNCTION])

    def _rotary_construction(self, module: cst.Module) -> cst.BaseStatement:
        """``self.rotary_emb = GemmaRotaryEmbedding(...)`` exactly as GemmaModel.__init__ has it."""
        model = s.find_class(module, "GemmaModel")
        init = s.find_method(model[1], "__init__") if model else None
        # read one statement per line: GemmaModel.__init__ is not ours, so not laid out for us
        stmts = s.fn_body(s.split_lines(init[1])) if init else []
        hit = s.statement_index(stmts, lambda x: (s.assignment(x) or ("",))[0] == "self.rotary_emb")
        if hit is None:
            raise self.drift(
                "GemmaAttention.__init__",
                "no `self.rotary_emb = ...` in GemmaModel.__init__ to build the attention's rotary embedding from",
                anchor="GemmaModel",
            )
        line = stmts[hit]
        comment = cst.EmptyLine(comment=cst.Comment("# vacc: each attention computes its own cos/sin tables"))
        return line.with_changes(leading_lines=[cst.EmptyLine(indent=False), comment])

    def _forward(self, cls: cst.ClassDef) -> tuple[int, cst.FunctionDef]:
        hit = s.find_method(cls, "forward")
        if hit is None:
            raise self.drift(
                "GemmaAttention.forward", "GemmaAttention has no forward", anchor="GemmaAttention"
            )
        return hit

    def _layer_builds_attention(self, body: list) -> list:
        """``GEMMA_ATTENTION_CLASSES[...](...)`` in ``GemmaDecoderLayer.__init__`` -> ``GemmaAttention(...)``."""
        i = s.find(body, "GemmaDecoderLayer")
        init = s.find_method(body[i], "__init__") if i is not None else None
        if init is None or not s.contains(init[1], _MAPPING_CALL):
            raise self.drift(
                "GemmaDecoderLayer.__init__",
                f"no `{MAPPING}[...](...)` call to replace",
                anchor="GemmaDecoderLayer",
            )
        k, fn = init
        new_fn = m.replace(
            fn, _MAPPING_CALL, lambda node, _: node.with_changes(func=cst.Name("GemmaAttention"))
        )
        layer = body[i]
        body[i] = s.with_class_body(layer, s.replace_in(s.class_body(layer), k, new_fn))
        return body
