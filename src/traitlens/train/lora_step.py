"""A LoRA linear layer's forward and backward in one autograd function: every training run uses it;
its sibling groups, which save per-operation costs, only on a CPU.

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

Sibling projections that read the same input (a Llama-style layer's q/k/v, and its gate/up) run
as one group (`_LoraGroup`): one frozen matmul over their concatenated weights, one cast of the
input, one rank-r product for all their A matrices, and, backwards, one matmul into the input
instead of one per projection plus the sums of their gradients. Per-operation costs dominate a
CPU step at a few hundred tokens a pass, and this halves the count of the larger ones.
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


class _LoraGroup(torch.autograd.Function):
    """`_LoraLinear` for sibling layers that read the same x without dropout: one output per
    sibling, y_i = x W_i^T + b_i + s_i (x A_i^T) B_i^T. `weight` and `bias` are the siblings'
    frozen weights and biases concatenated (the layers' own are views into them), `lora` their
    (A_i, B_i) pairs in order. The outputs are column blocks of one tensor."""

    @staticmethod
    def forward(ctx, x, weight, bias, scalings: tuple, *lora):
        dtype, widths = weight.dtype, [b.shape[0] for b in lora[1::2]]
        rows = x.reshape(-1, x.shape[-1]).to(dtype)
        a = torch.cat([lora_a.to(dtype) for lora_a in lora[0::2]])
        bs = [lora_b.to(dtype) for lora_b in lora[1::2]]
        ranks = [lora_a.shape[0] for lora_a in lora[0::2]]
        with torch.autocast(x.device.type, enabled=False):
            out = torch.nn.functional.linear(rows, weight, bias)
            xa = (a @ rows.t()).t()
            wide = torch.promote_types(dtype, lora[1].dtype)
            if wide != dtype:
                out = out.to(wide)
            for block, xa_i, b, lora_b, s in zip(out.split(widths, 1), xa.split(ranks, 1), bs, lora[1::2], scalings):
                block.addmm_(xa_i.to(wide), (lora_b.to(wide) if wide != dtype else b).t(), alpha=s)
        ctx.save_for_backward(rows, xa, weight, a, *bs)
        ctx.scalings, ctx.widths, ctx.ranks, ctx.shape = scalings, widths, ranks, x.shape
        ctx.dtypes = (x.dtype, [t.dtype for t in lora])
        return tuple(block.reshape(*x.shape[:-1], n) for block, n in zip(out.split(widths, 1), widths))

    @staticmethod
    def backward(ctx, *grads):
        rows, xa, weight, a, *bs = ctx.saved_tensors
        x_dtype, lora_dtypes = ctx.dtypes
        with torch.autocast(rows.device.type, enabled=False):
            g = rows.new_zeros(rows.shape[0], sum(ctx.widths)) if any(gr is None for gr in grads) else \
                rows.new_empty(rows.shape[0], sum(ctx.widths))
            for block, grad in zip(g.split(ctx.widths, 1), grads):
                if grad is not None:
                    block.copy_(grad.reshape(block.shape))  # casts to the frozen weights' dtype
            gxa = torch.cat([(b.t() @ g_i.t()).t().mul_(s)
                             for g_i, b, s in zip(g.split(ctx.widths, 1), bs, ctx.scalings)], 1)
            lora_grads = []
            for i, (g_i, xa_i, gxa_i, s) in enumerate(zip(g.split(ctx.widths, 1), xa.split(ctx.ranks, 1),
                                                             gxa.split(ctx.ranks, 1), ctx.scalings)):
                lora_grads.append((gxa_i.t() @ rows).to(lora_dtypes[2 * i]) if ctx.needs_input_grad[4 + 2 * i]
                                  else None)
                lora_grads.append((xa_i.t() @ g_i).t().mul_(s).to(lora_dtypes[2 * i + 1])
                                  if ctx.needs_input_grad[5 + 2 * i] else None)
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_x = (g @ weight).addmm_(gxa, a).reshape(ctx.shape).to(x_dtype)
        return grad_x, None, None, None, *lora_grads


class _Siblings:
    """Layers that read the same input, run together by whichever is called first: the others'
    outputs wait here until each is called with that same input tensor."""

    def __init__(self, layers: list):
        self.layers = layers
        base = [layer.base_layer for layer in layers]
        # One tensor for all the frozen weights, the layers' own made views into it: no extra memory.
        self.weight = torch.cat([b.weight.data for b in base])
        self.bias = torch.cat([b.bias.data for b in base]) if base[0].bias is not None else None
        self.starts = [sum(b.weight.shape[0] for b in base[:i]) for i in range(len(base))]
        for b, at in zip(base, self.starts):
            b.weight.data = self.weight[at:at + b.weight.shape[0]]
            if self.bias is not None:
                b.bias.data = self.bias[at:at + b.weight.shape[0]]
        self.input: torch.Tensor | None = None
        self.waiting: dict[int, torch.Tensor] = {}

    def output(self, layer, x: torch.Tensor) -> torch.Tensor | None:
        """`layer`'s output for `x`, computed with its siblings'; None where they cannot run as a
        group now (an adapter switched off, dropout, weights replaced since)."""
        if self.input is x and id(layer) in self.waiting:
            out = self.waiting.pop(id(layer))
            if not self.waiting:
                self.input = None
            return out
        names = [_plain_adapter(sibling) for sibling in self.layers]
        if None in names or any(not isinstance(sibling.lora_dropout[name], torch.nn.Identity)
                                for sibling, name in zip(self.layers, names)):
            return None
        if any(sibling.base_layer.weight.data_ptr() != self.weight[at].data_ptr()
               for sibling, at in zip(self.layers, self.starts)):
            return None
        lora = [w for sibling, name in zip(self.layers, names)
                for w in (sibling.lora_A[name].weight, sibling.lora_B[name].weight)]
        outs = _LoraGroup.apply(x, self.weight, self.bias,
                                tuple(float(s.scaling[n]) for s, n in zip(self.layers, names)), *lora)
        self.input = x
        self.waiting = {id(s): out for s, out in zip(self.layers, outs) if s is not layer}
        return outs[self.layers.index(layer)]


def _plain_adapter(layer) -> str | None:
    """The one active adapter's name, if `layer` runs it in the plain way `_LoraLinear` covers."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    return name if name in layer.lora_A else None


def _forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Replaces a PEFT `lora.Linear.forward` on one module (see `fuse_lora_layers`)."""
    name = None if args or kwargs else _plain_adapter(self)
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    siblings = getattr(self, "_traitlens_siblings", None)
    if siblings is not None:
        out = siblings.output(self, x)
        if out is not None:
            return out
    dropout = self.lora_dropout[name]
    # PEFT's cast before dropout decides the dtype the mask is drawn in, so the masks match its own.
    dropped = None if isinstance(dropout, torch.nn.Identity) else dropout(
        self._cast_input_dtype(x, self.lora_A[name].weight.dtype))
    base = self.base_layer
    return _LoraLinear.apply(x, dropped, base.weight, base.bias, self.lora_A[name].weight,
                             self.lora_B[name].weight, float(self.scaling[name]))


# Projections of one parent module that read the same input, by name (Llama, Mistral, Qwen, Gemma...).
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def fuse_lora_layers(model, groups: bool = True) -> int:
    """Route every plain LoRA linear layer of `model` through `_LoraLinear`, siblings (SIBLINGS)
    as groups through `_LoraGroup` if `groups`; returns how many layers.

    Per module (an instance attribute), so PEFT's class and other models are untouched."""
    from peft.tuners.lora.layer import Linear

    fused = 0
    for parent in model.modules():
        plain = {}
        for child_name, module in parent.named_children():
            if type(module) is not Linear or type(module.base_layer) is not torch.nn.Linear:
                continue
            if module.base_layer.weight.requires_grad or module.lora_variant or any(
                    getattr(module, "lora_bias", {}).values()) or module.fan_in_fan_out:
                continue
            module.forward = types.MethodType(_forward, module)
            plain[child_name] = module
            fused += 1
        for names in SIBLINGS if groups else ():
            layers = [plain.get(name) for name in names]
            bases = [layer.base_layer for layer in layers if layer is not None]
            if len(bases) == len(names) and len({(b.in_features, b.weight.dtype, b.weight.device,
                                                   b.bias is None) for b in bases}) == 1:
                group = _Siblings(layers)
                for layer in layers:
                    layer._traitlens_siblings = group
    return fused
