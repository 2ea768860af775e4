"""The heads under ``mask-generation``: each head's ``forward`` with the tuple cache.

A head's ``forward`` (``GemmaForCausalLM``, ``GemmaForSequenceClassification``,
``GemmaForTokenClassification`` where the release has it) loses ``cache_position`` and the
logits slicing of ``(num_)logits_to_keep`` (each with the default under which upstream does
what the vacc head does, ``None`` and ``0``; another default is drift), takes the cache as ``past_key_values`` (``cache``
in 5.24+) and passes it on to ``self.model`` (SPEC §4, heads).  The shapes are
``mask-generation``'s ``head-…`` shapes; its module docstring is the contract.  Heads whose
body a generic class of the library provides are :mod:`patches._generic_heads`.
"""

from __future__ import annotations

import libcst as cst

from patches import _layout as lay
from patches import _rules as r
from patches import _shapes as s
from patches._base import VaccCodemod

HEADS = ("GemmaForCausalLM", "GemmaForSequenceClassification")
#: Heads some releases have (4.45+), passing the tuple cache through like the others.
OPTIONAL_HEADS = ("GemmaForTokenClassification",)
#: The parameters of a head's forward in the contract (SPEC §4, heads), besides ``self``.
HEAD_PARAMS = {
    "input_ids", "attention_mask", "position_ids", "past_key_values", "inputs_embeds", "labels",
    "use_cache", "output_attentions", "output_hidden_states", "return_dict",
}  # fmt: skip
#: Head parameters this codemod removes, and the names through which logits slicing is done.
REMOVED_HEAD_PARAMS = ("cache_position", "num_logits_to_keep", "logits_to_keep")
#: The default each removed parameter must have: the one under which upstream computes what
#: the tuple-cache head does (no cache positions; logits for every position, ``0`` keeping
#: them all).  Another default is a head that computes something else by default: drift.
REMOVED_DEFAULTS = {"cache_position": {"None"}, "num_logits_to_keep": {"0"}, "logits_to_keep": {"0"}}
LOGITS_SLICING = {"num_logits_to_keep", "logits_to_keep", "slice_indices"}


def rewrite_forward(codemod: VaccCodemod, head: str, cls: cst.ClassDef, module: cst.Module) -> cst.ClassDef:
    """``head`` with a tuple-cache ``forward`` (its shape recorded on ``codemod``); drift for a
    head without forward or with parameters this codemod does not know."""
    hit = s.find_method(cls, "forward")
    if hit is None:
        raise codemod.drift(f"{head}.forward", f"{head} has no forward", anchor=head)
    k, forward = hit
    params = s.param_names(forward)
    known = HEAD_PARAMS | set(REMOVED_HEAD_PARAMS) | {"cache"}
    unknown = [p for p in params[1:] if p not in known and not p.startswith("**")]
    if unknown:
        raise codemod.drift(
            f"{head}.forward",
            f"forward takes {', '.join(unknown)}: not a parameter of the "
            "tuple-cache head and not one this codemod knows how to remove",
            nearest=f"forward({', '.join(params)})",
        )
    renaming = [d for d in forward.decorators if r.decorator_name(d) == "deprecate_kwarg"]
    removed = [p for p in params if p in REMOVED_HEAD_PARAMS]
    r.check_defaults(codemod, f"{head}.forward", _removed_only(forward), REMOVED_DEFAULTS)
    if not removed and not renaming and "cache" not in params:
        codemod.met("head-tuple-cache")
        return cls
    if "self.model" not in s.calls(forward):
        raise codemod.drift(f"{head}.forward", f"forward takes {removed[0]} but never calls self.model")
    if "cache_position" in removed:
        codemod.met("head-cache-position")
    if {"num_logits_to_keep", "logits_to_keep"} & set(removed):
        codemod.met("head-logits-to-keep")
    new = forward.with_changes(
        params=forward.params.with_changes(
            params=lay.drop_items(forward.params.params, lambda p: p.name.value in REMOVED_HEAD_PARAMS)
        ),
        decorators=[d for d in forward.decorators if d not in renaming],
    )
    if "cache" in params:  # 5.24+: the contract's head takes past_key_values
        codemod.met("head-cache-keyword")
        new = lay.rename(new, {"cache": cst.Name("past_key_values")})
    unit = f"{head}.forward"
    rules = [
        r.Rule("logits-to-keep", r.DROP, "the tuple-cache head computes logits for every position",
               _SLICES_LOGITS),
        r.Rule("all-logits", r.TRANSLATE, "lm_head sees every position", _slices_hidden_states,
               lambda x: [x.visit(_AllLogits())]),
        r.Rule("model-call", r.TRANSLATE, "the model called with the tuple cache, no cache_position",
               lambda x: _assigned_call(x, "self.model") is not None,
               lambda x: [_retarget_model_call(codemod, unit, x)]),
    ]  # fmt: skip
    account = r.Accountant(codemod, unit, rules, frozenset(REMOVED_HEAD_PARAMS) | LOGITS_SLICING)
    new = lay.with_fn_body(new, account.block(s.fn_body(new)))
    r.check_upstream_names(codemod, unit, forward, module)
    left = r.unresolved(new, r.module_names(module))
    if left:
        raise codemod.drift(
            unit, f"the rewritten forward uses {', '.join(left)}, which nothing defines", anchor=head
        )
    return lay.with_class_body(cls, lay.replace_in(s.class_body(cls), k, new))


