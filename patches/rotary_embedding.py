"""rotary-embedding — rotary embedding as in Llama 4.31: cos/sin tables gathered by position.

Why: the vacc compiler wants the rotary embedding as a ``[seq_len, head_dim]`` table that
the attention gathers with ``position_ids`` (one ``Gather`` per step in the decode graph),
not upstream's per-batch ``inv_freq @ position_ids`` product.

Contract (SPEC §4.3): ``GemmaRotaryEmbedding.forward(x, position_ids, seq_len)`` returns
``cos, sin`` of shape ``[seq_len, head_dim]`` for positions ``0 … seq_len-1``, computed in
float32 with autocast off, cast to ``x.dtype``; ``seq_len`` may be a 0-d tensor.
``apply_rotary_pos_emb(q, k, cos, sin, position_ids)`` gathers ``cos[position_ids]`` and
unsqueezes the head axis.  The frequencies are upstream's own expression, so the rotary
base and dimension come from wherever that release keeps them.

Shapes recognised:

* ``lazy-inv-freq`` — ``GemmaRotaryEmbedding.forward(self, x, position_ids, seq_len=None)``
  computing ``self.inv_freq = <expr>`` on first use, then ``inv_freq @ position_ids``:
  forward becomes the table form, reusing ``<expr>``; ``__init__`` is kept;
* ``table`` — the table form this codemod writes (its own output);
* ``unsqueeze`` — ``apply_rotary_pos_emb`` doing ``cos = cos.unsqueeze(unsqueeze_dim)``
  on per-position tables: replaced by the gathering form;
* ``gathered`` — ``apply_rotary_pos_emb`` already gathering ``cos[position_ids]``.
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from patches import _shapes as s
from patches._base import VaccCodemod

TABLE_FORWARD = s.parse_def(
    """
@torch.no_grad()
def forward(self, x, position_ids=None, seq_len=None):
    # x: [bs, num_attention_heads, seq_len, head_size]
    # vacc: cos/sin tables for positions 0 .. seq_len-1; apply_rotary_pos_emb gathers them by position_ids
    if seq_len is None:
        seq_len = x.shape[-2]
    inv_freq = __inv_freq__
    device_type = x.device.type
    device_type = device_type if isinstance(device_type, str) and device_type != "mps" else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        t = torch.arange(seq_len, device=x.device, dtype=torch.int64).float()
        freqs = t[:, None] * inv_freq[None, :].float()
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos()
        sin = emb.sin()
    return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)
"""
)

APPLY_ROTARY_POS_EMB = s.parse_def(
    '''
    def apply_rotary_pos_emb(q, k, cos, sin, position_ids, unsqueeze_dim=1):
        """Applies Rotary Position Embedding to the query and key tensors (vacc: table form).

        `cos` and `sin` are `[seq_len, head_dim]` tables; they are gathered at `position_ids`
        (`[batch_size, seq_len]`) and unsqueezed at `unsqueeze_dim` to broadcast over the heads.
        """
        cos = cos[position_ids].unsqueeze(unsqueeze_dim)
        sin = sin[position_ids].unsqueeze(unsqueeze_dim)
        q_embed = (q * cos) + (rotate_half(q) * sin)
        k_embed = (k * cos) + (rotate_half(k) * sin)
        return q_embed, k_embed
    '''
)

_INV_FREQ_IS_NONE = m.If(
    test=m.Comparison(left=s.self_attr("inv_freq"), comparisons=[m.ComparisonTarget(operator=m.Is())])
)
_UNSQUEEZE_COS = m.Call(func=m.Attribute(value=m.Name("cos"), attr=m.Name("unsqueeze")))


def table_forward(inv_freq: cst.BaseExpression) -> cst.FunctionDef:
    """The table-form forward computing the frequencies with upstream's expression."""
    return s.fill(TABLE_FORWARD, inv_freq=inv_freq)


class RotaryEmbedding(VaccCodemod):
    """Table-form ``GemmaRotaryEmbedding.forward`` and gathering ``apply_rotary_pos_emb``."""

    NAME = "rotary-embedding"
    DESCRIPTION = "Rotary embedding as [seq_len, head_dim] cos/sin tables gathered by position_ids."
    TARGETS = ("GemmaRotaryEmbedding", "apply_rotary_pos_emb")
    SHAPES = {
        "lazy-inv-freq": "forward(x, position_ids, seq_len=None) computing `self.inv_freq = <expr>` on first use",
        "table": "forward returning [seq_len, head_dim] tables (this codemod's output)",
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
        hit = s.find_method(cls, "forward")
        if hit is None:
            raise self.drift(
                "GemmaRotaryEmbedding.forward",
                "GemmaRotaryEmbedding has no forward",
                anchor="GemmaRotaryEmbedding",
            )
        k, forward = hit
        stmts = s.fn_body(forward)
        lazy = [x for x in stmts if m.matches(x, _INV_FREQ_IS_NONE)]
        expr = s.find_assignment(lazy[0].body, "self.inv_freq") if lazy else None
        if expr is not None:
            self.met("lazy-inv-freq")
            new = s.keep_leading(forward, table_forward(expr))
            return s.with_class_body(cls, s.replace_in(s.class_body(cls), k, new))
        local = s.find_assignment(stmts, "inv_freq")
        if local is not None and s.same_code(forward, table_forward(local)):
            self.met("table")
            return cls
        raise self.drift(
            "GemmaRotaryEmbedding.forward",
            "forward neither computes `self.inv_freq` lazily nor is the table form",
            nearest=f"forward({', '.join(s.param_names(forward))})",
        )

    def _apply(self, fn: cst.FunctionDef) -> cst.FunctionDef:
        if s.same_code(fn, APPLY_ROTARY_POS_EMB):
            self.met("gathered")
            return fn
        params = s.param_names(fn)
        unsqueezed = s.find_assignment(s.fn_body(fn), "cos")
        if params[:4] == ["q", "k", "cos", "sin"] and m.matches(unsqueezed, _UNSQUEEZE_COS):
            self.met("unsqueeze")
            return s.blank_lines(APPLY_ROTARY_POS_EMB, 2)
        raise self.drift(
            "apply_rotary_pos_emb",
            "apply_rotary_pos_emb is neither the unsqueeze form nor the gathering form",
            nearest=f"apply_rotary_pos_emb({', '.join(params)})",
        )


def _nearest(module: cst.Module, word: str) -> str | None:
    return next((n for n in s.names(module.body) if word.lower() in n.lower()), None)
