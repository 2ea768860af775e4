"""sequence-lengths — last-token index of ``GemmaForSequenceClassification`` for right padding.

Why: the vacc graph pools the last real token as ``ne(input_ids, pad).sum(-1) - 1`` (one
reduction the compiler maps directly); upstream's ``argmax`` of the first pad token with a
modulo, or a search over token positions, compiles poorly.  With right padding both pick
the same token.

Contract (SPEC §4.11): ``sequence_lengths = torch.ne(input_ids, pad_token_id).sum(-1) - 1``;
``-1`` when there is no pad token or no ``input_ids``; batch > 1 without a pad token raises.

Shapes recognised (in ``GemmaForSequenceClassification.forward``):

* ``argmax-modulo`` — ``if self.config.pad_token_id is None: sequence_lengths = -1 else: …
  argmax … % …``: the ``else`` branch is replaced, upstream's batch check is kept;
* ``ne-sum`` — the form this codemod writes (its own output).
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from patches import _shapes as s
from patches._base import VaccCodemod

SEQUENCE_LENGTHS = s.parse_stmts(
    """
    if self.config.pad_token_id is None:
        sequence_lengths = -1
    else:
        if input_ids is not None:
            # vacc: right padding, the last token is the one before the first pad
            sequence_lengths = torch.ne(input_ids, self.config.pad_token_id).sum(-1) - 1
            sequence_lengths = sequence_lengths.to(logits.device)
        else:
            sequence_lengths = -1
    """
)[0]

_PAD_IS_NONE = m.If(
    test=m.Comparison(
        left=m.Attribute(value=s.self_attr("config"), attr=m.Name("pad_token_id")),
        comparisons=[m.ComparisonTarget(operator=m.Is(), comparator=m.Name("None"))],
    )
)
_SEQUENCE_LENGTHS = m.AssignTarget(target=m.Name("sequence_lengths"))
_ARGMAX = m.Call(func=m.Attribute(attr=m.Name("argmax")))


class SequenceLengths(VaccCodemod):
    """Right-padding ``sequence_lengths`` in ``GemmaForSequenceClassification.forward``."""

    NAME = "sequence-lengths"
    DESCRIPTION = "GemmaForSequenceClassification picks the last token as ne(input_ids, pad).sum(-1) - 1."
    TARGETS = ("GemmaForSequenceClassification.forward",)
    SHAPES = {
        "argmax-modulo": "`if pad_token_id is None: ... else: argmax(...) - 1 ... % seq_len`",
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
        j = s.first_index(stmts, lambda x: m.matches(x, _PAD_IS_NONE) and s.contains(x, _SEQUENCE_LENGTHS))
        if j is None:
            raise self.drift(
                "GemmaForSequenceClassification.forward",
                "no `if self.config.pad_token_id is None:` block computing sequence_lengths",
                anchor="GemmaForSequenceClassification.forward",
            )
        if s.same_code(stmts[j], SEQUENCE_LENGTHS):
            self.met("ne-sum")
            return module
        if not s.contains(stmts[j], _ARGMAX):
            raise self.drift(
                "GemmaForSequenceClassification.forward",
                "sequence_lengths computed without argmax: "
                f"{s.render(stmts[j]).strip().splitlines()[-1].strip()}",
                anchor="GemmaForSequenceClassification.forward",
            )
        self.met("argmax-modulo")
        stmts[j] = s.keep_leading(stmts[j], SEQUENCE_LENGTHS)
        new_fn = s.with_fn_body(forward, stmts)
        new_cls = s.with_class_body(cls, s.replace_in(s.class_body(cls), k, new_fn))
        return module.with_changes(body=s.replace_in(module.body, i, new_cls))