def _removed_only(forward: cst.FunctionDef) -> cst.FunctionDef:
    """``forward`` with only the parameters the tuple-cache head removes (their defaults checked)."""
    p = forward.params
    keep = lambda x: x.name.value in REMOVED_DEFAULTS  # noqa: E731
    return forward.with_changes(
        params=p.with_changes(
            params=[x for x in p.params if keep(x)],
            posonly_params=[x for x in p.posonly_params if keep(x)],
            kwonly_params=[x for x in p.kwonly_params if keep(x)],
        )
    )


def _assigned_call(stmt: cst.CSTNode, func: str) -> cst.Call | None:
    """The call of ``x = func(...)`` / ``x: T = func(...)`` on a line of its own."""
    if not isinstance(stmt, cst.SimpleStatementLine) or len(stmt.body) != 1:
        return None
    hit = s.assignment(stmt.body[0])
    value = hit[1] if hit else None
    return value if isinstance(value, cst.Call) and s.dotted(value.func) == func else None


def _retarget_model_call(
    codemod: VaccCodemod, unit: str, stmt: cst.SimpleStatementLine
) -> cst.SimpleStatementLine:
    """The head's ``self.model(...)`` call without ``cache_position``, passing the cache as
    ``past_key_values`` (the 5.24 keyword ``cache=`` included)."""
    call = _assigned_call(stmt, "self.model")
    new = r.retarget_args(
        codemod, unit, call, dropped=("cache_position",),
        renamed={"past_key_values": "past_key_values", "cache": "past_key_values"}, node=stmt,
    )  # fmt: skip
    small = stmt.body[0]
    return stmt.with_changes(body=[small.with_changes(value=new)])


_SLICES_LOGITS = r.known(
    "slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep",
    "hidden_states = slice_logits_to_keep(hidden_states, logits_to_keep)",
)
#: The subscripts that narrow the positions lm_head sees.
_NARROWED = r.known(
    "hidden_states[:, slice_indices, :]",
    "hidden_states[:, -num_logits_to_keep:, :]",
    "hidden_states[:, -logits_to_keep:, :]",
)


def _is_narrowed(node: cst.CSTNode) -> bool:
    return isinstance(node, cst.Subscript) and _NARROWED(cst.SimpleStatementLine([cst.Expr(node)]))


def _slices_hidden_states(stmt: cst.BaseStatement) -> bool:
    """A statement using the logits slicing only in the known subscripts of ``hidden_states``."""
    if not r.variables(stmt) & LOGITS_SLICING:
        return False
    return not r.variables(stmt.visit(_AllLogits())) & LOGITS_SLICING


class _AllLogits(cst.CSTTransformer):
    """``hidden_states[:, -num_logits_to_keep:, :]`` / ``hidden_states[:, slice_indices, :]``
    -> ``hidden_states``: the tuple-cache head computes logits for every position."""

    def leave_Subscript(self, original: cst.Subscript, updated: cst.Subscript) -> cst.BaseExpression:
        return updated.value if _is_narrowed(original) else updated
