"""rotary-embedding — rotary embedding as in Llama 4.31: cos/sin tables gathered by position.

Why: the vacc compiler wants the rotary embedding as a ``[seq_len, head_dim]`` table that
the attention gathers with ``position_ids`` (one ``Gather`` per step in the decode graph),
not upstream's per-batch ``inv_freq @ position_ids`` product.

Contract (SPEC §4.3): ``GemmaRotaryEmbedding.forward(x, position_ids, seq_len)`` returns
``cos, sin`` of shape ``[seq_len, head_dim]`` for positions ``0 … seq_len-1``, computed in
float32 with autocast off, cast to ``x.dtype``; ``seq_len`` may be a 0-d tensor.
``apply_rotary_pos_emb(q, k, cos, sin, position_ids)`` gathers ``cos[position_ids]`` and
unsqueezes the head axis.

How: upstream's own ``forward(x, position_ids)`` — which computes cos/sin at given
positions in float32 with autocast off — is kept byte for byte under the name
``_forward_at_positions``, and the new ``forward`` asks it for positions ``0 … seq_len-1``.
So the frequencies, the rotary base (wherever that release's config keeps it), the
attention scaling of advanced RoPE types and any dynamic-RoPE update stay upstream's.
``__init__`` is kept as it is.

Shapes recognised:

* ``position-forward`` — ``GemmaRotaryEmbedding.forward(self, x, position_ids, ...)``
  returning ``cos, sin`` at the given positions (every release so far: lazy or buffered
  ``inv_freq``, config-based ``rope_init_fn``, ``@dynamic_rope_update``): renamed and wrapped;
* ``seq-len-tables`` — the legacy rotary class (Llama 4.36 era; Mistral 4.38–4.41):
  ``forward(self, x, seq_len=None)`` slicing a cos/sin cache built in ``__init__`` (and
  rebuilt by ``_set_cos_sin_cache`` for a longer ``seq_len``), returning ``cos, sin`` — already
  ``[seq_len, head_dim]`` tables for positions ``0 … seq_len-1``.  Translated
  (``position-ids-parameter``): the signature gains the contract's ``position_ids=None`` after
  ``x`` (unused: the tables do not depend on it); kept: the whole body, ``__init__`` and
  ``_set_cos_sin_cache``, as upstream wrote them (so the dtype and cache handling stay
  upstream's).  Its own output, ``forward(self, x, position_ids=None, seq_len=None)`` not
  reading ``position_ids``, is recognised as this shape again and left as it is;
* ``table`` — the table form this codemod writes (its own output);
* ``unsqueeze`` — ``apply_rotary_pos_emb(q, k, cos, sin, ...)`` doing
  ``cos = cos.unsqueeze(unsqueeze_dim)`` on per-position tables: edited in place — translated
  (``gather-tables``): the two unsqueezes first gather the table rows at ``position_ids``,
  which becomes a required parameter after ``sin``; dropped (``hub-kernel``): a
  ``@use_kernel_…_from_hub`` decorator, which would swap in a kernel with upstream's ungathered
  signature; kept: the docstring and everything else (``q_embed``, ``k_embed``, the return);
* ``gathered`` — ``apply_rotary_pos_emb`` already gathering ``cos[position_ids]`` (its own output).

A rotary class without a ``forward(x, position_ids)`` or ``forward(x, seq_len)`` returning two
values is drift.
"""

from __future__ import annotations

import libcst as cst

from patches import _layout as lay
from patches import _rules as r
from patches import _shapes as s
from patches._base import VaccCodemod

UPSTREAM_FORWARD = "_forward_at_positions"

TABLE_FORWARD = lay.parse_def(
    """
    def forward(self, x, position_ids=None, seq_len=None):
        # vacc: cos/sin tables [seq_len, head_dim] for positions 0 .. seq_len-1, computed by upstream's
        # forward (kept as _forward_at_positions); apply_rotary_pos_emb gathers them by position_ids
        if seq_len is None:
            seq_len = x.shape[-2]
        positions = torch.arange(seq_len, device=x.device, dtype=torch.int64)[None, :]
        cos, sin = self._forward_at_positions(x, positions)
        return cos[0], sin[0]
    """
)


