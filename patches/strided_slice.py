"""strided-slice — ``iter_num`` / ``insert_slice``: one logits position in the prefill graph.

Why: the vacc compiler builds the prefill graph with ``insert_slice`` set and ``iter_num``
0; the model must then cut the last hidden state to the final position (a strided slice
``[:, -1:, :]``) after the final norm, so the prefill graph emits logits for one position
instead of ``seq_len`` of them.

Contract (SPEC §4.8): ``GemmaModel.__init__`` reads ``config.iter_num`` and
``config.insert_slice`` (each 0 when absent); when ``insert_slice`` is set and ``iter_num``
is 0, ``hidden_states = hidden_states[:, -1:, :]`` right after ``self.norm``.

Shapes recognised:

* ``post-init`` — ``GemmaModel.__init__`` calling ``self.post_init()`` and
  ``GemmaModel.forward`` with a top-level ``hidden_states = self.norm(hidden_states)``: the
  config reads go before ``self.post_init()``, the slice after the norm;
* ``sliced`` — both already there (this codemod's output).
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from patches import _layout as lay
from patches import _shapes as s
from patches._base import VaccCodemod

CONFIG_READS = lay.parse_stmts(
    """
    # vacc strided_slice: the prefill graph (insert_slice set, iter_num 0) keeps the last position only
    self.iter_num = getattr(config, "iter_num", 0)
    self.insert_slice = getattr(config, "insert_slice", 0)
    """
)
SLICE = lay.parse_stmts(
    """
    if self.insert_slice and self.iter_num == 0:
        hidden_states = hidden_states[:, -1:, :]
    """
)

CONFIG_READS[0] = CONFIG_READS[0].with_changes(
    leading_lines=[cst.EmptyLine(indent=False), *CONFIG_READS[0].leading_lines]
)

_POST_INIT = m.Expr(m.Call(func=s.self_attr("post_init")))
_NORM = m.Assign(targets=[m.AssignTarget(m.Name("hidden_states"))], value=m.Call(func=s.self_attr("norm")))


class StridedSlice(VaccCodemod):
    """``iter_num``/``insert_slice`` read in ``GemmaModel.__init__``, the slice after the final norm."""

    NAME = "strided-slice"
    DESCRIPTION = "GemmaModel reads config.iter_num/insert_slice and keeps only the last position in prefill."
    TARGETS = ("GemmaModel.__init__", "GemmaModel.forward")
    SHAPES = {
        "post-init": "__init__ ending in self.post_init(); forward with `hidden_states = self.norm(hidden_states)`",
        "sliced": "config reads and slice already present (this codemod's output)",
    }

    def rewrite(self, module: cst.Module) -> cst.Module:
        hit = s.find_class(module, "GemmaModel")
        if hit is None:
            raise self.drift("GemmaModel.__init__", "no module-level class GemmaModel")
        i, cls = hit
        init, forward = s.find_method(cls, "__init__"), s.find_method(cls, "forward")
        if init is None or forward is None:
            raise self.drift(
                "GemmaModel.__init__", "GemmaModel lacks __init__ or forward", anchor="GemmaModel"
            )
        init_body, fwd_body = s.fn_body(init[1]), s.fn_body(forward[1])
        post_init = s.statement_index(init_body, lambda x: m.matches(x, _POST_INIT))
        norm = s.statement_index(fwd_body, lambda x: m.matches(x, _NORM))
        if post_init is None:
            raise self.drift(
                "GemmaModel.__init__",
                "no top-level `self.post_init()` call in __init__",
                anchor="GemmaModel.__init__",
            )
        if norm is None:
            raise self.drift(
                "GemmaModel.forward",
                "no top-level `hidden_states = self.norm(hidden_states)` in forward",
                anchor="GemmaModel.forward",
            )
        reads = [s.find_assignment(init_body, f"self.{n}") for n in ("iter_num", "insert_slice")]
        sliced = any(isinstance(x, cst.If) and s.same_code(x, SLICE[0]) for x in fwd_body)
        if all(x is not None for x in reads) and sliced:
            self.met("sliced")
            return module
        if any(x is not None for x in reads) or sliced:
            raise self.drift(
                "GemmaModel.forward",
                "iter_num/insert_slice half present: config reads "
                f"{'found' if any(x is not None for x in reads) else 'missing'}, slice "
                f"{'found' if sliced else 'missing'}",
                anchor="GemmaModel",
            )
        self.met("post-init")
        init_body[post_init:post_init] = CONFIG_READS
        fwd_body[norm + 1 : norm + 1] = SLICE
        body = s.class_body(cls)
        body[init[0]] = lay.with_fn_body(init[1], init_body)
        body[forward[0]] = lay.with_fn_body(forward[1], fwd_body)
        return module.with_changes(body=lay.replace_in(module.body, i, lay.with_class_body(cls, body)))
