"""The rules by which ``mask-generation`` edits ``GemmaModel.forward`` in place.

The vacc ``GemmaModel.forward`` takes the contract's arguments, threads the cache as a tuple
of ``(key, value)`` pairs, builds its mask with ``_prepare_decoder_attention_mask`` and
returns the next cache as the same kind of tuple.  Everything else stays upstream's, in
upstream's order and words: the argument defaults, input checks, the embedding and its
normaliser, the layer list iterated, the final norm, the output class.

Rules (``patches/_rules.py``), in the order they are tried:

* translate ``past-length`` — upstream's conversion of the cache into a ``Cache`` object (or
  its creation), in one of the forms listed in ``_CACHE_CONVERSIONS`` exactly, becomes
  ``past_key_values_length``, read from the tuple; a legacy-format warning inside it is
  dropped with its own comment; the legacy forward's conversion (``prepare-4d-mask``) also
  notes ``use_legacy_cache`` and reads ``past_key_values_length =
  past_key_values.get_usable_length(seq_length)``;
* drop ``cache-bookkeeping`` — ``past_seen_tokens = 0``, ``return_legacy_cache`` handling and
  the computation of ``cache_position``: the vacc model has no cache positions;
* translate ``default-positions`` — ``position_ids`` defaulting to the positions after the
  past (from ``cache_position`` upstream) become ``arange(past, past + seq_len)``;
* translate ``explicit-mask`` — the mask built by ``self._update_causal_mask`` or
  ``create_causal_mask`` becomes the all-ones default plus ``_prepare_decoder_attention_mask``;
* translate ``explicit-mask``, legacy form (``prepare-4d-mask``: Llama 4.36 era, Mistral
  4.38–4.41) — ``if self._attn_implementation == "flash_attention_2": … elif … "sdpa" …: <mask> =
  _prepare_4d_causal_attention_mask_for_sdpa(…) else: <mask> = _prepare_4d_causal_attention_mask(…)``:
  the first two branches are dropped by ``attention-dispatch`` (the vacc attention is the eager
  one; each is recognised exactly), the eager branch's call becomes the all-ones default plus
  ``self._prepare_decoder_attention_mask`` with upstream's own arguments, assigning upstream's
  variable; its ``sliding_window=self.config.sliding_window`` argument is dropped by the rule
  ``sliding-window`` in a family with that trait (the vendor's decision: plain causal mask), and
  is drift in any other;
* drop ``model-rotary`` — ``position_embeddings = self.rotary_emb(...)``: each attention
  computes its own tables;
* translate ``next-cache-init`` — ``next_decoder_cache = None`` becomes an empty tuple;
* translate ``layer-loop`` — ``for decoder_layer in <layers>:`` enumerates the same layers,
  gives each its ``(key, value)`` pair, and its block is accounted by the loop rules:
  ``layer-call`` (the layer called with the tuple cache, through
  ``_gradient_checkpointing_func`` or directly; ``cache_position``, ``position_embeddings``
  and ``**kwargs`` arguments go, the rest stays upstream's), ``collect-present`` (each
  layer's present appended to the next cache);
* translate ``next-cache`` — upstream's conversion of the next cache back to the legacy
  form (``to_legacy_cache()``, by ``isinstance`` or by ``use_legacy_cache``) becomes the tuple
  itself;
* translate ``model-output`` — the output class gets the tuple cache in its cache field
  (``past_key_values`` or ``cache``) and the collected hidden states and attentions.

Where upstream leaves to decorators (``@capture_outputs``, ``@can_return_tuple``,
``@merge_with_config_defaults``, ``@check_model_inputs``; 4.53+) what the contract's forward
must do itself — argument defaults, collecting hidden states and attentions, the tuple
return — the ``decorated-io`` rule adds those statements (upstream has no code for them to
keep).  Every translation above must happen exactly once; a statement naming the cache,
``cache_position``, ``position_embeddings`` or ``**kwargs`` that no rule recognises is drift.
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from patches import _layout as lay
from patches import _rules as r
from patches import _shapes as s

UNIT = "GemmaModel.forward"
CACHE_NAMES = ("past_key_values", "cache")
SIGNATURE = lay.parse_def(
    """
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
        pass
    """
)
UPSTREAM_PARAMS: dict[str, set[str | None]] = {
    "self": {None},
    **{name: {"None"} for name in (
        "input_ids", "attention_mask", "position_ids", "inputs_embeds", "use_cache", "output_attentions",
        "output_hidden_states", "return_dict", "cache_position", *CACHE_NAMES,
    )},
    "**kwargs": {None},
    "**flash_attn_kwargs": {None},
}  # fmt: skip
PLUMBING = frozenset(
    {*CACHE_NAMES, "cache_position", "position_embeddings", "kwargs", "flash_attn_kwargs", "past_seen_tokens",
     "return_legacy_cache", "next_decoder_cache", "mask_kwargs", "causal_mask_mapping", "use_legacy_cache"}
)  # fmt: skip
#: Decorators that intercept the forward's inputs or outputs (the contract's forward does that
#: work itself: ``decorated-io``), that rename the cache keyword, or that only document it.
INTERCEPTING_DECORATORS = {
    "can_return_tuple", "check_model_inputs", "capture_outputs", "merge_with_config_defaults",
}  # fmt: skip
RENAMING_DECORATORS = {"deprecate_kwarg"}
DOC_DECORATORS = {
    "add_start_docstrings_to_model_forward", "replace_return_docstrings", "add_code_sample_docstrings",
    "auto_docstring",
}  # fmt: skip

PAST_LENGTH = """
past_key_values_length = 0
if past_key_values is not None:
    past_key_values_length = past_key_values[0][0].shape[2]