class RotaryEmbedding(VaccCodemod):
    """Table-form ``GemmaRotaryEmbedding.forward`` and gathering ``apply_rotary_pos_emb``."""

    NAME = "rotary-embedding"
    DESCRIPTION = "Rotary embedding as [seq_len, head_dim] cos/sin tables gathered by position_ids."
    TARGETS = (
        "GemmaRotaryEmbedding.forward",
        f"GemmaRotaryEmbedding.{UPSTREAM_FORWARD}",
        "apply_rotary_pos_emb",
    )
    SHAPES = {
        "position-forward": "upstream forward(x, position_ids, ...) returning cos, sin at the given positions",
        "table": "forward returning [seq_len, head_dim] tables from _forward_at_positions (this codemod's output)",
        "seq-len-tables": "legacy forward(x, seq_len) slicing a cos/sin cache: gains position_ids, body kept",
        "unsqueeze": "apply_rotary_pos_emb doing `cos = cos.unsqueeze(unsqueeze_dim)`",
        "gathered": "apply_rotary_pos_emb gathering `cos[position_ids]` (this codemod's output)",
    }

    def rewrite(self, module: cst.Module) -> cst.Module:
        body = list(module.body)
        rotary = s.find_class(module, "GemmaRotaryEmbedding")
        if rotary is None:
            raise self.drift(
                "GemmaRotaryEmbedding",
                "no module-level class GemmaRotaryEmbedding",
                nearest=_nearest(module, "Rotary"),
            )
        i, cls = rotary
        body[i] = self._rotary(cls)
        apply = s.find_function(module, "apply_rotary_pos_emb")
        if apply is None:
            raise self.drift(
                "apply_rotary_pos_emb",
                "no module-level function apply_rotary_pos_emb",
                nearest=_nearest(module, "rotary"),
            )
        j, fn = apply
        body[j] = self._apply(fn)
        return module.with_changes(body=body)

    def _rotary(self, cls: cst.ClassDef) -> cst.ClassDef:
        body = s.class_body(cls)
        hit = s.find_method(cls, "forward")
        if hit is None:
            raise self.drift(
                "GemmaRotaryEmbedding.forward",
                "GemmaRotaryEmbedding has no forward",
                anchor="GemmaRotaryEmbedding",
            )
        k, forward = hit
        kept = s.find(body, UPSTREAM_FORWARD)
        if kept is not None and s.same_code(forward, TABLE_FORWARD):
            self.met("table")
            return cls
        params = s.param_names(forward)
        returns = [x for x in s.small_statements(s.fn_body(forward)) if isinstance(x, cst.Return)]
        if kept is None and _returns_pair(returns) and _is_seq_len_tables(forward):
            self.met("seq-len-tables")
            if params == ["self", "x", "position_ids", "seq_len"]:  # its own output
                return cls
            new = forward.with_changes(params=_with_position_ids_param(forward.params))
            new = new.with_changes(leading_lines=[*forward.leading_lines, _SEQ_LEN_COMMENT])
            body[k] = new
            return lay.with_class_body(cls, body)
        if kept is not None or params[:3] != ["self", "x", "position_ids"] or not _returns_pair(returns):
            raise self.drift(
                "GemmaRotaryEmbedding.forward",
                "forward is neither upstream's `forward(x, position_ids)` or `forward(x, seq_len)` returning "
                "cos, sin nor the table form",
                nearest=f"forward({', '.join(params)})",
            )
        self.met("position-forward")
        renamed = forward.with_changes(name=cst.Name(UPSTREAM_FORWARD))
        body[k : k + 1] = [renamed, lay.blank_lines(TABLE_FORWARD, 1)]
        return lay.with_class_body(cls, body)

    def _apply(self, fn: cst.FunctionDef) -> cst.FunctionDef:
        """``apply_rotary_pos_emb`` edited in place: ``cos = cos.unsqueeze(dim)`` (and ``sin``)
        gather the table rows at ``position_ids`` first; ``position_ids`` becomes a required
        parameter after ``sin``; every other statement and parameter stays upstream's."""
        unit = "apply_rotary_pos_emb"
        params = s.param_names(fn)
        if params[:4] != ["q", "k", "cos", "sin"]:
            raise self.drift(unit, "apply_rotary_pos_emb does not take (q, k, cos, sin, ...)",
                             nearest=f"apply_rotary_pos_emb({', '.join(params)})")  # fmt: skip
        for decorator in fn.decorators:
            if r.decorator_name(decorator) not in HUB_KERNEL_DECORATORS:
                raise self.drift(unit, f"unknown decorator @{r.decorator_name(decorator)}", node=decorator)
        rules = [
            r.Rule("gather-tables", r.TRANSLATE, "cos/sin are [seq_len, head_dim] tables gathered at position_ids",
                   _UNSQUEEZE, _gathered),
            r.Rule("gathered-tables", r.KEEP, "already gathered (this codemod's output)", _GATHERED),
        ]  # fmt: skip
        account = r.Accountant(self, unit, rules, frozenset({"position_ids"}))
        body = account.block(s.fn_body(fn))
        handled = [line.split("=")[0].strip() for name, _a, line in account.ledger if "gather" in name]
        if sorted(handled) != ["cos", "sin"]:
            raise self.drift(
                unit, "apply_rotary_pos_emb does not unsqueeze `cos` and `sin` once each", node=fn,
                nearest=f"apply_rotary_pos_emb({', '.join(params)})",
            )  # fmt: skip
        ledger = [name for name, _a, _l in account.ledger]
        self.met("gathered" if "gathered-tables" in ledger else "unsqueeze")
        p = fn.params
        where = [x.name.value for x in (*p.posonly_params, *p.params, *p.kwonly_params)]
        if (
            "position_ids" in where
            and where.index("position_ids") != 4
            or "position_ids" in [x.name.value for x in (*p.posonly_params, *p.kwonly_params)]
        ):
            raise self.drift(unit, "position_ids is not the fifth positional parameter", node=fn)
        dropped = [
            cst.EmptyLine(comment=cst.Comment(f"# vacc: dropped (hub-kernel): @{r.one_line(d.decorator)}"))
            for d in fn.decorators
        ]
        new = fn.with_changes(
            params=_position_ids_required(fn.params),
            decorators=[],
            leading_lines=[
                *fn.leading_lines,
                *(line for d in fn.decorators for line in d.leading_lines),
                *dropped,
            ],
        )
        new = lay.with_fn_body(new, body)
        if s.same_code(new, fn) and not fn.decorators:
            return fn
        return new


