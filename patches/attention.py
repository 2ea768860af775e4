"""attention — self attention as in Llama 4.31: one eager ``GemmaAttention`` with a tuple cache.

Why: the vacc compiler traces one attention graph with an explicit additive mask and the
KV cache as plain ``(key, value)`` tensors in and out; upstream's attention dispatches to
FlashAttention2/SDPA classes or an attention-interface lookup and updates ``Cache`` objects.

Contract (SPEC §4.4): ``forward(hidden_states, attention_mask=None, position_ids=None,
past_key_value=None, output_attentions=False, use_cache=False)`` returns ``(attn_output,
attn_weights or None, present)``; ``present`` is ``(key, value)``, each ``[bsz,
num_key_value_heads, kv_len, head_dim]`` after rotary and before ``repeat_kv``, when
``use_cache``; the additive mask must be ``[bsz, 1, q_len, kv_len]`` (``ValueError``
otherwise); softmax in float32.

How: upstream's forward is edited in place (see ``patches/_rules.py``).  Its signature
becomes the contract's (each upstream parameter must be one the contract translates, with a
default it knows); its statements are accounted for one by one:

* kept — everything that mentions none of the plumbing the vacc form takes away (the
  cache, ``cache_position``, ``position_embeddings``, ``**kwargs``, the attention interface):
  projections, reshapes, ``repeat_kv``, the scores and their scaling, softmax, dropout,
  ``o_proj``, upstream's own output checks — in upstream's words, where upstream has them;
* translated — ``rotary-tables``: ``cos, sin = self.rotary_emb(value_states, position_ids…)``
  or ``cos, sin = position_embeddings`` becomes the table lookup for ``kv_seq_len`` positions
  (past included); ``rotary-gather``: ``apply_rotary_pos_emb(…, cos, sin)`` also passes
  ``position_ids``; ``tuple-cache``: ``if <cache> is not None: …<cache>.update(…)`` becomes the
  concatenation with the past ``(key, value)`` and ``present``; ``mask-check``: ``if
  attention_mask is not None:`` first checks the mask's size; ``full-mask``: the slice of the
  mask to the key length becomes the mask itself (its size is checked); ``present``: ``return
  attn_output, attn_weights`` also returns ``present`` (weights None unless asked);
  ``inline-eager``: the call of the attention interface (or of ``eager_attention_forward``)
  becomes the eager function's own statements, its parameters bound to the call's arguments;
* translated, in the legacy forward (shape ``kv-seq-len``) — ``tuple-cache-length``: ``if
  past_key_value is not None:`` checking ``self.layer_idx`` and adding
  ``past_key_value.get_usable_length(kv_seq_len, self.layer_idx)`` to ``kv_seq_len`` becomes the
  addition of the tuple's past length (``past_key_value[0].shape[-2]``; the layer index only
  addresses a ``Cache`` object); ``rotary-tables``: ``cos, sin = self.rotary_emb(value_states,
  seq_len=kv_seq_len)`` also passes ``position_ids`` (the contract's rotary signature), upstream's
  own ``kv_seq_len = key_states.shape[-2]`` being kept where it is;
* dropped — ``padding-mask-warning`` (a deprecation warning about a ``padding_mask`` entry of
  ``**kwargs``, which the vacc forward does not take), ``static-cache-hook`` (``past_key_value = getattr(self, "past_key_value", …)``),
  ``attention-dispatch`` (choosing another backend than eager), ``deprecate-kwarg`` (a
  renaming decorator of the cache argument; the contract names it ``past_key_value``),
  ``other-backend-kwargs`` (keyword arguments of the interface call that the eager function
  takes into ``**kwargs`` and ignores).

Rotary, cache, mask and return translations must each happen exactly once; anything they do
not recognise exactly is drift.

Shapes recognised:

* ``three-classes`` — ``GemmaAttention`` (eager) with ``GemmaFlashAttention2`` and
  ``GemmaSdpaAttention`` subclasses, the ``GEMMA_ATTENTION_CLASSES`` mapping, and
  ``GemmaDecoderLayer.__init__`` picking ``GEMMA_ATTENTION_CLASSES[config._attn_implementation]``:
  the variants and the mapping are dropped (``attention-variants``), the layer builds
  ``GemmaAttention``, and the forward is translated as above (``__init__`` is kept);
* ``eager-function`` — ``eager_attention_forward(module, query, key, value, attention_mask,
  scaling, ...)`` at module level and ``GemmaAttention.forward(hidden_states,
  position_embeddings, ...)`` dispatching through an attention interface (4.48+): the function
  is inlined into the forward and removed; since the rotary tables are no longer handed down
  by ``GemmaModel``, ``GemmaAttention.__init__`` gains ``self.rotary_emb`` built exactly as
  ``GemmaModel.__init__`` builds it;
* ``kv-seq-len`` — within ``three-classes``, the legacy forward (Llama 4.36 era; Mistral
  4.38–4.41): ``**kwargs`` feeding a ``padding_mask`` warning, ``kv_seq_len`` grown by the cache's
  ``get_usable_length``, rotary tables asked for ``seq_len=kv_seq_len`` and gathered by
  ``apply_rotary_pos_emb(…, position_ids)``, a ``Cache.update`` with ``{"sin", "cos"}``
  ``cache_kwargs``, the mask's size checked by upstream itself: translated by the rules above
  (upstream's own size checks are kept beside the contract's);
* ``tuple-cache`` — ``GemmaAttention.forward`` already has the contract's signature and the
  tuple-cache ``present`` (this codemod's output).
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from patches import _layout as lay
from patches import _rules as r
from patches import _shapes as s
from patches._base import VaccCodemod

VARIANTS = ("GemmaFlashAttention2", "GemmaSdpaAttention")
MAPPING = "GEMMA_ATTENTION_CLASSES"
EAGER_FUNCTION = "eager_attention_forward"
#: The defaults known for ``eager_attention_forward``'s parameters (the others take none).
EAGER_DEFAULTS = {"dropout": {"0.0"}, "scaling": {"None"}, "softcap": {"None"}}
CACHE_NAMES = ("past_key_value", "past_key_values", "cache")

SIGNATURE = lay.parse_def(
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
        pass
    """
)
#: Upstream parameters the contract's signature translates, with the defaults known for them.
UPSTREAM_PARAMS: dict[str, set[str | None]] = {
    "self": {None},
    "hidden_states": {None},
    "attention_mask": {None, "None"},
    "position_ids": {None, "None"},
    "position_embeddings": {None, "None"},
    "output_attentions": {"False"},
    "use_cache": {"False"},
    "cache_position": {"None"},
    **{name: {"None"} for name in CACHE_NAMES},
    "**kwargs": {None},
}
PRESENT = "past_key_value = (key_states, value_states) if use_cache else None"
ROTARY_TABLES = """
kv_seq_len = key_states.shape[-2]
if past_key_value is not None:
    kv_seq_len += past_key_value[0].shape[-2]
cos, sin = self.rotary_emb(value_states, position_ids, seq_len=kv_seq_len)
"""
TUPLE_CACHE = f"""
if past_key_value is not None:
    key_states = torch.cat([past_key_value[0], key_states], dim=2)
    value_states = torch.cat([past_key_value[1], value_states], dim=2)
{PRESENT}
"""
MASK_CHECK = """
expected = (query_states.size(0), 1, query_states.size(2), key_states.size(2))
if attention_mask.size() != expected:
    raise ValueError(f"Attention mask should be of size {expected}, but is {attention_mask.size()}")
"""
RETURN_PRESENT = """
if not output_attentions:
    attn_weights = None
return attn_output, attn_weights, past_key_value
"""


