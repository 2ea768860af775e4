"""quantize — ``GemmaForCausalLM.quantize(weight_bit_width)``: int8 weight-only projections.

Why: the vacc toolchain deploys Gemma with per-output-channel int8 weights (W8A16).  The
quantised linears live in ``quantization_vacc.py`` (ours, shipped beside every output);
their ONNX export emits ``Vastai::QuantizedLinearPerChannel``.

Contract (SPEC §4.10): ``quantize(weight_bit_width)`` replaces the q/k/v/o and gate/up/down
projections with those linears and returns the model.  The import is relative
(``from .quantization_vacc import quantize_model``) so that ``trust_remote_code`` copies
the companion file along with the model file.

Shapes recognised (in ``GemmaForCausalLM``):

* ``no-quantize`` — no ``quantize`` method upstream: added at the end of the class;
* ``quantize`` — the method this codemod writes (its own output).

An upstream ``quantize`` in any other form is drift.
"""

from __future__ import annotations

import libcst as cst

from patches import _layout as lay
from patches import _shapes as s
from patches._base import VaccCodemod

QUANTIZE = lay.parse_def(
    '''
    def quantize(self, weight_bit_width):
        """Replace the attention and MLP projections with per-channel int8 weight-only linears (vacc)."""
        from .quantization_vacc import quantize_model

        return quantize_model(self, weight_bit_width)
    '''
)


class Quantize(VaccCodemod):
    """Adds ``GemmaForCausalLM.quantize``."""

    NAME = "quantize"
    DESCRIPTION = (
        "Add GemmaForCausalLM.quantize(weight_bit_width) using the int8 linears of quantization_vacc."
    )
    TARGETS = ("GemmaForCausalLM.quantize",)
    SHAPES = {
        "no-quantize": "GemmaForCausalLM has no quantize method",
        "quantize": "the quantize method this codemod writes",
    }

    def rewrite(self, module: cst.Module) -> cst.Module:
        hit = s.find_class(module, "GemmaForCausalLM")
        if hit is None:
            raise self.drift("GemmaForCausalLM.quantize", "no module-level class GemmaForCausalLM")
        i, cls = hit
        body = s.class_body(cls)
        existing = s.find(body, "quantize")
        if existing is not None:
            if not s.same_code(body[existing], QUANTIZE):
                raise self.drift(
                    "GemmaForCausalLM.quantize",
                    "upstream defines its own quantize",
                    anchor="GemmaForCausalLM.quantize",
                )
            self.met("quantize")
            return module
        self.met("no-quantize")
        body.append(lay.blank_lines(QUANTIZE, 1))
        return module.with_changes(body=lay.replace_in(module.body, i, lay.with_class_body(cls, body)))