"""
DEFAULT_POSITIONS = """
if position_ids is None:
    position_ids = torch.arange(
        past_key_values_length,
        inputs_embeds.shape[1] + past_key_values_length,
        dtype=torch.long,
        device=inputs_embeds.device,
    )
    position_ids = position_ids.unsqueeze(0)
"""
EXPLICIT_MASK = """
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
"""
LAYER_PAST = "past_key_value = past_key_values[idx] if past_key_values is not None else None"
COLLECT_PRESENT = "if use_cache:\n    next_decoder_cache += (layer_outputs[2 if output_attentions else 1],)\n"
COLLECT_ATTENTIONS = "if output_attentions:\n    all_self_attns += (layer_outputs[1],)\n"
COLLECT_HIDDEN = "if output_hidden_states:\n    all_hidden_states += (hidden_states,)\n"
NEXT_CACHE = "next_cache = next_decoder_cache if use_cache else None"
DEFAULTS = """
output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
output_hidden_states = (
    output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
)
use_cache = use_cache if use_cache is not None else self.config.use_cache
return_dict = return_dict if return_dict is not None else self.config.return_dict
"""
COLLECTORS = """
all_hidden_states = () if output_hidden_states else None
all_self_attns = () if output_attentions else None
"""
TUPLE_RETURN = (
    "if not return_dict:\n"
    "    return tuple(v for v in [hidden_states, next_cache, all_hidden_states, all_self_attns] if v is not None)\n"
)
NEXT_CACHE_INIT = "next_decoder_cache = () if use_cache else None"


def _forms(*templates: str) -> tuple[str, ...]:
    return tuple(t.replace("{c}", c) for t in templates for c in CACHE_NAMES)


_LEGACY_TEST = "use_cache and not isinstance(past_key_values, Cache)"
_WARNING = 'logger.warning_once("...")'  # the text of a warning is not its shape (see _unworded)
_CAST = "past_key_values = DynamicCache.from_legacy_cache(past_key_values)"
#: ``past-length``: the forms of upstream's conversion of the cache into a ``Cache`` object, or
#: its creation, known exactly (comments, layout and warning texts aside).  Each only turns the
#: cache into a ``Cache`` (``DynamicCache()``, ``DynamicCache.from_legacy_cache(...)``), notes
#: ``return_legacy_cache``, reads ``past_seen_tokens`` from it or warns about the legacy
#: format: nothing the tuple-cache model computes with.  A form not listed (a statement more,
#: less or changed) is drift, never absorbed into the translation.
_CACHE_CONVERSIONS = r.known(
    """
    if use_cache:
        if not isinstance(past_key_values, StaticCache):
            past_key_values = DynamicCache.from_legacy_cache(past_key_values)
        past_seen_tokens = past_key_values.get_seq_length()
    """,
    *(  # 4.41-4.46, with and without the warning
        f"if {test}:\n    return_legacy_cache = True\n    {_CAST}{warning}"
        for test in (_LEGACY_TEST, f"{_LEGACY_TEST} and not self.training")
        for warning in ("", f"\n    {_WARNING}")
    ),
    *(  # Mistral 4.42-4.47: the cast first
        f"if {test}:\n    {_CAST}\n    return_legacy_cache = True\n    {_WARNING}"
        for test in (_LEGACY_TEST, f"{_LEGACY_TEST} and not self.training")
    ),
    f"""
    if {_LEGACY_TEST}:
        return_legacy_cache = True
        if past_key_values is None:
            past_key_values = DynamicCache()
        else:
            past_key_values = DynamicCache.from_legacy_cache(past_key_values)
            {_WARNING}
    """,
    # the legacy forward (prepare-4d-mask): notes use_legacy_cache, reads the past length itself
    """
    if use_cache:
        use_legacy_cache = not isinstance(past_key_values, Cache)
        if use_legacy_cache:
            past_key_values = DynamicCache.from_legacy_cache(past_key_values)
        past_key_values_length = past_key_values.get_usable_length(seq_length)
    """,
    *_forms("if use_cache and {c} is None:\n    {c} = DynamicCache()"),
    *_forms("if use_cache and {c} is None:\n    {c} = DynamicCache(config=self.config)"),
)


class _Unworded(cst.CSTTransformer):
    """Every ``logger.warning_once(<strings>)`` as ``logger.warning_once("...")``."""

    def leave_SimpleStatementLine(self, original_node, updated_node):
        if len(updated_node.body) == 1 and r.is_warning(updated_node.body[0]):
            return updated_node.with_changes(body=[cst.Expr(cst.parse_expression(_WARNING))])
        return updated_node


def _is_cache_conversion(stmt: cst.BaseStatement) -> bool:
    return isinstance(stmt, cst.If) and _CACHE_CONVERSIONS(stmt.visit(_Unworded()))


def _conversion_warnings(stmt: cst.BaseStatement) -> list[str]:
    """The legacy-format warnings inside a cache conversion (``past-length`` drops them with it:
    the vacc model takes the tuple cache, there is nothing to warn about)."""
    return r.warnings_in(stmt)


_CACHE_BOOKKEEPING = r.known(
    "past_seen_tokens = 0",
    "return_legacy_cache = False",
    "next_cache = None",
    "if return_legacy_cache:\n    next_cache = next_cache.to_legacy_cache()",
    # Mistral 4.53: refuses the tuple cache, which is the one the vacc model takes
    "if not isinstance(past_key_values, (type(None), Cache)):\n"
    '    raise ValueError("The `past_key_values` should be either a `Cache` object or `None`.")',
    *_forms(
        """
        if cache_position is None:
            past_seen_tokens = {c}.get_seq_length() if {c} is not None else 0
            cache_position = torch.arange(
                past_seen_tokens, past_seen_tokens + inputs_embeds.shape[1], device=inputs_embeds.device
            )
        """,
    ),
    """
    if cache_position is None:
        cache_position = torch.arange(
            past_seen_tokens, past_seen_tokens + inputs_embeds.shape[1], device=inputs_embeds.device
        )
    """,
)
_DEFAULT_POSITIONS = r.known(
    "if position_ids is None:\n    position_ids = cache_position.unsqueeze(0)",
    *_forms(
        """
        if position_ids is None:
            past_seen_tokens = {c}.get_seq_length() if {c} is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)
        """,
    ),
)
_MASK_BUILDERS = {"self._update_causal_mask", "create_causal_mask"}
#: Mistral (4.53+) picks its mask builder by the sliding window: the vacc mask is plain causal
#: whatever the window (the vendor's decision), so the choice goes and the mask is ours.
_SLIDING_WINDOW_CHOICE = r.known(
    "mask_function = create_causal_mask if self.config.sliding_window is None else "
    "create_sliding_window_causal_mask"
)
SLIDING_WINDOW_BUILDER = "mask_function"
#: The legacy forward's mask (``prepare-4d-mask``): the backend's mask builder chosen by
#: ``self._attn_implementation``; the eager branch's ``_prepare_4d_causal_attention_mask`` is translated.
_FA2_TEST = r.known('self._attn_implementation == "flash_attention_2"')
_FA2_MASK = r.known(
    "attention_mask = attention_mask if (attention_mask is not None and 0 in attention_mask) else None"
)
_SDPA_TEST = r.known('self._attn_implementation == "sdpa" and not output_attentions')
_SDPA_MASK = r.known(
    """
    attention_mask = _prepare_4d_causal_attention_mask_for_sdpa(
        attention_mask, (batch_size, seq_length), inputs_embeds, past_key_values_length
    )
    """,
    """
    attention_mask = _prepare_4d_causal_attention_mask_for_sdpa(
        attention_mask,
        (batch_size, seq_length),
        inputs_embeds,
        past_key_values_length,
        sliding_window=self.config.sliding_window,
    )
    """,
)
LEGACY_MASK_BUILDER = "_prepare_4d_causal_attention_mask"
LEGACY_MASK_BUILDERS = {LEGACY_MASK_BUILDER, "_prepare_4d_causal_attention_mask_for_sdpa"}
_SLIDING_WINDOW_ARG = m.Arg(
    keyword=m.Name("sliding_window"),
    value=m.Attribute(
        value=m.Attribute(value=m.Name("self"), attr=m.Name("config")), attr=m.Name("sliding_window")
    ),
)
LEGACY_EXPLICIT_MASK = """
# vacc: explicit additive mask, all ones over past + current by default
if attention_mask is None:
    attention_mask = torch.ones(
        (inputs_embeds.shape[0], inputs_embeds.shape[1] + past_key_values_length),
        dtype=torch.bool,
        device=inputs_embeds.device,
    )