def _cache_forms(*templates: str) -> tuple[str, ...]:
    return tuple(t.format(c=c) for t in templates for c in CACHE_NAMES)


_CACHE_UPDATE = r.known(
    *_cache_forms(
        """
        if {c} is not None:
            # sin and cos are specific to RoPE models; cache_position needed for the static cache
            cache_kwargs = {{"sin": sin, "cos": cos, "cache_position": cache_position}}
            key_states, value_states = {c}.update(key_states, value_states, self.layer_idx, cache_kwargs)
        """,
        """
        if {c} is not None:
            key_states, value_states = {c}.update(key_states, value_states, self.layer_idx)
        """,
        """
        if {c} is not None:
            cache_kwargs = {{"sin": sin, "cos": cos}}  # Specific to RoPE models
            key_states, value_states = {c}.update(key_states, value_states, self.layer_idx, cache_kwargs)
        """,
        """
        if {c} is not None:
            key_states, value_states = {c}.update(key_states, value_states, self.layer_idx, kwargs=kwargs)
        """,
    )
)
_ROTARY_CALL = r.known(
    "cos, sin = self.rotary_emb(value_states, position_ids, seq_len=None)",
    "cos, sin = self.rotary_emb(value_states, position_ids)",
    "cos, sin = position_embeddings",
)
#: The legacy forward's rotary call (``kv-seq-len``): tables for the ``kv_seq_len`` upstream counts.
_SEQ_LEN_ROTARY_CALL = r.known("cos, sin = self.rotary_emb(value_states, seq_len=kv_seq_len)")
SEQ_LEN_ROTARY_TABLES = "cos, sin = self.rotary_emb(value_states, position_ids, seq_len=kv_seq_len)"
_USABLE_LENGTH = r.known(
    *_cache_forms(
        """
        if {c} is not None:
            if self.layer_idx is None:
                raise ValueError(
                    f"The cache structure has changed since version v4.36. If you are using {{self.__class__.__name__}} "
                    "for auto-regressive decoding with k/v caching, please make sure to initialize the attention class "
                    "with a layer index."
                )
            kv_seq_len += {c}.get_usable_length(kv_seq_len, self.layer_idx)
        """,
    )
)
TUPLE_CACHE_LENGTH = """
# vacc: the past length of the (key, value) tuple (a layer index only addresses a Cache object)
if past_key_value is not None:
    kv_seq_len += past_key_value[0].shape[-2]
"""
_ROTARY_APPLY = r.known(
    "query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)",
    "query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin, None)",
    "query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin, position_ids)",
)
_DISPATCH = r.known(
    "attention_interface: Callable = eager_attention_forward",
    """
    if self.config._attn_implementation != "eager":
        if self.config._attn_implementation == "sdpa" and kwargs.get("output_attentions", False):
            logger.warning_once(
                "`torch.nn.functional.scaled_dot_product_attention` does not support `output_attentions=True`. Falling back to "
                'eager attention. This warning can be removed using the argument `attn_implementation="eager"` when loading the model.'
            )
        else:
            attention_interface = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]
    """,
    """
    if self.config._attn_implementation != "eager":
        attention_interface = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]
    """,
    """
    attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
        self.config._attn_implementation, eager_attention_forward
    )
    """,
)
_FULL_MASK = r.known(
    "causal_mask = attention_mask[:, :, :, : key_states.shape[-2]]",
    """
    if cache_position is not None:
        causal_mask = attention_mask[:, :, cache_position, : key_states.shape[-2]]
    else:
        causal_mask = attention_mask
    """,
)
_MASK_IF = m.If(
    test=m.Comparison(
        left=m.Name("attention_mask"),
        comparisons=[m.ComparisonTarget(operator=m.IsNot(), comparator=m.Name("None"))],
    )
)
_STATIC_HOOK = r.known('past_key_value = getattr(self, "past_key_value", past_key_value)')
_RETURN_PAIR = r.known("return attn_output, attn_weights")
_RETURN_PRESENT = r.known("return attn_output, attn_weights, past_key_value")
_INTERFACE_CALL = m.Call(func=m.Name("attention_interface") | m.Name(EAGER_FUNCTION))
_MAPPING_CALL = m.Call(func=m.Subscript(value=m.Name(MAPPING)))
#: What the vacc form takes away: a statement naming one of these needs an explicit rule.
PLUMBING = frozenset(
    {*CACHE_NAMES, "cache_position", "position_embeddings", "kwargs", "cache_kwargs", "attention_interface",
     "ALL_ATTENTION_FUNCTIONS", EAGER_FUNCTION}
)  # fmt: skip
#: Decorators of the forward that only rename its cache keyword.
RENAMING_DECORATORS = {"deprecate_kwarg"}


