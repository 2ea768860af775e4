"""sequence-lengths — last-token index of ``GemmaForSequenceClassification`` for right padding.

Why: the vacc graph pools the last real token as ``ne(input_ids, pad).sum(-1) - 1`` (one
reduction the compiler maps directly); upstream's ``argmax`` of the first pad token with a
modulo, or a search over token positions, compiles poorly.  With right padding both pick
the same token.

Contract (SPEC §4.11): ``sequence_lengths = torch.ne(input_ids, pad_token_id).sum(-1) - 1``;
``-1`` when there is no pad token or no ``input_ids``; batch > 1 without a pad token raises.

Shapes recognised (in ``GemmaForSequenceClassification.forward``):

* ``argmax-modulo`` — ``if self.config.pad_token_id is None: sequence_lengths = -1 else: …
  argmax … % …``: the block is replaced, upstream's batch check is kept;
* ``rightmost-non-pad`` — the same block assigning ``last_non_pad_token`` from
  ``(token_indices * non_pad_mask).argmax(-1)`` (4.49+; left and right padding): replaced,
  keeping upstream's variable name; its warning about ``inputs_embeds`` is dropped by the rule
  ``inputs-embeds-warning`` (a ``# vacc: dropped`` line before the block);

The block is replaced whole (the contract fixes its computation), so it is recognised exactly:
each known form as it is, formatting and comments aside.  A block that computes anything else
is drift, never silently replaced.  Everything else in the forward is upstream's.
* ``ne-sum`` — the form this codemod writes (its own output).
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from patches import _layout as lay
from patches import _rules as r
from patches import _shapes as s
from patches._base import VaccCodemod

SEQUENCE_LENGTHS = lay.parse_stmts(
    """
    if self.config.pad_token_id is None:
        __index__ = -1
    elif input_ids is not None:
        # vacc: right padding, the last token is the one before the first pad
        __index__ = torch.ne(input_ids, self.config.pad_token_id).sum(-1) - 1
        __index__ = __index__.to(logits.device)
    else:
        __index__ = -1
    """
)[0]

_PAD_IS_NONE = m.If(
    test=m.Comparison(
        left=m.Attribute(value=s.self_attr("config"), attr=m.Name("pad_token_id")),
        comparisons=[m.ComparisonTarget(operator=m.Is(), comparator=m.Name("None"))],
    )
)
#: The upstream blocks this codemod replaces, recognised exactly (formatting and comments aside).
_ARGMAX_MODULO = r.known(
    """
    if self.config.pad_token_id is None:
        sequence_lengths = -1
    else:
        if input_ids is not None:
            sequence_lengths = torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1
            sequence_lengths = sequence_lengths % input_ids.shape[-1]
            sequence_lengths = sequence_lengths.to(logits.device)
        else:
            sequence_lengths = -1
    """
)
_RIGHTMOST = """
if self.config.pad_token_id is None:
    last_non_pad_token = -1
elif input_ids is not None:
    non_pad_mask = (input_ids != self.config.pad_token_id).to(logits.device, torch.int32)
    token_indices = torch.arange(input_ids.shape[-1], device=logits.device{dtype})
    last_non_pad_token = (token_indices * non_pad_mask).argmax(-1)
else:
    last_non_pad_token = -1
"""
_WARNING = """
    logger.warning_once(
        f"{{self.__class__.__name__}} will not detect padding tokens in `inputs_embeds`. Results may be "
        "unexpected if using padding tokens in conjunction with `inputs_embeds.`"
    )
"""
_RIGHTMOST_NON_PAD = r.known(
    *(
        _RIGHTMOST.format(dtype=dtype) + warning
        for dtype in (", dtype=torch.int32", "")
        for warning in (_WARNING.format(), "")
    )
)


def sequence_lengths(index: str) -> cst.If:
    """The right-padding block, assigning upstream's own variable (``sequence_lengths`` or
    ``last_non_pad_token``)."""
    return lay.fill(SEQUENCE_LENGTHS, index=cst.Name(index))


def _index_variable(block: cst.If) -> str | None:
    """The variable the ``if pad_token_id is None:`` branch sets to -1."""
    for small in s.small_statements(block.body):
        hit = s.assignment(small)
        if hit and "." not in hit[0]:
            return hit[0]
    return None


class SequenceLengths(VaccCodemod):
    """Right-padding ``sequence_lengths`` in ``GemmaForSequenceClassification.forward``."""

    NAME = "sequence-lengths"
    DESCRIPTION = "GemmaForSequenceClassification picks the last token as ne(input_ids, pad).sum(-1) - 1."
    TARGETS = ("GemmaForSequenceClassification.forward",)
    SHAPES = {
        "argmax-modulo": "`if pad_token_id is None: ... else: argmax(...) - 1 ... % seq_len`",
        "rightmost-non-pad": "`... elif input_ids is not None: (token_indices * non_pad_mask).argmax(-1)` (4.49+)",
        "ne-sum": "the ne(...).sum(-1) - 1 form this codemod writes",
    }

    def rewrite(self, module: cst.Module) -> cst.Module:
        hit = s.find_class(module, "GemmaForSequenceClassification")
        if hit is None:
            raise self.drift(
                "GemmaForSequenceClassification.forward", "no class GemmaForSequenceClassification"
            )
        i, cls = hit
        method = s.find_method(cls, "forward")
        if method is None:
            raise self.drift(
                "GemmaForSequenceClassification.forward",
                "GemmaForSequenceClassification has no forward",
                anchor="GemmaForSequenceClassification",
            )
        k, forward = method
        stmts = s.fn_body(forward)
        j = s.first_index(stmts, lambda x: m.matches(x, _PAD_IS_NONE) and _index_variable(x) is not None)
        if j is None:
            raise self.drift(
                "GemmaForSequenceClassification.forward",
                "no `if self.config.pad_token_id is None:` block computing the last token's index",
                anchor="GemmaForSequenceClassification.forward",
            )
        index = _index_variable(stmts[j])
        new = sequence_lengths(index)
        if s.same_code(stmts[j], new):
            self.met("ne-sum")
            return module
        if _ARGMAX_MODULO(stmts[j]):
            self.met("argmax-modulo")
        elif _RIGHTMOST_NON_PAD(stmts[j]):
            self.met("rightmost-non-pad")
        else:  # replaced whole, so recognised exactly: any other computation would be lost
            raise self.drift(
                "GemmaForSequenceClassification.forward",
                f"the last-token block is neither known form: `{r.first_line(stmts[j])}`",
                anchor="GemmaForSequenceClassification.forward",
                node=stmts[j],
            )
        # the warning of the no-input_ids branch (4.49+) goes with the block: named, so that an
        # upstream that stops warning still changes the output
        notes = [r.dropped_comment("inputs-embeds-warning", w) for w in r.warnings_in(stmts[j])]
        stmts[j] = new.with_changes(leading_lines=[*stmts[j].leading_lines, *notes])
        new_fn = lay.with_fn_body(forward, stmts)
        new_cls = lay.with_class_body(cls, lay.replace_in(s.class_body(cls), k, new_fn))
        return module.with_changes(body=lay.replace_in(module.body, i, new_cls))