"""
_MODEL_ROTARY = r.known(
    "position_embeddings = self.rotary_emb(hidden_states, position_ids)",
    "position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)",
)
_NEXT_CACHE_INIT = r.known("next_decoder_cache = None")
_COLLECT_PRESENT = r.known(
    "if use_cache:\n    next_decoder_cache = layer_outputs[2 if output_attentions else 1]",
)
_NEXT_CACHE = r.known(
    """
    if use_cache:
        next_cache = (
            next_decoder_cache.to_legacy_cache() if isinstance(next_decoder_cache, Cache) else next_decoder_cache
        )
    """,
    "next_cache = next_decoder_cache if use_cache else None",
    """
    if use_cache:
        next_cache = next_decoder_cache.to_legacy_cache() if use_legacy_cache else next_decoder_cache
    """,
)
_LAYER_LOOP = m.For(target=m.Name("decoder_layer"))
_LAYER_CALL = m.Call(func=m.Name("decoder_layer"))
_CHECKPOINT_CALL = m.Call(func=s.self_attr("_gradient_checkpointing_func"))
#: Cache-field values of upstream's output that the tuple cache replaces.
_CACHE_FIELD_VALUES = r.known(
    *_forms("{c}", "{c} if use_cache else None"), "next_cache", "next_decoder_cache"
)


def _is_partial_layer_call(node: cst.BaseExpression) -> bool:
    """``partial(decoder_layer.__call__, **flash_attn_kwargs)`` (or ``**kwargs``): the layer with
    the forward's own keyword arguments bound, which the vacc layer does not take."""
    return (
        isinstance(node, cst.Call)
        and s.dotted(node.func) == "partial"
        and len(node.args) == 2
        and node.args[0].star == ""
        and node.args[0].keyword is None
        and s.dotted(node.args[0].value) == "decoder_layer.__call__"
        and node.args[1].star == "**"
        and s.dotted(node.args[1].value) in ("kwargs", "flash_attn_kwargs")
    )


