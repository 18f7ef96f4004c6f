"""A LoRA linear layer's forward and backward in one autograd function, for training on CPUs.

PEFT computes `base(x) + lora_B(lora_A(dropout(x))) * scaling` from three modules, and autograd
then differentiates each piece on its own. On a CPU that costs more than the arithmetic needs:
- the rank-r products run in the layouts autograd picks for them, and two of those are slow:
  the gradient into the rank-r activations is `g @ B`, and B's gradient `g.T @ xa`, both
  [rows x out] by [out x r]-shaped products that take 3-4x longer in float32 (and up to 2x in
  bfloat16) than the same products computed transposed;
- the scaling and the sum of the two branches are passes of their own over the layer's output,
  forwards and backwards, as is the sum of the two gradients into x.
Here the LoRA product is added into the base output by one `addmm_` (scaling folded in), the
gradient into x comes from one `addmm_` too, and every rank-r product is computed in its fast
layout. In float32 the values are those of PEFT's layer (a test checks loss and gradients); with
a bfloat16 base the sum is kept in float32, where PEFT's rounds away small changes (see
`_LoraLinear`).

Only the plain case is taken over: a `torch.nn.Linear` base with frozen weights, one active
unmerged adapter without a variant (DoRA etc.) or LoRA bias. Anything else keeps PEFT's forward.
"""

from __future__ import annotations

import types

import torch


class _LoraLinear(torch.autograd.Function):
    """y = x W^T + b + s (d A^T) B^T, with d = dropout(x), or x itself when `dropped` is None
    (not x passed twice: that would keep torch.compile from tracing the function).

    The products run in the frozen weight's dtype, as autocast would run them, and the LoRA
    weights' gradients come back in their own dtype. With a bfloat16 base and float32 LoRA
    weights, the LoRA product is added in float32 and y is returned in float32: added in
    bfloat16 (as PEFT does under autocast), an adapter's early, small changes round away against
    the base output (8 bits of mantissa), and 12 steps on movie reviews ended at a loss of
    0.685 / 0.706 against float32's 0.539 / 0.559. Kept in float32: 0.565 / 0.573, at 4% fewer
    tokens per second. The residual stream then stays float32 too."""

    @staticmethod
    def forward(ctx, x, dropped, weight, bias, lora_a, lora_b, scaling: float):
        dtype = weight.dtype
        rows = x.reshape(-1, x.shape[-1]).to(dtype)
        same = dropped is None
        d = rows if same else dropped.reshape(-1, x.shape[-1]).to(dtype)
        a, b = lora_a.to(dtype), lora_b.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            out = torch.nn.functional.linear(rows, weight, bias)
            xa = (a @ d.t()).t()  # [rows x r], the fast layout for a thin product
            wide = torch.promote_types(dtype, lora_b.dtype)
            if wide != dtype:  # a bfloat16 base with float32 LoRA weights: see the class docstring
                out = out.to(wide).addmm_(xa.to(wide), lora_b.to(wide).t(), alpha=scaling)
            else:
                out.addmm_(xa, b.t(), alpha=scaling)
        ctx.save_for_backward(d, xa, weight, a, b)
        ctx.scaling, ctx.same, ctx.shape = scaling, same, x.shape
        ctx.dtypes = (x.dtype, x.dtype if same else dropped.dtype, lora_a.dtype, lora_b.dtype)
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        d, xa, weight, a, b = ctx.saved_tensors
        s = ctx.scaling
        x_dtype, dropped_dtype, a_dtype, b_dtype = ctx.dtypes
        with torch.autocast(grad.device.type, enabled=False):
            g = grad.reshape(-1, grad.shape[-1]).to(weight.dtype)
            gxa = (b.t() @ g.t()).t().mul_(s)  # gradient into xa; transposed layout, 3x faster
            grad_b = (xa.t() @ g).t().mul_(s).to(b_dtype) if ctx.needs_input_grad[5] else None
            grad_a = (gxa.t() @ d).to(a_dtype) if ctx.needs_input_grad[4] else None
            grad_x = grad_dropped = None
            if ctx.needs_input_grad[0]:
                grad_x = g @ weight
                if ctx.same:
                    grad_x.addmm_(gxa, a)
                grad_x = grad_x.reshape(ctx.shape).to(x_dtype)
            if not ctx.same and ctx.needs_input_grad[1]:
                grad_dropped = (gxa @ a).reshape(ctx.shape).to(dropped_dtype)
        return grad_x, grad_dropped, None, None, grad_a, grad_b, None


def _forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Replaces a PEFT `lora.Linear.forward` on one module (see `fuse_lora_layers`)."""
    if args or kwargs or self.disable_adapters or self.merged or len(self.active_adapters) != 1:
        return type(self).forward(self, x, *args, **kwargs)
    name = self.active_adapters[0]
    if name not in self.lora_A:
        return type(self).forward(self, x, *args, **kwargs)
    dropout = self.lora_dropout[name]
    # PEFT's cast before dropout decides the dtype the mask is drawn in, so the masks match its own.
    dropped = None if isinstance(dropout, torch.nn.Identity) else dropout(
        self._cast_input_dtype(x, self.lora_A[name].weight.dtype))
    base = self.base_layer
    return _LoraLinear.apply(x, dropped, base.weight, base.bias, self.lora_A[name].weight,
                             self.lora_B[name].weight, float(self.scaling[name]))


def fuse_lora_layers(model) -> int:
    """Route every plain LoRA linear layer of `model` through `_LoraLinear`; returns how many.

    Per module (an instance attribute), so PEFT's class and other models are untouched."""
    from peft.tuners.lora.layer import Linear

    fused = 0
    for module in model.modules():
        if type(module) is not Linear or type(module.base_layer) is not torch.nn.Linear:
            continue
        if module.base_layer.weight.requires_grad or module.lora_variant or any(
                getattr(module, "lora_bias", {}).values()) or module.fan_in_fan_out:
            continue
        module.forward = types.MethodType(_forward, module)
        fused += 1
    return fused