class Attention(VaccCodemod):
    """One eager, tuple-cache ``GemmaAttention``; the variants, the eager function and the class
    mapping removed."""

    NAME = "attention"
    DESCRIPTION = (
        "One eager GemmaAttention with a (key, value) tuple cache; FA2/SDPA variants, eager function and "
        "attention-interface lookup removed."
    )
    TARGETS = ("GemmaAttention", *VARIANTS, MAPPING, EAGER_FUNCTION, "GemmaDecoderLayer.__init__")
    DROPS = {
        **{name: "attention-variants: the vacc form keeps the eager attention only" for name in VARIANTS},
        MAPPING: "attention-variants: the layer builds GemmaAttention itself",
    }
    SHAPES = {
        "three-classes": "GemmaAttention + GemmaFlashAttention2 + GemmaSdpaAttention + GEMMA_ATTENTION_CLASSES",
        "eager-function": "eager_attention_forward(module, query, ...) + an attention-interface lookup in forward; "
        "rotary position embeddings computed by GemmaModel",
        "tuple-cache": "GemmaAttention.forward already the tuple-cache form (this codemod's output)",
        "kv-seq-len": "legacy forward: kv_seq_len from the cache's get_usable_length, rotary tables by seq_len, "
        "padding_mask warning (three-classes)",
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
        if not variants and eager is None and _is_tuple_cache(forward):
            self.met("tuple-cache")
            return module
        if eager is None and not variants:
            raise self.drift(
                "GemmaAttention.forward",
                f"neither {EAGER_FUNCTION} nor the attention variants {', '.join((*VARIANTS, MAPPING))}",
                nearest=s.closest(module.body, EAGER_FUNCTION),
                node=forward,
            )
        if eager is None:
            if present := {*VARIANTS, MAPPING} - variants:
                raise self.drift(
                    "GemmaAttention",
                    f"attention variants missing: {sorted(present)}; expected all of "
                    f"{', '.join((*VARIANTS, MAPPING))} (or {EAGER_FUNCTION})",
                )
            self.met("three-classes")
        elif variants:
            raise self.drift("GemmaAttention", f"both {EAGER_FUNCTION} and {sorted(variants)} present")
        else:
            self.met("eager-function")
        new_forward = self._translate(forward, eager[1] if eager else None, module)
        body = s.class_body(cls)
        body[k] = new_forward
        if eager is not None:
            body = self._own_rotary(body, cls, module)
        new_body = [lay.with_class_body(cls, body) if n == i else x for n, x in enumerate(module.body)]
        gone = variants | ({EAGER_FUNCTION} if eager else set())
        new_body = [x for x in new_body if s.stmt_name(x) not in gone]
        if variants:
            new_body = self._layer_builds_attention(new_body)
        return module.with_changes(body=new_body)

    # -- the forward -----------------------------------------------------------------------------
    def _translate(self, forward: cst.FunctionDef, eager: cst.FunctionDef | None, module) -> cst.FunctionDef:
        unit = "GemmaAttention.forward"
        r.check_params(self, unit, forward, UPSTREAM_PARAMS)
        cache = next((p for p in s.param_names(forward) if p in CACHE_NAMES), "past_key_value")
        for decorator in forward.decorators:
            if _decorator_name(decorator) not in RENAMING_DECORATORS:
                raise self.drift(unit, f"unknown decorator @{_decorator_name(decorator)}", node=decorator)
        account = r.Accountant(self, unit, [], PLUMBING | {cache})
        inline = _Inline(self, eager, account)
        account.rules = [
            r.Rule("padding-mask-warning", r.DROP, "the vacc forward takes no **kwargs", r.padding_mask_warning()),
            r.Rule("tuple-cache-length", r.TRANSLATE, "the past length is the tuple's", _USABLE_LENGTH,
                   lambda _: lay.parse_stmts(TUPLE_CACHE_LENGTH)),
            r.Rule("rotary-tables", r.TRANSLATE, "cos/sin tables for the kv_seq_len upstream counts",
                   _SEQ_LEN_ROTARY_CALL, lambda _: lay.parse_stmts(SEQ_LEN_ROTARY_TABLES)),
            r.Rule("static-cache-hook", r.DROP, "static caches do not exist in the vacc form", _STATIC_HOOK),
            r.Rule("rotary-tables", r.TRANSLATE, "cos/sin tables for kv_seq_len positions", _ROTARY_CALL,
                   lambda _: lay.parse_stmts(ROTARY_TABLES)),
            r.Rule("rotary-gather", r.TRANSLATE, "tables gathered at position_ids", _ROTARY_APPLY,
                   lambda stmt: [_with_position_ids(stmt)]),
            r.Rule("tuple-cache", r.TRANSLATE, "(key, value) tuple cache in, present out", _CACHE_UPDATE,
                   lambda _: lay.parse_stmts(TUPLE_CACHE)),
            r.Rule("attention-dispatch", r.DROP, "the vacc form is the eager attention", _DISPATCH),
            r.Rule("inline-eager", r.TRANSLATE, "the eager attention function's own statements", inline.match,
                   inline.apply),
            *mask_rules(account),
            r.Rule("present", r.TRANSLATE, "present returned; weights only when asked", _RETURN_PAIR,
                   lambda _: lay.parse_stmts(RETURN_PRESENT)),
            r.Rule("present-return", r.KEEP, "already returns (output, weights, present)", _RETURN_PRESENT),
        ]  # fmt: skip
        body = account.block(s.fn_body(forward))
        r.check_upstream_names(self, unit, forward, module)
        if eager is not None:
            r.check_upstream_names(self, EAGER_FUNCTION, eager, module)
        counts = [name for name, _action, _line in account.ledger]
        if any(name in ("tuple-cache-length", "padding-mask-warning") for name in counts) or any(
            _SEQ_LEN_ROTARY_CALL(x) for x in s.fn_body(forward)
        ):
            self.met("kv-seq-len")
        for rule in ("rotary-tables", "rotary-gather", "tuple-cache", "mask-check"):
            if counts.count(rule) != 1:
                raise self.drift(
                    unit,
                    f"rule {rule} applies {counts.count(rule)} times; the vacc form needs it exactly once",
                    node=forward,
                )
        if eager is not None and "attention-dispatch" not in counts:
            raise self.drift(
                unit, "no attention-interface lookup, though the eager function is called", node=forward
            )
        if counts.count("present") + counts.count("present-return") != 1:
            raise self.drift(
                unit, "no single `return attn_output, attn_weights[, past_key_value]`", node=forward
            )
        inline.check_capture(s.fn_body(forward))
        new = forward.with_changes(
            params=SIGNATURE.params, returns=None, decorators=[], lines_after_decorators=()
        )
        new = lay.with_fn_body(new, body)
        left = r.unresolved(new, r.module_names(module))
        if left:
            raise self.drift(
                unit, f"the rewritten forward uses {', '.join(left)}, which nothing defines", node=forward
            )
        return new

    def _own_rotary(self, body: list, cls: cst.ClassDef, module: cst.Module) -> list:
        """``self.rotary_emb`` in ``__init__``, built as GemmaModel builds it (4.48+)."""
        init = s.find_method(cls, "__init__")
        if init is None:
            raise self.drift("GemmaAttention", "GemmaAttention has no __init__")
        if s.find_assignment(s.fn_body(init[1]), "self.rotary_emb") is None:
            body[init[0]] = lay.with_fn_body(
                init[1], [*s.fn_body(init[1]), self._rotary_construction(module)]
            )
        return body

    def _rotary_construction(self, module: cst.Module) -> cst.BaseStatement:
        """``self.rotary_emb = GemmaRotaryEmbedding(...)`` exactly as GemmaModel.__init__ has it."""
        model = s.find_class(module, "GemmaModel")
        init = s.find_method(model[1], "__init__") if model else None
        # read one statement per line: GemmaModel.__init__ is not ours, so not laid out for us
        stmts = s.fn_body(lay.split_lines(init[1])) if init else []
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
        body[i] = lay.with_class_body(layer, lay.replace_in(s.class_body(layer), k, new_fn))
        return body


def mask_rules(account: r.Accountant) -> list[r.Rule]:
    """The mask rules: ``if attention_mask is not None:`` first checks the mask's size (its
    block accounted by ``account``), and the slice of the mask to the key length becomes the
    whole mask."""

    def check(stmt: cst.If) -> list[cst.BaseStatement]:
        block = account.indented(stmt.body)
        return [stmt.with_changes(body=block.with_changes(body=[*lay.parse_stmts(MASK_CHECK), *block.body]))]

    return [
        r.Rule("mask-check", r.TRANSLATE, "the additive mask must be [bsz, 1, q_len, kv_len]",
               lambda x: m.matches(x, _MASK_IF), check),
        r.Rule("full-mask", r.TRANSLATE, "the mask's size is checked, so it is used whole", _FULL_MASK,
               lambda _: lay.parse_stmts("causal_mask = attention_mask")),
    ]  # fmt: skip


class _Inline:
    """The ``inline-eager`` rule: ``attn_output, attn_weights = attention_interface(self, q, k, v,
    mask, dropout=..., scaling=..., **kwargs)`` becomes the statements of
    ``eager_attention_forward``, accounted with the same rules, its parameters bound to the
    call's arguments; keyword arguments that the function would take into ``**kwargs`` (and
    never read) are dropped (``other-backend-kwargs``)."""

    def __init__(self, codemod: VaccCodemod, eager: cst.FunctionDef | None, account: r.Accountant) -> None:
        self.codemod, self.eager, self.account = codemod, eager, account
        self.locals: set[str] = set()
        self.site: cst.BaseStatement | None = None
        self.targets: set[str] = set()

    def match(self, stmt: cst.BaseStatement) -> bool:
        if not m.matches(stmt, m.SimpleStatementLine(body=[m.Assign(value=_INTERFACE_CALL)])):
            return False
        if self.eager is None:
            raise self.codemod.drift(
                "GemmaAttention.forward",
                f"calls an attention interface but there is no {EAGER_FUNCTION}",
                node=stmt,
            )
        return True

    def apply(self, stmt: cst.SimpleStatementLine) -> list[cst.BaseStatement]:
        unit = EAGER_FUNCTION
        assign = stmt.body[0]
        eager = self.eager
        self.site = stmt
        binding = self._bind(assign.value, eager)
        stmts = s.fn_body(eager)
        if s.docstring_stmt(stmts) is not None:
            stmts = stmts[1:]
        if not stmts or not m.matches(stmts[-1], m.SimpleStatementLine(body=[m.Return()])):
            raise self.codemod.drift(unit, f"{EAGER_FUNCTION} does not end in one `return`", node=eager)
        returned = stmts[-1].body[0].value
        if any(m.findall(x, m.Return()) for x in stmts[:-1]):
            raise self.codemod.drift(unit, f"{EAGER_FUNCTION} returns early", node=eager)
        self._no_stale_parameters(stmts[:-1], binding, eager)
        plumbing = self.account.plumbing
        self.account.plumbing = frozenset({"kwargs", "module_kwargs"})
        self.account.unit = unit
        try:
            body = self.account.block(stmts[:-1])
        finally:
            self.account.plumbing, self.account.unit = plumbing, "GemmaAttention.forward"
        body = [_substitute(x, binding) for x in body]
        self.locals = {n for x in stmts[:-1] for n in _assigned(x)} - set(binding)
        self.targets = {n for n in _assigned(stmt)}
        result = _substitute(returned, binding)
        if not s.same_code(result, assign.targets[0].target):
            body.append(cst.SimpleStatementLine([assign.with_changes(value=result)]))
        return body

    def _no_stale_parameters(self, stmts: list, binding: dict[str, cst.BaseExpression], eager) -> None:
        """Inlining binds a parameter to the forward's variable (``key`` -> ``key_states``); once
        the eager function assigns that variable itself (``key_states = repeat_kv(key, ...)``), a
        later read of the parameter would see the new value instead of the argument: drift."""
        for param, value in binding.items():
            if not isinstance(value, cst.Name) or value.value == param:
                continue
            rebound = next((i for i, x in enumerate(stmts) if value.value in _assigned(x)), None)
            if rebound is None:
                continue
            if any(param in r.variables(x) for x in stmts[rebound + 1 :]):
                raise self.codemod.drift(
                    EAGER_FUNCTION,
                    f"reads `{param}` after assigning `{value.value}`, the forward's variable passed as "
                    f"`{param}`: inlined, it would read the new value",
                    node=eager,
                )

    def _bind(self, call: cst.Call, eager: cst.FunctionDef) -> dict[str, cst.BaseExpression]:
        """Eager parameter -> the expression the call passes (or the parameter's default).

        Every default must be one ``EAGER_DEFAULTS`` knows, even where the call passes the
        argument: inlined, a default the call overrides leaves no trace, so a new one (upstream
        changing what its eager path does when called elsewhere) is drift, not dropped."""
        p = eager.params
        params = [*p.posonly_params, *p.params]
        r.check_defaults(self.codemod, EAGER_FUNCTION, eager, EAGER_DEFAULTS)
        binding: dict[str, cst.BaseExpression] = {}
        positional = [a for a in call.args if a.keyword is None and not a.star]
        if len(positional) > len(params):
            raise self.codemod.drift(
                EAGER_FUNCTION, "the interface call passes too many arguments", node=self.site
            )
        for param, arg in zip(params, positional, strict=False):
            binding[param.name.value] = arg.value
        names = {x.name.value for x in (*params, *p.kwonly_params)}
        for arg in call.args:
            if arg.star == "**":
                continue  # **kwargs: what other backends read (other-backend-kwargs)
            if arg.star:
                raise self.codemod.drift(EAGER_FUNCTION, "the interface call passes *args", node=self.site)
            if arg.keyword is None:
                continue
            if arg.keyword.value in names:
                binding[arg.keyword.value] = arg.value
            elif p.star_kwarg is None:
                raise self.codemod.drift(
                    EAGER_FUNCTION, f"the interface call passes `{arg.keyword.value}=`, no parameter of it"
                )
        for param in (*params, *p.kwonly_params):
            if param.name.value not in binding:
                if param.default is None:
                    raise self.codemod.drift(
                        EAGER_FUNCTION, f"the interface call passes no `{param.name.value}`", node=eager
                    )
                binding[param.name.value] = param.default
        return binding

    def check_capture(self, forward_stmts: list[cst.BaseStatement]) -> None:
        """The inlined statements' own variables must not be read after the call site by the
        forward (they would now see the eager function's values)."""
        if self.site is None:
            return
        site = next(i for i, x in enumerate(forward_stmts) if self.match(x))
        after = forward_stmts[site + 1 :]
        used = set().union(set(), *(s.scan(x).names for x in after))
        clash = sorted((self.locals - self.targets) & used)
        if clash:
            raise self.codemod.drift(
                "GemmaAttention.forward",
                f"after the attention call the forward reads {', '.join(clash)}, which the inlined "
                f"{EAGER_FUNCTION} also assigns",
                node=self.site,
            )


def _assigned(stmt: cst.CSTNode) -> set[str]:
    """Names a statement binds (assignment targets at any depth)."""
    out: set[str] = set()
    for small in _walk_small(stmt):
        targets = []
        if isinstance(small, cst.Assign):
            targets = [t.target for t in small.targets]
        elif isinstance(small, cst.AnnAssign | cst.AugAssign):
            targets = [small.target]
        for target in targets:
            out |= {n.value for n in _names_in(target)}
    return out


def _walk_small(node: cst.CSTNode) -> list[cst.CSTNode]:
    found: list[cst.CSTNode] = []

    class V(cst.CSTVisitor):
        def visit_Assign(self, n: cst.Assign) -> None:
            found.append(n)

        def visit_AnnAssign(self, n: cst.AnnAssign) -> None:
            found.append(n)

        def visit_AugAssign(self, n: cst.AugAssign) -> None:
            found.append(n)

    node.visit(V())
    return found


def _names_in(target: cst.CSTNode) -> list[cst.Name]:
    if isinstance(target, cst.Name):
        return [target]
    if isinstance(target, cst.Tuple | cst.List):
        return [n for e in target.elements for n in _names_in(e.value)]
    if isinstance(target, cst.StarredElement):
        return _names_in(target.value)
    return []


class _Substitute(cst.CSTTransformer):
    """Parameters replaced by the expressions bound to them; a compound expression is
    parenthesised unless it is a whole argument (``p=dropout``)."""

    def __init__(self, binding: dict[str, cst.BaseExpression]) -> None:
        super().__init__()
        self.binding = binding

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        return False

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.BaseExpression:
        return updated.with_changes(value=updated.value.visit(self))

    def leave_Arg(self, original: cst.Arg, updated: cst.Arg) -> cst.Arg:
        if isinstance(original.value, cst.Name) and original.value.value in self.binding:
            return updated.with_changes(value=self.binding[original.value.value], keyword=original.keyword)
        return updated.with_changes(keyword=original.keyword)

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.BaseExpression:
        new = self.binding.get(updated.value)
        if new is None:
            return updated
        if isinstance(
            new, cst.Name | cst.Attribute | cst.Call | cst.Subscript | cst.BaseNumber | cst.BaseString
        ):
            return new
        return new.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def _substitute(node: cst.CSTNode, binding: dict[str, cst.BaseExpression]) -> cst.CSTNode:
    return node.visit(_Substitute(binding))


def _decorator_name(decorator: cst.Decorator) -> str:
    node = decorator.decorator
    return s.dotted(node.func if isinstance(node, cst.Call) else node) or ""


def _with_position_ids(stmt: cst.SimpleStatementLine) -> cst.SimpleStatementLine:
    assign = stmt.body[0]
    call = assign.value
    args = list(call.args[:4])
    args[-1] = args[-1].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    args.append(cst.Arg(cst.Name("position_ids")))
    return stmt.with_changes(body=[assign.with_changes(value=call.with_changes(args=args))])


def _is_tuple_cache(forward: cst.FunctionDef) -> bool:
    """The contract's signature and the tuple-cache ``present``: this codemod's own output."""
    same_signature = s.same_code(
        forward.with_changes(body=SIGNATURE.body, decorators=[], returns=None, leading_lines=()),
        SIGNATURE,
    )
    present = r.known(PRESENT)
    return same_signature and any(present(x) for x in s.fn_body(forward))
