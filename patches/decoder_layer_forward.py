"""decoder-layer-forward — GemmaDecoderLayer forward with the tuple cache and tuple outputs.

Why: the traced decoder layer passes one layer's ``(key, value)`` in and returns it, and
returns a plain tuple, so the model loop can thread the cache without ``Cache`` objects,
``cache_position`` or position embeddings computed elsewhere.

Contract (SPEC §4.5): ``forward(hidden_states, attention_mask=None, position_ids=None,
past_key_value=None, output_attentions=False, use_cache=False)`` returns
``(hidden_states,)`` plus the attention weights when asked, plus ``present`` when caching.

How: upstream's forward is edited in place (``patches/_rules.py``).  Its signature becomes
the contract's (every upstream parameter must be one the contract translates, with a known
default); its statements are accounted for one by one:

* kept — everything that mentions none of the plumbing the vacc form takes away (the cache
  argument, ``cache_position``, ``position_embeddings``, ``**kwargs``): the docstring, the
  norms, the residuals, the MLP, the output tuple — whatever upstream computes, in its order;
* translated — ``self-attn-call``: the ``self.self_attn(...)`` call unpacks ``(hidden,
  weights, present)``, passes the cache as ``past_key_value`` and ``output_attentions``/
  ``use_cache``, and no longer passes ``cache_position``, ``position_embeddings`` (each
  attention computes its own tables) or ``**kwargs``; its other arguments stay upstream's;
  ``tuple-outputs``: ``return hidden_states`` (4.54+) becomes the output tuple;
  ``present-output``: ``return outputs`` gains ``present`` when upstream's attention call
  returns none (two names unpacked); one that returns it must be appended by upstream itself,
  else drift;
* dropped — ``padding-mask-warning`` (a deprecation warning about a ``kwargs`` entry; the
  vacc forward takes no ``**kwargs``), ``deprecate-kwarg`` (a decorator renaming the cache
  argument).

Shapes recognised:

* ``cache-position`` — forward taking ``cache_position`` (and ``**kwargs``) and passing them
  to ``self.self_attn``;
* ``position-embeddings`` — forward also (or instead) taking the ``position_embeddings``
  computed by ``GemmaModel`` (4.48+; the cache argument named ``past_key_value``,
  ``past_key_values`` or ``cache``, possibly returning the bare hidden states);
* ``past-key-value`` — forward taking neither: ``(hidden_states, attention_mask, position_ids,
  past_key_value, output_attentions, use_cache[, **kwargs])`` with the cache handed to
  ``self.self_attn`` as ``past_key_value`` (Llama 4.36 era; Mistral 4.38–4.41, whose
  ``**kwargs`` only feed the ``padding-mask-warning``);
* ``tuple-outputs`` — the contract's signature already (this codemod's output: the rules
  leave it as it is).
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from patches import _layout as lay
from patches import _rules as r
from patches import _shapes as s
from patches._base import VaccCodemod

UNIT = "GemmaDecoderLayer.forward"
CACHE_NAMES = ("past_key_value", "past_key_values", "cache")
SIGNATURE = lay.parse_def(
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
        pass
    """
)
#: Upstream parameters the contract's signature translates, with the defaults known for them.
UPSTREAM_PARAMS: dict[str, set[str | None]] = {
    "self": {None},
    "hidden_states": {None},
    "attention_mask": {"None"},
    "position_ids": {"None"},
    "output_attentions": {"False"},
    "use_cache": {"False"},
    "cache_position": {"None"},
    "position_embeddings": {"None"},
    **{name: {"None"} for name in CACHE_NAMES},
    "**kwargs": {None},
}
PLUMBING = frozenset({*CACHE_NAMES, "cache_position", "position_embeddings", "kwargs"})
#: Arguments of the self_attn call that the vacc attention does not take, passed as themselves.
DROPPED_ARGS = ("cache_position", "position_embeddings")
#: Arguments the vacc attention needs, each passed as the variable of the same name.
NEEDED_ARGS = ("attention_mask", "position_ids", "past_key_value", "output_attentions", "use_cache")
TUPLE_OUTPUTS = """
outputs = (hidden_states,)

if output_attentions:
    outputs += (self_attn_weights,)

if use_cache:
    outputs += (present_key_value,)

return outputs
"""
_PRESENT_APPENDED = r.known("if use_cache:\n    outputs += (present_key_value,)")
_PADDING_MASK_WARNING = r.padding_mask_warning()
_SELF_ATTN = m.SimpleStatementLine(
    body=[m.Assign(targets=[m.AssignTarget(target=m.Tuple())], value=m.Call(func=s.self_attr("self_attn")))]
)