def _assigns_call(stmt: cst.CSTNode, names: set[str]) -> cst.Call | None:
    """The call of ``x = f(...)`` / ``x: T = f(...)`` when ``f`` is one of ``names``."""
    if not isinstance(stmt, cst.SimpleStatementLine) or len(stmt.body) != 1:
        return None
    hit = s.assignment(stmt.body[0])
    value = hit[1] if hit else None
    if isinstance(value, cst.Call) and s.dotted(value.func) in names:
        return value
    return None


class ModelForward:
    """Accounts for upstream's ``GemmaModel.forward`` (see the module docstring)."""

    def __init__(
        self, codemod, forward: cst.FunctionDef, module: cst.Module, layers_checkpoint_themselves: bool
    ):
        self.codemod, self.forward, self.module = codemod, forward, module
        self.self_checkpointing = layers_checkpoint_themselves
        self.account = r.Accountant(codemod, UNIT, [], PLUMBING)
        self.account.rules = [
            r.Rule("past-length", r.TRANSLATE, "the past length is read from the tuple cache (once)",
                   _is_cache_conversion, self._past_length, _conversion_warnings),
            r.Rule("cache-bookkeeping", r.DROP, "the vacc model has no Cache objects or cache positions",
                   _CACHE_BOOKKEEPING),
            r.Rule("default-positions", r.TRANSLATE, "default positions continue from the past length",
                   _DEFAULT_POSITIONS, lambda _: lay.parse_stmts(DEFAULT_POSITIONS)),
            r.Rule("explicit-mask", r.TRANSLATE, "the 4D additive mask from _prepare_decoder_attention_mask",
                   self._is_mask, self._mask),
            r.Rule("explicit-mask", r.TRANSLATE, "the 4D additive mask from _prepare_decoder_attention_mask, "
                   "for the eager attention", self._is_legacy_mask, self._legacy_mask),
            r.Rule("model-rotary", r.DROP, "each attention computes its own cos/sin tables", _MODEL_ROTARY),
            r.Rule("next-cache-init", r.TRANSLATE, "the next cache is a tuple", _NEXT_CACHE_INIT,
                   lambda _: lay.parse_stmts(NEXT_CACHE_INIT)),
            r.Rule("layer-loop", r.TRANSLATE, "each layer gets its (key, value) pair", lambda x: m.matches(
                x, _LAYER_LOOP), self._loop),
            r.Rule("next-cache", r.TRANSLATE, "the next cache is the tuple collected", _NEXT_CACHE,
                   lambda _: lay.parse_stmts(NEXT_CACHE)),
            r.Rule("model-output", r.TRANSLATE, "the tuple cache in the output's cache field",
                   self._is_output, self._output),
        ]  # fmt: skip
        if codemod.trait("sliding_window"):  # a family whose upstream may mask to a window
            self.account.rules.append(
                r.Rule("sliding-window", r.DROP, "the vacc mask is plain causal: no sliding window (vendor "
                       "decision)", _SLIDING_WINDOW_CHOICE)
            )  # fmt: skip
        self.loop_rules = [
            r.Rule("layer-call", r.TRANSLATE, "the layer called with its tuple cache", self._is_layer_call,
                   self._layer_call),
            r.Rule("checkpointed-layer-call", r.TRANSLATE, "the layer called with its tuple cache",
                   self._is_checkpointing_branch, self._checkpointing_branch),
            r.Rule("collect-present", r.TRANSLATE, "each layer's present appended to the next cache",
                   _COLLECT_PRESENT, lambda _: lay.parse_stmts(COLLECT_PRESENT)),
        ]  # fmt: skip
        self.cache_field = "past_key_values"

    # -- the whole forward -----------------------------------------------------------------------
    def translate(self) -> cst.FunctionDef:
        forward = self.forward
        r.check_params(self.codemod, UNIT, forward, UPSTREAM_PARAMS)
        decorators = []
        self.intercepting = {r.decorator_name(d) for d in forward.decorators} & INTERCEPTING_DECORATORS
        for decorator in forward.decorators:
            name = r.decorator_name(decorator)
            if name in DOC_DECORATORS:
                decorators.append(decorator)
            elif name not in INTERCEPTING_DECORATORS | RENAMING_DECORATORS:
                raise self.codemod.drift(UNIT, f"unknown decorator @{name}", node=decorator)
        stmts = s.fn_body(forward)
        body = self.account.block(stmts)
        r.check_upstream_names(self.codemod, UNIT, forward, self.module)
        ledger = [name for name, _a, _l in self.account.ledger]
        if "past-length" not in ledger:
            raise self.codemod.drift(
                UNIT, "no conversion of the cache to a Cache object (rule past-length)", node=forward
            )
        uses_seen = any(line == "past_seen_tokens = 0" for _n, _a, line in self.account.ledger)
        if uses_seen and not any(c.endswith(".get_seq_length") for c in s.calls(forward)):
            raise self.codemod.drift(  # upstream's positions would start at 0 at every step
                UNIT, "past_seen_tokens stays 0: upstream never reads the cache's length", node=forward
            )
        for rule in ("explicit-mask", "layer-loop", "model-output"):
            if ledger.count(rule) != 1:
                raise self.codemod.drift(
                    UNIT, f"rule {rule} applies {ledger.count(rule)} times; the vacc form needs it exactly once",
                    node=forward,
                )  # fmt: skip
        body = self._decorated_io(body, ledger)
        new = forward.with_changes(
            params=SIGNATURE.params, returns=None, decorators=decorators,
            lines_after_decorators=forward.lines_after_decorators if decorators else (),
        )  # fmt: skip
        new = lay.with_fn_body(new, body)
        left = r.unresolved(new, r.module_names(self.module))
        if left:
            raise self.codemod.drift(
                UNIT, f"the rewritten forward uses {', '.join(left)}, which nothing defines", node=forward
            )
        return new

    def _decorated_io(self, body: list, ledger: list[str]) -> list:
        """``decorated-io``: what upstream leaves to its decorators (4.51+), written out, and the
        tuple-cache statements where upstream keeps its cache in a ``Cache`` object (4.48+).

        Each is added only where upstream has no statement of its own for it to keep: with no
        intercepting decorator, a missing argument default, collection or tuple return is
        upstream's choice (carried as it is), and with ``next_decoder_cache`` in upstream, a
        missing cache statement is drift — never re-added over an upstream change."""
        assigned = {a for x in body for a in _targets(x)}
        params = set(s.param_names(self.forward))
        decorated = bool(self.intercepting)
        fills_defaults = bool(self.intercepting & {"merge_with_config_defaults", "check_model_inputs"})
        head = 1 if s.docstring_stmt(body) is not None else 0
        defaults = [
            x
            for x in lay.parse_stmts(DEFAULTS)
            if not _targets(x) & assigned and (fills_defaults or not _targets(x) & params)
        ]
        if defaults:
            body[head:head] = _marked(defaults, "vacc: argument defaults (upstream: decorators)")
        loop = _index(body, lambda x: m.matches(x, m.For()))
        if loop is None:
            raise self.codemod.drift(
                UNIT, "the layer loop is not a statement of the forward itself", node=self.forward
            )
        legacy = "next_decoder_cache" in set().union(*(r.variables(x) for x in s.fn_body(self.forward)))
        for rule in ("next-cache-init", "collect-present", "next-cache"):
            if legacy and rule not in ledger:
                raise self.codemod.drift(
                    UNIT, f"upstream keeps next_decoder_cache but rule {rule} found nothing to translate",
                    node=self.forward,
                )  # fmt: skip
        before: list = []
        if decorated and "all_hidden_states" not in assigned:
            before += lay.parse_stmts(COLLECTORS)
        if not legacy:
            before += lay.parse_stmts(NEXT_CACHE_INIT)
        body[loop:loop] = before
        loop += len(before)
        if decorated and "all_hidden_states" not in assigned:
            norm = _index(body, r.known("hidden_states = self.norm(hidden_states)"), start=loop)
            if norm is None:
                raise self.codemod.drift(
                    UNIT, "no `hidden_states = self.norm(hidden_states)` after the layer loop, after which the "
                    "last hidden states are collected (upstream leaves that to a decorator)", node=self.forward,
                )  # fmt: skip
            body[norm + 1 : norm + 1] = lay.parse_stmts(COLLECT_HIDDEN)
        output = _index(body, self._is_output, start=loop)
        if not legacy:
            body[output:output] = lay.parse_stmts(NEXT_CACHE)
            output += 1
        handled = any(_returns_to_tuple(x) for x in body[output : output + 2])
        if decorated and not any(r.known(TUPLE_RETURN)(x) for x in body) and not handled:
            body[output:output] = lay.parse_stmts(TUPLE_RETURN)
        return body

    def _past_length(self, stmt: cst.BaseStatement) -> list[cst.BaseStatement]:
        """The first conversion becomes the past length; a repeated one (4.42–4.44) nothing.  The
        legacy conversion, which reads ``past_key_values_length`` itself, becomes that read alone
        (upstream's own ``past_key_values_length = 0`` stands before it)."""
        done = any(name == "past-length" for name, _a, _l in self.account.ledger[:-1])
        if done:
            return []
        if "past_key_values_length" in {a for x in m.findall(stmt, m.Assign()) for a in _assign_names(x)}:
            return lay.parse_stmts(PAST_LENGTH)[1:]
        return lay.parse_stmts(PAST_LENGTH)

    # -- the mask --------------------------------------------------------------------------------
    def _is_mask(self, stmt: cst.BaseStatement) -> bool:
        builders = _MASK_BUILDERS | (
            {SLIDING_WINDOW_BUILDER} if self.codemod.trait("sliding_window") else set()
        )
        call = _assigns_call(stmt, builders)
        return call is not None and _targets(stmt) == {"causal_mask"}

    def _mask(self, stmt: cst.BaseStatement) -> list[cst.BaseStatement]:
        return lay.parse_stmts(EXPLICIT_MASK)

    def _is_legacy_mask(self, stmt: cst.BaseStatement) -> bool:
        """The legacy chain exactly (``_is_legacy_mask``); an ``if`` on ``self._attn_implementation``
        that calls a legacy mask builder in any other form is drift, named at that ``if``."""
        if _is_legacy_mask(stmt):
            return True
        if (
            isinstance(stmt, cst.If)
            and "self._attn_implementation" in {s.dotted(x) for x in m.findall(stmt.test, m.Attribute())}
            and LEGACY_MASK_BUILDERS & set(s.calls(stmt))
        ):
            raise self.codemod.drift(
                UNIT,
                "the mask builder chosen by self._attn_implementation is not the known form (flash-attention "
                "2D mask, _prepare_4d_causal_attention_mask_for_sdpa, else _prepare_4d_causal_attention_mask)",
                node=stmt,
            )
        return False

    def _legacy_mask(self, stmt: cst.If) -> list[cst.BaseStatement]:
        """The legacy chain (see ``_is_legacy_mask``): the flash-attention and SDPA branches dropped
        (``attention-dispatch``), the eager branch's ``_prepare_4d_causal_attention_mask(...)``
        becoming the all-ones default and ``self._prepare_decoder_attention_mask`` with upstream's
        arguments; its ``sliding_window=`` argument dropped (``sliding-window``) where the family
        has the trait."""
        sdpa = stmt.orelse
        eager = sdpa.orelse.body.body[0]
        small = eager.body[0]
        call = small.value
        comments = [
            cst.EmptyLine(comment=cst.Comment(f"# vacc: dropped (attention-dispatch): {line}"))
            for line in (
                f"if {r.one_line(stmt.test)}: {r.first_line(stmt.body.body[0])}",
                f"elif {r.one_line(sdpa.test)}: {r.first_line(sdpa.body.body[0])}",
            )
        ]
        self.account.ledger += [
            ("attention-dispatch", r.DROP, f"if {r.one_line(stmt.test)}:"),
            ("attention-dispatch", r.DROP, f"elif {r.one_line(sdpa.test)}:"),
        ]
        positional = [a for a in call.args if a.keyword is None and not a.star]
        if len(positional) != 4 or not m.matches(positional[0].value, m.Name("attention_mask")):
            raise self.codemod.drift(
                UNIT, f"{LEGACY_MASK_BUILDER} is not called with (attention_mask, input_shape, inputs_embeds, "
                "past_key_values_length)", node=stmt,
            )  # fmt: skip
        kept = []
        for arg in call.args:
            if arg.keyword is None and not arg.star:
                kept.append(arg)
            elif m.matches(arg, _SLIDING_WINDOW_ARG) and self.codemod.trait("sliding_window"):
                comments.append(cst.EmptyLine(
                    comment=cst.Comment(f"# vacc: dropped (sliding-window): {r.one_line(arg).rstrip(',').strip()}")
                ))  # fmt: skip
                self.account.ledger.append(("sliding-window", r.DROP, r.one_line(arg).rstrip(",").strip()))
            else:
                raise self.codemod.drift(
                    UNIT, f"{LEGACY_MASK_BUILDER} is passed `{r.one_line(arg).rstrip(',').strip()}`, which no rule "
                    "knows", node=stmt,
                )  # fmt: skip
        kept[-1] = kept[-1].with_changes(comma=call.args[-1].comma)  # upstream's layout before `)`
        new_call = call.with_changes(
            func=cst.parse_expression("self._prepare_decoder_attention_mask"), args=kept
        )
        default = lay.parse_stmts(LEGACY_EXPLICIT_MASK)
        default[0] = default[0].with_changes(leading_lines=[*comments, *default[0].leading_lines])
        return [*default, eager.with_changes(body=[small.with_changes(value=new_call)], leading_lines=())]

    # -- the layer loop ----------------------------------------------------------------------------
    def _loop(self, loop: cst.For) -> list[cst.BaseStatement]:
        loop_account = r.Accountant(self.codemod, UNIT, self.loop_rules, PLUMBING)
        body = loop_account.block(loop.body.body)
        ledger = [name for name, _a, _l in loop_account.ledger]
        self.account.ledger += loop_account.ledger
        calls = ledger.count("layer-call") + ledger.count("checkpointed-layer-call")
        if calls != 1:
            raise self.codemod.drift(UNIT, f"the layer loop calls its layer {calls} times", node=loop)
        # upstream collects through its decorators (4.51+): the collection is added, unless
        # upstream keeps collectors of its own (then what its loop does is carried as it is)
        upstream = {a for x in s.fn_body(self.forward) for a in _targets(x)}
        decorated = bool(self.intercepting)
        if decorated and "all_hidden_states" not in upstream:
            if not any(r.known(COLLECT_HIDDEN)(x) for x in body):
                body = [*lay.parse_stmts(COLLECT_HIDDEN), *body]
        if "collect-present" not in ledger and "next_decoder_cache" not in r.variables(loop):
            body += lay.parse_stmts(COLLECT_PRESENT)  # 4.48+: upstream's cache was a Cache object
        if decorated and "all_self_attns" not in upstream:
            if not any(r.known(COLLECT_ATTENTIONS)(x) for x in body):
                body += lay.parse_stmts(COLLECT_ATTENTIONS)
        body = [*lay.parse_stmts(LAYER_PAST), *body]
        body[0] = body[0].with_changes(leading_lines=[])
        new_iter = cst.Call(func=cst.Name("enumerate"), args=[cst.Arg(loop.iter)])
        target = cst.Tuple(
            [cst.Element(cst.Name("idx")), cst.Element(cst.Name("decoder_layer"))], lpar=[], rpar=[]
        )
        return [loop.with_changes(target=target, iter=new_iter, body=loop.body.with_changes(body=body))]

    def _is_layer_call(self, stmt: cst.BaseStatement) -> bool:
        return _assigns_call(stmt, {"decoder_layer"}) is not None

    def _layer_call(self, stmt: cst.SimpleStatementLine) -> list[cst.BaseStatement]:
        call = _assigns_call(stmt, {"decoder_layer"})
        new_call = self._retarget(call, stmt)
        target = _targets(stmt)
        small = stmt.body[0]
        if target == {"layer_outputs"}:
            return [stmt.with_changes(body=[small.with_changes(value=new_call)])]
        if target == {"hidden_states"} and isinstance(small, cst.Assign):
            # 4.54+: the layer returns its hidden states alone; the vacc layer returns a tuple
            assign = cst.parse_statement("layer_outputs = decoder_layer()")
            assign = assign.with_changes(body=[assign.body[0].with_changes(value=new_call)])
            return [assign, *lay.parse_stmts("hidden_states = layer_outputs[0]")]
        raise self.codemod.drift(UNIT, "the layer call's result goes to neither layer_outputs nor hidden_states",
                                 node=stmt)  # fmt: skip

    def _retarget(self, call: cst.Call, stmt: cst.CSTNode) -> cst.Call:
        return r.retarget_args(
            self.codemod, UNIT, call,
            dropped=("cache_position", "position_embeddings"),
            renamed={"past_key_value": "past_key_value", "past_key_values": "past_key_value", "cache": "past_key_value"},
            needed=("position_ids", "past_key_value", "output_attentions", "use_cache"),
            node=stmt,
        )  # fmt: skip

    def _is_checkpointing_branch(self, stmt: cst.BaseStatement) -> bool:
        return (
            isinstance(stmt, cst.If)
            and r.known("self.gradient_checkpointing and self.training")(
                cst.SimpleStatementLine([cst.Expr(stmt.test)])
            )
            and isinstance(stmt.orelse, cst.Else)
        )

    def _checkpointing_branch(self, stmt: cst.If) -> list[cst.BaseStatement]:
        """``if checkpointing: layer_outputs = self._gradient_checkpointing_func(decoder_layer.__call__,
        ...)`` ``else: layer_outputs = decoder_layer(...)``: both calls pass the tuple cache."""
        then, other = list(stmt.body.body), list(stmt.orelse.body.body)
        if (
            len(then) != 1
            or len(other) != 1
            or _assigns_call(then[0], {"self._gradient_checkpointing_func"}) is None
        ):
            raise self.codemod.drift(
                UNIT, "unknown gradient checkpointing branch in the layer loop", node=stmt
            )
        if not self._is_layer_call(other[0]):
            raise self.codemod.drift(UNIT, "the checkpointing branch's else calls no layer", node=stmt)
        direct = self._layer_call(other[0])
        if self.self_checkpointing:
            raise self.codemod.drift(UNIT, "layers checkpoint themselves and through the model", node=stmt)
        checkpoint = _assigns_call(then[0], {"self._gradient_checkpointing_func"})
        args = []
        for arg in checkpoint.args:
            name = s.dotted(arg.value)
            if arg.keyword is not None or arg.star:
                raise self.codemod.drift(UNIT, "the checkpointed layer call passes keywords", node=stmt)
            if name in ("cache_position", "position_embeddings"):
                continue
            if _is_partial_layer_call(arg.value):  # Mistral 4.49-4.51: the forward's ** go, as in
                arg = arg.with_changes(value=arg.value.args[0].value)  # the direct call
            if name in ("past_key_value", "past_key_values", "cache"):
                arg = arg.with_changes(value=cst.Name("past_key_value"))
            args.append(arg)
        args[-1] = args[-1].with_changes(comma=checkpoint.args[-1].comma)
        small = then[0].body[0]
        new_then = then[0].with_changes(body=[small.with_changes(value=checkpoint.with_changes(args=args))])
        return [
            stmt.with_changes(
                body=stmt.body.with_changes(body=[new_then]),
                orelse=stmt.orelse.with_changes(body=stmt.orelse.body.with_changes(body=direct)),
            )
        ]

    # -- the output ----------------------------------------------------------------------------------
    def _output_call(self, stmt: cst.BaseStatement) -> cst.Call | None:
        if not isinstance(stmt, cst.SimpleStatementLine) or len(stmt.body) != 1:
            return None
        small = stmt.body[0]
        value = small.value if isinstance(small, cst.Return | cst.Assign) else None
        if isinstance(value, cst.Call) and any(
            m.matches(a, m.Arg(keyword=m.Name("last_hidden_state"))) for a in value.args
        ):
            return value
        return None

    def _is_output(self, stmt: cst.BaseStatement) -> bool:
        return self._output_call(stmt) is not None

    def _output(self, stmt: cst.SimpleStatementLine) -> list[cst.BaseStatement]:
        call = self._output_call(stmt)
        fields = {a.keyword.value: a for a in call.args if a.keyword}
        cache = [f for f in fields if f in CACHE_NAMES]
        if len(cache) != 1:
            raise self.codemod.drift(UNIT, "the output has no single past_key_values|cache field", node=stmt)
        self.cache_field = cache[0]
        if not _CACHE_FIELD_VALUES(cst.SimpleStatementLine([cst.Expr(fields[cache[0]].value)])):
            raise self.codemod.drift(
                UNIT,
                f"the output's {cache[0]}= is `{s.render(fields[cache[0]].value)}`, which no rule knows",
                node=stmt,
            )
        args = [
            a.with_changes(value=cst.Name("next_cache")) if a is fields[cache[0]] else a for a in call.args
        ]
        extra = [("hidden_states", "all_hidden_states"), ("attentions", "all_self_attns")]
        missing = [(k, v) for k, v in extra if k not in fields]
        if missing:
            between = (
                args[-2].comma if len(args) > 1 else cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
            )
            last = args[-1].comma
            args[-1] = args[-1].with_changes(comma=between)
            for k, v in missing:
                args.append(cst.Arg(cst.Name(v), keyword=cst.Name(k), equal=cst.AssignEqual(
                    whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")), comma=between))  # fmt: skip
            args[-1] = args[-1].with_changes(comma=last)
        small = stmt.body[0]
        return [stmt.with_changes(body=[small.with_changes(value=call.with_changes(args=args))])]


def _targets(stmt: cst.CSTNode) -> set[str]:
    """Names a simple statement line assigns at its top level."""
    out: set[str] = set()
    if isinstance(stmt, cst.SimpleStatementLine):
        for small in stmt.body:
            hit = s.assignment(small)
            if hit:
                out.add(hit[0])
    return out


def _index(body: list, pred, start: int = 0) -> int | None:
    """Index of the first statement of ``body`` from ``start`` on matching ``pred``."""
    for i in range(start, len(body)):
        if pred(body[i]):
            return i
    return None


def _marked(stmts: list, comment: str) -> list:
    stmts[0] = stmts[0].with_changes(leading_lines=[cst.EmptyLine(comment=cst.Comment("# " + comment))])
    return stmts


def _returns_to_tuple(stmt: cst.CSTNode) -> bool:
    """``return output if return_dict else output.to_tuple()`` handles the tuple return itself."""
    return (
        any(
            isinstance(x, cst.Return) and any(c.endswith(".to_tuple") for c in s.calls(x))
            for x in s.small_statements([stmt])
        )
        if isinstance(stmt, cst.SimpleStatementLine)
        else False
    )


def _is_legacy_mask(stmt: cst.BaseStatement) -> bool:
    """``if self._attn_implementation == "flash_attention_2": <FA2 2D mask> elif
    self._attn_implementation == "sdpa" and not output_attentions: <SDPA mask> else: attention_mask =
    _prepare_4d_causal_attention_mask(...)``, the first two branches exactly as upstream has them
    and each branch one statement."""
    if not (isinstance(stmt, cst.If) and _one(stmt.body) and isinstance(stmt.orelse, cst.If)):
        return False
    sdpa = stmt.orelse
    if not (_one(sdpa.body) and isinstance(sdpa.orelse, cst.Else) and _one(sdpa.orelse.body)):
        return False
    if not (_expr_is(_FA2_TEST, stmt.test) and _FA2_MASK(stmt.body.body[0])):
        return False
    if not (_expr_is(_SDPA_TEST, sdpa.test) and _SDPA_MASK(sdpa.body.body[0])):
        return False
    eager = sdpa.orelse.body.body[0]
    return (
        isinstance(eager, cst.SimpleStatementLine)
        and len(eager.body) == 1
        and isinstance(eager.body[0], cst.Assign)
        and _targets(eager) == {"attention_mask"}
        and isinstance(eager.body[0].value, cst.Call)
        and s.dotted(eager.body[0].value.func) == LEGACY_MASK_BUILDER
    )


def _one(block: cst.BaseSuite) -> bool:
    return isinstance(block, cst.IndentedBlock) and len(block.body) == 1


def _expr_is(known, expr: cst.BaseExpression) -> bool:
    return known(cst.SimpleStatementLine([cst.Expr(expr)]))


def _assign_names(assign: cst.Assign) -> set[str]:
    return {s.dotted(t.target) or "" for t in assign.targets}
