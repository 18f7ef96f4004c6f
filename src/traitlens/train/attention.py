"""Attention for training on a CPU: which kernel, and packed rows attended one example at a time.

A packed row holds several examples, and transformers keeps them apart with a block-diagonal
mask over the whole row: the kernels still compute every score of the row, then mask most of
them. Eight 23-77-token reviews in one 405-token row need 7% of its 405 x 405 scores.
`attend_by_example` gathers each example's queries, keys and values into a batch of its own
(padded to the longest example), runs the model's own attention on that batch with a causal
mask, and puts the outputs back in row order. On that row, forward plus backward of one layer
took 3.7 ms instead of 10.0 (bfloat16, eager) and 4.9 instead of 9.9 (float32, SDPA); whole
training steps of the hardware benchmark ran 6-8% faster. The training loop's packing check
(`loop._packing_is_exact`) compares this path's loss with padded rows on every run, so a model
whose attention it does not suit trains on padded rows instead.
"""

from __future__ import annotations

import sys
from functools import partial

import torch

# Widest example for which bfloat16 training on a CPU uses eager attention (see `choose_kernel`).
EAGER_MAX_WIDTH = 512


def choose_kernel(lm, widest: int, bf16: bool) -> None:
    """Eager attention for bfloat16 training on examples of up to EAGER_MAX_WIDTH tokens.

    On a CPU, PyTorch's bfloat16 flash-attention kernel is slow on short rows, above all in its
    backward pass: forward plus backward of one layer took 8.0 ms against eager's 1.4 ms on 8 x 44
    tokens, 35 ms against 26 ms on 2 x 512, but 55 ms against 99 ms on 1 x 1024 (eager also
    keeps every layer's attention weights for the backward pass). In float32 the kernel wins at
    every width. Attention runs one example at a time (`attend_by_example`) or on padded rows as
    wide as the longest example, so the run's longest example decides. Models loaded with another
    implementation (a user's flash-attention-2, say) are left alone."""
    on_cpu = next(lm.parameters()).device.type == "cpu"
    if bf16 and on_cpu and lm.config._attn_implementation == "sdpa" and widest <= EAGER_MAX_WIDTH:
        lm.set_attn_implementation("eager")


def attend_by_example(lm) -> bool:
    """Route `lm`'s attention through `_by_example`, wrapping the implementation it uses now
    (eager or SDPA; others, such as flash attention, handle packed rows themselves). Returns
    whether it did."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    inner = lm.config._attn_implementation
    kernel = None
    if inner == "sdpa":
        kernel = ALL_ATTENTION_FUNCTIONS["sdpa"]
    elif inner == "eager":
        # Eager attention is each model's own function, defined beside its attention module.
        attention = next((m for m in lm.modules() if type(m).__name__.endswith("Attention")), None)
        if attention is not None:
            kernel = getattr(sys.modules[type(attention).__module__], "eager_attention_forward", None)
    if kernel is None:
        return False
    # Registrations are global: one name per wrapped function, so two architectures trained in
    # one process never share one.
    name = f"traitlens_by_example_{inner}"
    if inner == "eager":
        name += "_" + kernel.__module__.replace(".", "_")
    AttentionInterface.register(name, partial(_by_example, kernel=kernel, eager=inner == "eager"))
    AttentionMaskInterface.register(name, partial(_padding_mask, mask=ALL_MASK_ATTENTION_FUNCTIONS[inner]))
    lm.set_attn_implementation(name)
    return True


def _padding_mask(*args, mask, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor | None:
    """The wrapped kernel's mask for rows with padding; none for rows without, which
    `_by_example` masks example by example (a full mask over a packed row of a few thousand
    tokens would take more memory than the model)."""
    return None if attention_mask is None else mask(*args, attention_mask=attention_mask, **kwargs)


def _by_example(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, *args, kernel, eager: bool,
                position_ids: torch.Tensor | None = None, **kwargs):
    """`kernel` on each example of rows without padding: [rows, heads, width, head size]
    tensors whose position ids restart at each example (as the training loop packs them).
    Rows with a padding mask go to `kernel` as they are."""
    if attention_mask is not None or position_ids is None or key.shape[2] != query.shape[2]:
        return kernel(module, query, key, value, attention_mask, *args, **kwargs)
    rows, _, width, size = query.shape
    positions = position_ids.expand(rows, width).reshape(-1)
    starts = torch.ones_like(positions, dtype=torch.bool)
    starts[1:] = positions[1:] != positions[:-1] + 1
    starts[::width] = True  # a row's first token starts an example
    first = starts.nonzero().squeeze(1)
    lengths = torch.diff(first, append=first.new_tensor([positions.numel()]))
    longest = int(lengths.max())
    steps = torch.arange(longest, device=first.device)
    # [examples x longest]: each example's token indices, its last one repeated as padding. The
    # padding sits after every real token, so causal masking keeps it out of their outputs.
    index = torch.minimum(first[:, None] + steps, (first + lengths - 1)[:, None])
    real = steps[None, :] < lengths[:, None]

    def by_example(states: torch.Tensor) -> torch.Tensor:
        tokens = states.transpose(1, 2).reshape(-1, states.shape[1], size)
        return _ToExamples.apply(tokens, index, real).transpose(1, 2)

    mask = None  # SDPA: causal by itself when given no mask
    if eager:
        mask = torch.full((longest, longest), torch.finfo(torch.float32).min, device=first.device).triu(1)[None, None]
    output, _ = kernel(module, by_example(query), by_example(key), by_example(value), mask, *args, **kwargs)
    return _ToTokens.apply(output, index, real).reshape(rows, width, *output.shape[2:]), None


# Both written by hand because autograd's backward for indexing adds into a zero tensor, serially
# on a CPU: 27 ms of a 950 ms bfloat16 step. Here each backward is a plain gather.
class _ToExamples(torch.autograd.Function):
    """tokens[index]: [tokens, ...] to [examples, longest, ...]. Its gradient is the incoming
    gradient at `real` places (each token once, in order): padded places receive none, as no
    real query attends to them and padded queries' outputs are dropped."""

    @staticmethod
    def forward(ctx, tokens, index, real):
        ctx.save_for_backward(real)
        return tokens[index]

    @staticmethod
    def backward(ctx, grad):
        (real,) = ctx.saved_tensors
        return grad[real], None, None


class _ToTokens(torch.autograd.Function):
    """batched[real]: [examples, longest, ...] back to [tokens, ...]; the gradient of padded
    places is zero."""

    @staticmethod
    def forward(ctx, batched, index, real):
        ctx.save_for_backward(index, real)
        return batched[real]

    @staticmethod
    def backward(ctx, grad):
        index, real = ctx.saved_tensors
        padded = ~real.reshape(*real.shape, *[1] * (grad.dim() - 1))
        return grad[index].masked_fill_(padded, 0), None, None