#: Decorators swapping apply_rotary_pos_emb for a hub kernel with upstream's (ungathered) signature.
HUB_KERNEL_DECORATORS = {"use_kernel_func_from_hub", "use_kernel_forward_from_hub"}
_UNSQUEEZE = r.known("cos = cos.unsqueeze(unsqueeze_dim)", "sin = sin.unsqueeze(unsqueeze_dim)")
_GATHERED = r.known(
    "cos = cos[position_ids].unsqueeze(unsqueeze_dim)", "sin = sin[position_ids].unsqueeze(unsqueeze_dim)"
)


def _gathered(stmt: cst.SimpleStatementLine) -> list[cst.BaseStatement]:
    """``cos = cos.unsqueeze(unsqueeze_dim)`` -> ``cos = cos[position_ids].unsqueeze(unsqueeze_dim)``."""
    name = stmt.body[0].targets[0].target.value
    new = lay.parse_stmts(f"{name} = {name}[position_ids].unsqueeze(unsqueeze_dim)")[0]
    if name == "cos":
        comment = cst.EmptyLine(
            comment=cst.Comment("# vacc: cos/sin are [seq_len, head_dim] tables, gathered at position_ids")
        )
        new = new.with_changes(leading_lines=[comment])
    return [new]


def _position_ids_required(params: cst.Parameters) -> cst.Parameters:
    """``(q, k, cos, sin, position_ids=None, ...)`` or ``(q, k, cos, sin, ...)`` ->
    ``(q, k, cos, sin, position_ids, ...)``."""
    items = list(params.params)
    names = [p.name.value for p in items]
    if "position_ids" in names:
        i = names.index("position_ids")
        items[i] = items[i].with_changes(default=None, equal=cst.MaybeSentinel.DEFAULT)
    else:
        items.insert(4, cst.Param(cst.Name("position_ids"), comma=items[3].comma))
    return params.with_changes(params=items)


def _nearest(module: cst.Module, word: str) -> str | None:
    return next((n for n in s.names(module.body) if word.lower() in n.lower()), None)


def _returns_pair(returns: list[cst.Return]) -> bool:
    """The forward ends in ``return a, b`` (cos, sin)."""
    return bool(returns) and isinstance(returns[-1].value, cst.Tuple) and len(returns[-1].value.elements) == 2


_SEQ_LEN_COMMENT = cst.EmptyLine(
    comment=cst.Comment(
        "# vacc: the contract's forward(x, position_ids, seq_len); these tables do not depend on position_ids"
    )
)


def _is_seq_len_tables(forward: cst.FunctionDef) -> bool:
    """The legacy form: ``forward(self, x, seq_len=None)`` (or, its own output, with
    ``position_ids=None`` between) whose body reads ``seq_len`` and never ``position_ids``."""
    p = forward.params
    if (
        isinstance(p.star_arg, cst.Param | cst.ParamStar)
        or p.star_kwarg
        or p.posonly_params
        or p.kwonly_params
    ):
        return False
    names = [x.name.value for x in p.params]
    defaults = [None if x.default is None else s.render(x.default).strip() for x in p.params]
    if names == ["self", "x", "seq_len"]:
        if defaults != [None, None, "None"]:
            return False
    elif names == ["self", "x", "position_ids", "seq_len"]:
        if defaults != [None, None, "None", "None"]:
            return False
    else:
        return False
    used = set().union(set(), *(r.variables(x) for x in s.fn_body(forward)))
    return "seq_len" in used and "position_ids" not in used


def _with_position_ids_param(params: cst.Parameters) -> cst.Parameters:
    """``(self, x, seq_len=None)`` -> ``(self, x, position_ids=None, seq_len=None)``."""
    items = list(params.params)
    new = cst.Param(
        cst.Name("position_ids"),
        default=cst.Name("None"),
        equal=items[2].equal,
        comma=items[1].comma,
    )
    items.insert(2, new)
    return params.with_changes(params=items)
