"""Weight-only int8 quantization (W8A16) of Gemma's projections for the vacc compiler.

What: ``quantize_model(model, 8)`` replaces, in every decoder layer, the attention
projections ``self_attn.{q,k,v,o}_proj`` and the MLP projections ``mlp.{gate,up,down}_proj``
with :class:`QuantizedLinearPerChannel`, which keeps an int8 weight and one float scale per
output channel and dequantises on the fly; activations stay in the model's float dtype.

Why: the vacc model compiler runs these projections as int8 weight-only matmuls.  It finds
them in the exported graph as the custom ONNX op ``Vastai::QuantizedLinearPerChannel(input,
weight_int8, scale)``, which is what ``torch.onnx.export(..., dynamo=False)`` emits for each
quantized linear (through the ``symbolic`` of the autograd function below); a bias, where
there is one, is a plain ``Add`` after it.

Formula, symmetric per output channel (row ``i`` of the ``[out, in]`` weight ``w``)::

    scale[i]  = max_j |w[i, j]| / 127          (1 for an all-zero row)
    q[i, j]   = clamp(round(w[i, j] / scale[i]), -127, 127)      stored as int8
    y         = x @ (q * scale[:, None]).T + bias

This file is shipped unchanged next to every generated ``modeling_gemma_vacc.py`` and runs
inside whatever transformers release that file was made for, so it imports nothing but torch.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["QuantizedLinearPerChannel", "quantize_model"]

SUPPORTED_BIT_WIDTHS = (8,)
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


class _QuantizedLinearFunction(torch.autograd.Function):
    """``input @ dequant(weight, scale).T``; exports as one ``Vastai::QuantizedLinearPerChannel``."""

    @staticmethod
    def forward(ctx, input, weight, scale):
        dequantized = weight.to(input.dtype) * scale.to(input.dtype)[:, None]
        ctx.save_for_backward(weight, scale)
        return torch.matmul(input, dequantized.t())

    @staticmethod
    def backward(ctx, grad_output):
        # Only the activations get a gradient: the int8 weight and its scale are frozen.
        weight, scale = ctx.saved_tensors
        dequantized = weight.to(grad_output.dtype) * scale.to(grad_output.dtype)[:, None]
        return torch.matmul(grad_output, dequantized), None, None

    @staticmethod
    def symbolic(g, input, weight, scale):
        output = g.op("Vastai::QuantizedLinearPerChannel", input, weight, scale)
        _declare_output_type(output, input, weight)
        return output


def _declare_output_type(output, input, weight) -> None:
    """Give the custom op's output the type ``input[..., out_features]`` in the exported graph.

    ONNX cannot infer the shape behind a custom op; declaring it keeps shape inference
    working downstream.  Best effort: the op is exported correctly without it.
    """
    try:
        sizes = input.type().varyingSizes()
        out_features = weight.type().varyingSizes()[0]
        if sizes is not None:
            output.setType(input.type().with_sizes([*sizes[:-1], out_features]))
    except (AttributeError, IndexError, RuntimeError, TypeError):
        pass


def quantize_weight_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization of each row of ``weight``: returns ``(int8 weight, scale)``.

    The arithmetic is done in float32 whatever the weight's dtype; the scale is returned in
    the weight's dtype so that the quantized model keeps the float model's dtype.
    """
    w = weight.detach().to(torch.float32)
    max_abs = w.abs().amax(dim=1)
    scale = torch.where(max_abs > 0, max_abs / 127.0, torch.ones_like(max_abs))
    q = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale.to(weight.dtype)


class QuantizedLinearPerChannel(nn.Module):
    """A linear layer with an int8 ``[out, in]`` weight and a per-output-channel ``scale``.

    ``weight``, ``scale`` and ``bias`` are buffers, so they follow ``.to(device)``, land in
    ``state_dict`` and are never trained.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        weight_bit_width: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        _check_bit_width(weight_bit_width)
        self.in_features = in_features
        self.out_features = out_features
        self.weight_bit_width = weight_bit_width
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("scale", torch.ones(out_features, dtype=dtype, device=device))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=device))
        else:
            self.bias = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight_bit_width: int = 8) -> QuantizedLinearPerChannel:
        """Quantize ``linear``'s weight; its bias is kept in float."""
        _check_bit_width(weight_bit_width)
        module = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            weight_bit_width=weight_bit_width,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        q, scale = quantize_weight_per_channel(linear.weight)
        module.weight.copy_(q)
        module.scale.copy_(scale)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach())
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _QuantizedLinearFunction.apply(x, self.weight, self.scale)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, weight_bit_width={self.weight_bit_width}"
        )


def _check_bit_width(weight_bit_width: int) -> None:
    if weight_bit_width not in SUPPORTED_BIT_WIDTHS:
        raise ValueError(f"weight_bit_width must be one of {SUPPORTED_BIT_WIDTHS}, got {weight_bit_width!r}")


def quantize_model(model: nn.Module, weight_bit_width: int) -> nn.Module:
    """Replace every attention and MLP projection of ``model`` in place; return ``model``.

    Projections are found by walking ``model.modules()`` for modules that carry all of
    ``q_proj, k_proj, v_proj, o_proj`` (attention) or all of ``gate_proj, up_proj,
    down_proj`` (MLP), so the function does not depend on where a release puts its layers.
    Projections that are already quantized are left alone, so quantizing twice is harmless.
    """
    _check_bit_width(weight_bit_width)
    found = False
    for module in list(model.modules()):
        for names in (ATTENTION_PROJECTIONS, MLP_PROJECTIONS):
            if not all(isinstance(getattr(module, name, None), nn.Module) for name in names):
                continue
            found = True
            for name in names:
                child = getattr(module, name)
                if isinstance(child, nn.Linear):
                    setattr(module, name, QuantizedLinearPerChannel.from_linear(child, weight_bit_width))
    if not found:
        raise ValueError(f"{type(model).__name__} has no attention or MLP projections to quantize")
    return model