class DecoderLayerForward(VaccCodemod):
    """``GemmaDecoderLayer.forward`` with the tuple cache and tuple outputs."""

    NAME = "decoder-layer-forward"
    DESCRIPTION = "GemmaDecoderLayer.forward with one layer's tuple cache in and tuple outputs."
    TARGETS = (UNIT,)
    SHAPES = {
        "cache-position": "forward(..., cache_position, **kwargs) passing them on to self.self_attn",
        "position-embeddings": "forward(..., position_embeddings, **kwargs) with rotary tables from GemmaModel",
        "past-key-value": "forward(..., past_key_value, output_attentions, use_cache[, **kwargs]) with neither "
        "cache_position nor position_embeddings",
        "tuple-outputs": "the tuple-cache forward this codemod writes",
    }

    def rewrite(self, module: cst.Module) -> cst.Module:
        hit = s.find_class(module, "GemmaDecoderLayer")
        if hit is None:
            raise self.drift(
                UNIT,
                "no module-level class GemmaDecoderLayer",
                nearest=next((n for n in s.names(module.body) if "Layer" in n), None),
            )
        i, cls = hit
        method = s.find_method(cls, "forward")
        if method is None:
            raise self.drift(UNIT, "GemmaDecoderLayer has no forward", anchor="GemmaDecoderLayer")
        k, forward = method
        params = s.param_names(forward)
        r.check_params(self, UNIT, forward, UPSTREAM_PARAMS)
        for decorator in forward.decorators:
            if r.decorator_name(decorator) != "deprecate_kwarg":
                raise self.drift(UNIT, f"unknown decorator @{r.decorator_name(decorator)}", node=decorator)
        if s.same_code(forward.with_changes(body=SIGNATURE.body, returns=None, leading_lines=()), SIGNATURE):
            self.met("tuple-outputs")
        elif "position_embeddings" in params:
            self.met("position-embeddings")
        elif "cache_position" in params:
            self.met("cache-position")
        elif "past_key_value" in params:
            self.met("past-key-value")
        else:
            raise self.drift(
                UNIT,
                "forward takes neither cache_position nor position_embeddings nor past_key_value",
                nearest=f"forward({', '.join(params)})",
            )
        stmts = s.fn_body(forward)
        appended = any(_PRESENT_APPENDED(x) for x in stmts)
        rules = [
            r.Rule("padding-mask-warning", r.DROP, "the vacc forward takes no **kwargs", _PADDING_MASK_WARNING),
            r.Rule("self-attn-call", r.TRANSLATE, "one layer's tuple cache in, (hidden, weights, present) out",
                   lambda x: m.matches(x, _SELF_ATTN), self._self_attn_call),
            r.Rule("tuple-outputs", r.TRANSLATE, "the layer returns a tuple", r.known("return hidden_states"),
                   lambda _: lay.parse_stmts(TUPLE_OUTPUTS)),
            r.Rule("present-output", r.TRANSLATE, "present appended to the outputs when caching",
                   r.known("return outputs"), lambda x: self._present_output(x, stmts, appended)),
        ]  # fmt: skip
        account = r.Accountant(self, UNIT, rules, PLUMBING)
        body = account.block(stmts)
        r.check_upstream_names(self, UNIT, forward, module)
        names = [name for name, _action, _line in account.ledger]
        if names.count("self-attn-call") != 1:
            raise self.drift(UNIT, "no single `... = self.self_attn(...)` call", node=forward)
        if names.count("tuple-outputs") + names.count("present-output") != 1:
            raise self.drift(UNIT, "no single `return hidden_states` or `return outputs`", node=forward)
        new = forward.with_changes(
            params=SIGNATURE.params, returns=None, decorators=[], lines_after_decorators=()
        )
        new = lay.with_fn_body(new, body)
        left = r.unresolved(new, r.module_names(module))
        if left:
            raise self.drift(
                UNIT, f"the rewritten forward uses {', '.join(left)}, which nothing defines", node=forward
            )
        if s.same_code(new, forward) and new.decorators == forward.decorators:
            return module
        new_cls = lay.with_class_body(cls, lay.replace_in(s.class_body(cls), k, new))
        return module.with_changes(body=lay.replace_in(module.body, i, new_cls))

    def _present_output(
        self, ret: cst.BaseStatement, stmts: list[cst.BaseStatement], appended: bool
    ) -> list[cst.BaseStatement]:
        """``return outputs`` as upstream has it when upstream appends ``present`` itself; when
        its attention call returns no ``present`` (a two-name unpacking: the cache object is
        updated in place), the append is added.  An upstream that unpacks ``present`` and
        does not return it is a shape this codemod does not know: the append is not made up."""
        if appended:
            return [ret]
        unpacked = [len(x.body[0].targets[0].target.elements) for x in stmts if m.matches(x, _SELF_ATTN)]
        if unpacked != [2]:
            raise self.drift(
                UNIT,
                "self.self_attn(...) returns the present (key, value) but `return outputs` does not "
                "include it (no `if use_cache: outputs += (present_key_value,)`)",
                node=ret,
            )
        return [*lay.parse_stmts(_PRESENT_APPENDED_SOURCE), lay.blank_lines(ret, 1)]

    def _self_attn_call(self, stmt: cst.SimpleStatementLine) -> list[cst.BaseStatement]:
        assign = stmt.body[0]
        target = assign.targets[0].target
        elements = list(target.elements)
        if not 2 <= len(elements) <= 3:
            raise self.drift(UNIT, "self.self_attn(...) unpacked into neither 2 nor 3 names", node=stmt)
        names = ["self_attn_weights", "present_key_value"]
        new_elements = [elements[0]] + [
            cst.Element(cst.Name(name), comma=elements[0].comma) for name in names[: 3 - 1]
        ]
        new_elements[-1] = new_elements[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
        if len(elements) == 3 and not s.same_code(target, cst.parse_expression(
            f"{s.render(elements[0].value)}, self_attn_weights, present_key_value"
        )):  # fmt: skip
            raise self.drift(UNIT, "self.self_attn(...) unpacked into other names", node=stmt)
        if len(elements) == 2 and not m.matches(elements[1].value, m.Name("self_attn_weights") | m.Name("_")):
            raise self.drift(UNIT, "self.self_attn(...) unpacked into other names", node=stmt)
        call = r.retarget_args(
            self,
            UNIT,
            assign.value,
            dropped=DROPPED_ARGS,
            renamed={name: "past_key_value" for name in CACHE_NAMES},
            needed=NEEDED_ARGS,
            node=stmt,
        )
        new_target = target.with_changes(elements=new_elements)
        return [
            stmt.with_changes(
                body=[
                    assign.with_changes(
                        targets=[assign.targets[0].with_changes(target=new_target)], value=call
                    )
                ]
            )
        ]


_PRESENT_APPENDED_SOURCE = "if use_cache:\n    outputs += (present_key_value,)\n"
