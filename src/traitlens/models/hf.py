"""The Hugging Face scorer: one base model per process, adapters switched on it.

Written out rather than delegated to lm-evaluation-harness because traitlens needs adapter
switching without reloading, per-choice log-probabilities kept per item, and one prompt
computation shared by all choices of an item.

- The tokens every prompt of a call shares (a target's instruction) run once; each item runs
  only its own tokens against that prefix's KV cache (float32 only).
- Single-token choices (most labels, letters): one forward pass per item; the output layer runs
  only at each item's last position.
- Multi-token choices: the context runs once with a KV cache, which is then repeated for each
  choice's continuation (explicit position ids and padding masks keep every row exact).
- Batches are sorted by length; padding is on the right for scoring (positions stay 0..L-1) and
  on the left for generation, with position ids taken from the attention mask.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from traitlens.config.schema import BaseModelSpec
from traitlens.data.template import token_boundary
from traitlens.errors import TruncationWarning
from traitlens.models.device import Placement
from traitlens.models.scorer import ChoiceRequest, ChoiceScores, Generation, GenerateRequest


# Shorter shared prefixes save less than the extra pass over them costs.
MIN_SHARED_PREFIX = 8
# Rows per output-layer matmul when scoring next tokens (see `_next_token_logprobs`).
HEAD_ROWS = 256
# Under `evaluation.batch_size: auto` on a CPU (see `HFScorer.rows_per_batch`): tokens per scoring
# batch, at most CPU_ROWS rows; rows per generation batch.
CPU_SCORE_TOKENS = 512
CPU_ROWS = 16
CPU_GENERATE_ROWS = 64
# Most rows per forward pass on a GPU, however much memory is free.
MAX_GPU_ROWS = 512


class HFScorer:
    """Scores with the base `spec` and its adapters. Where and in which dtype: `placement` (the
    executor passes its jobs' one), else a placement made of `dtype` and `device`."""

    def __init__(self, spec: BaseModelSpec, dtype: str = "float32", batch_size: int | str = "auto",
                 device: str = "auto", mixed_adapters: bool | str = "auto", *, placement: Placement | None = None):
        import torch

        self.torch = torch
        self.placement = placement or Placement("eval", device, dtype)
        dtype = self.placement.dtype
        self.device = self.placement.torch_device()
        self.model, self.tokenizer = self.placement.load(spec, self.device)
        # Longer inputs are cut to their last tokens (the question and the answer cue), with a
        # warning: a model run past its positions gives garbage, and a 1 MB item asked for 68 GB.
        self.context_limit = getattr(self.model.config, "max_position_embeddings", None)
        self._truncated = 0
        self.dtype = dtype
        self.batch_size = batch_size
        self.adapter: str | None = None
        self._loaded: set[str] = set()
        # Several adapters in one batch, each row through its own (PEFT's mixed-adapter batches):
        # on a GPU a batch of one adapter's items leaves most of the device idle. On a CPU the
        # merged one-adapter-at-a-time path measured faster (docs/performance.md).
        self.mixed = self.device.type == "cuda" if mixed_adapters == "auto" else bool(mixed_adapters)
        # float32: merge the active adapter into the weights, so adapted models run as fast as
        # the base (unmerged LoRA adds about a quarter to a forward pass). bfloat16 keeps
        # adapters unmerged: adding the delta into bfloat16 weights would round it and change
        # scores by more than batching noise.
        self.merge = dtype == "float32"
        # Likewise the shared prompt prefix (see `_shared_prefix`): in bfloat16, its keys and
        # values computed apart round differently from a full pass, which flipped 2% of
        # single-token predictions on 300 movie reviews; in float32 scores move by ~1e-5.
        # Models whose layers attend within a sliding window (Gemma 2/3, Mistral) keep only the
        # window's last keys in those layers' cache: a context's cache, reused for a padded row's
        # continuation or after a shared prefix, no longer lines up with its mask (a tiny Gemma 3
        # was off by 0.02 nats on a padded row). They run every sequence whole instead.
        self.windowed = getattr(self.model.config, "sliding_window", None) is not None
        self.share_prefix = dtype == "float32" and not self.windowed
        self._originals: dict[str, Any] = {}  # unmerged weights of the layers LoRA touches
        self.on_rows: Callable[[int], None] | None = None  # told how many rows each batch answered

    # --- adapters ----------------------------------------------------------------------

    def use_adapter(self, key: str | None, path: Path | None = None) -> None:
        """Switch adapters in place; each adapter's weights are read from disk once."""
        from peft import PeftModel

        if key == self.adapter and (key is None or not self.merge or self._merged()):
            return  # already in place (a mixed batch unmerges: then the adapter is merged again)
        # Unmerge first: PEFT would otherwise unmerge by subtracting the delta when an adapter
        # is loaded or switched, which leaves the weights a rounding error off the originals.
        self._restore()
        if key is not None and key not in self._loaded:
            if path is None:
                raise ValueError(f"adapter {key} is not loaded yet and no path was given")
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(path), adapter_name=key)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=key)
            self.model.eval()
            self._loaded.add(key)
        if key is not None:
            self.model.set_adapter(key)
            if self.merge:
                self._merge(key)
        self.adapter = key

    def _lora_layers(self):
        from peft.tuners.lora import LoraLayer

        return ((name, layer) for name, layer in self.model.named_modules() if isinstance(layer, LoraLayer))

    def _restore(self) -> None:
        """Put back the original weights of every merged layer. Copying them back rather than
        subtracting the delta keeps the weights bit-exact however many adapters come and go,
        so scores do not depend on the order of evaluation."""
        for name, layer in self._lora_layers():
            if layer.merged:
                layer.get_base_layer().weight.data.copy_(self._originals[name])
                layer.merged_adapters.clear()

    def _merged(self) -> bool:
        return any(layer.merged for _, layer in self._lora_layers())

    def _merge(self, key: str) -> None:
        for name, layer in self._lora_layers():
            if key in layer.lora_A:
                self._originals.setdefault(name, layer.get_base_layer().weight.detach().clone())
                layer.merge(adapter_names=[key])

    def _context(self, names: list[str] | None = None):
        """Run under the active adapter, or with every adapter disabled for the base; with
        `names`, each row of the call through the adapter named for it (see `_routed`)."""
        if names is None and self.adapter is None and hasattr(self.model, "disable_adapter"):
            return self.model.disable_adapter()
        return nullcontext()

    def _routed(self, names: list[str] | None):
        """Forward passes inside send row i through adapter `names[i]` ("__base__": none),
        using PEFT's mixed-batch hooks; a no-op without names."""
        if names is None:
            return nullcontext()
        return self.model._enable_peft_forward_hooks(adapter_names=names)

    def _mixed_names(self, adapters: list[str | None], rows: int) -> list[str]:
        """Per expanded row, its adapter's PEFT name; unmerges first (PEFT refuses mixed
        batches over merged weights)."""
        self._restore()
        missing = [key for key in adapters if key is not None and key not in self._loaded]
        if missing:
            raise ValueError(f"adapters {missing} are not loaded; call use_adapter(key, path) for each first")
        return [key or "__base__" for key in adapters for _ in range(rows)]

    @property
    def _lm(self) -> Any:
        """The plain causal LM inside any PEFT wrapper; LoRA layers live inside its modules."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    # --- batching ----------------------------------------------------------------------

    def rows_per_batch(self, width: int, generating: bool = False) -> int:
        """Rows of `width` tokens per forward pass: the setting, or under `auto`, on a GPU as many
        as half its free memory holds (see `rows_for_memory`); on a CPU, CPU_GENERATE_ROWS when
        generating, else rows of CPU_SCORE_TOKENS tokens in all (1 to CPU_ROWS).

        Why by tokens on a CPU: rows are padded to the batch's longest, and on 24 BoolQ passages
        (87-337 tokens) batches of 16 computed 141 tokens/s, batches of 512 tokens 225-248
        (same scores); reviews of about 60 tokens ran as fast either way. Generation is the other
        way round: each step reads every weight once for the whole batch, and 24 ASDiv problems
        took 15.6 s in one batch against 19.1 s in batches of 16 (alternating, 2 runs each)."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        if self.device.type != "cuda":
            return CPU_GENERATE_ROWS if generating else max(1, min(CPU_ROWS, CPU_SCORE_TOKENS // width))
        budget = self.placement.memory_budget(self.device)
        return rows_for_memory(budget, width, self._lm.config, 2 if self.dtype == "bfloat16" else 4)

    def _batches(self, order: list[int], widths: list[int]) -> Iterator[list[int]]:
        """`order` (longest first) cut into batches sized for their longest row."""
        start = 0
        while start < len(order):
            size = self.rows_per_batch(widths[order[start]])
            yield order[start:start + size]
            start += size

    def _tensor(self, data: Any) -> Any:
        return self.torch.tensor(data, dtype=self.torch.long, device=self.device)

    def _told(self, rows: int) -> None:
        if self.on_rows is not None:
            self.on_rows(rows)

    # --- log-likelihood ----------------------------------------------------------------

    def _fit(self, contexts: list[list[int]], reserve: int) -> list[list[int]]:
        """Contexts cut to their last tokens where they and `reserve` more tokens would pass the
        model's positions; warns once per call with how many were cut."""
        if not self.context_limit:
            return contexts
        room = max(1, self.context_limit - reserve)
        cut = sum(len(c) > room for c in contexts)
        if cut:
            self._truncated += cut
            warnings.warn(f"{self._truncated} evaluation input(s) so far were longer than the model's {self.context_limit} "
                          f"positions and were cut to their last {room} tokens; check the target's `limit` or "
                          "template if that is unexpected.", TruncationWarning, stacklevel=3)
        return [c[-room:] if len(c) > room else c for c in contexts]

    def _encode(self, text: str, special: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def loglikelihood(self, requests: list[ChoiceRequest]) -> list[ChoiceScores]:
        return self._loglikelihood(requests)

    def loglikelihood_mixed(self, requests: list[ChoiceRequest], adapters: list[str | None]
                            ) -> list[list[ChoiceScores]]:
        """`requests` answered by each of `adapters` (loaded keys; None for the base), all in
        shared batches: one list of scores per adapter."""
        names = self._mixed_names(adapters, len(requests))
        flat = self._loglikelihood(requests * len(adapters), names)
        return [flat[i * len(requests):(i + 1) * len(requests)] for i in range(len(adapters))]

    def _loglikelihood(self, requests: list[ChoiceRequest], names: list[str] | None = None) -> list[ChoiceScores]:
        torch = self.torch
        encoded = []
        for request in requests:
            pairs = [token_boundary(request.context, c) for c in request.continuations]
            encoded.append((self._encode(pairs[0][0], True), [self._encode(c, False) for _, c in pairs]))
        encoded = [(self._fit([context], max(map(len, choices)))[0], choices) for context, choices in encoded]
        widths = [len(context) for context, _ in encoded]
        order = sorted(range(len(requests)), key=lambda i: -widths[i])
        last: list[Any] = [None] * len(requests)  # each context's final hidden state
        tails: list[list[float]] = [[0.0] * len(choices) for _, choices in encoded]
        with torch.inference_mode(), self._context(names):
            # Mixed rows share no prefix: each adapter changes the prefix's keys and values.
            prefix = None if names else self._shared_prefix([context for context, _ in encoded])
            for batch in self._batches(order, widths):
                rows = [names[i] for i in batch] if names else None
                hidden = self._score_batch([encoded[i] for i in batch], [tails[i] for i in batch], prefix, rows)
                for row, index in enumerate(batch):
                    last[index] = hidden[row]
                self._told(len(batch))
            first = self._next_token_logprobs(torch.stack(last), names) if requests else None
            # Every first choice token's log-prob in one gather and one copy to the host.
            owners = [i for i, (_, choices) in enumerate(encoded) for _ in choices]
            heads = first[self._tensor(owners), self._tensor([c[0] for _, choices in encoded for c in choices])].tolist() \
                if requests else []
        out, k = [], 0
        for i, (_, choices) in enumerate(encoded):
            out.append(ChoiceScores(tuple(heads[k + j] + tails[i][j] for j in range(len(choices))),
                                    tuple(len(choice) for choice in choices)))
            k += len(choices)
        return out

    def _next_token_logprobs(self, hidden: Any, names: list[str] | None = None) -> Any:
        """Log-probabilities of the next token after each hidden state. The output layer runs
        over a whole call's items in chunks of HEAD_ROWS rather than per batch: against a 49k-token
        vocabulary, output layer and log-softmax took 1.2 ms per row in batches of 16 and 0.54 ms
        in chunks of 256."""
        out = []
        for i in range(0, len(hidden), HEAD_ROWS):
            with self._routed(names[i:i + HEAD_ROWS] if names else None):
                out.append(self.torch.log_softmax(head_logits(self._lm, hidden[i:i + HEAD_ROWS]).float(), dim=-1))
        return self.torch.cat(out)

    def _shared_prefix(self, contexts: list[list[int]]) -> tuple[int, Any] | None:
        """(length, KV cache) of the tokens every context starts with (a target's instruction,
        typically a third of each prompt), run once instead of once per item. Each context
        keeps at least one token of its own, whose hidden state predicts the answer."""
        if len(contexts) < 2 or not self.share_prefix:
            return None
        length = min(len(c) for c in contexts) - 1
        first = contexts[0]
        for context in contexts[1:]:
            length = next((i for i in range(length) if context[i] != first[i]), length)
        if length < MIN_SHARED_PREFIX:
            return None
        out = self._lm.get_decoder()(input_ids=self._tensor([first[:length]]), use_cache=True)
        return length, out.cache

    def _pad(self, rows: list[list[int]], left: bool = False) -> tuple[Any, Any]:
        torch = self.torch
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            ids[i, span] = torch.tensor(row, dtype=torch.long)
            mask[i, span] = 1
        return ids.to(self.device), mask.to(self.device)

    def _score_batch(self, items: list[tuple[list[int], list[list[int]]]], tails: list[list[float]],
                     prefix: tuple[int, Any] | None = None, names: list[str] | None = None) -> Any:
        """Each context's final hidden state (its next-token distribution is computed later,
        for the whole call at once); adds to `tails` the log-probs of choice tokens after the
        first. Row i runs through adapter `names[i]` when names are given."""
        torch = self.torch
        decoder = self._lm.get_decoder()
        contexts = [context for context, _ in items]
        lengths = self._tensor([len(c) for c in contexts])
        rows = torch.arange(len(items), device=self.device)
        multi = any(len(choice) > 1 for _, choices in items for choice in choices)
        if prefix is None:
            ids, mask = self._pad(contexts)
            with self._routed(names):
                out = decoder(input_ids=ids, attention_mask=mask, use_cache=multi and not self.windowed)
            last = out.last_hidden_state[rows, lengths - 1]
        else:  # only each context's own tokens run, attending to the shared prefix's cache
            shared, cache = prefix
            ids, own = self._pad([c[shared:] for c in contexts])
            mask = torch.cat([torch.ones(len(items), shared, dtype=torch.long, device=self.device), own], dim=1)
            positions = shared + torch.arange(ids.shape[1], device=self.device).unsqueeze(0).expand(len(items), -1)
            out = decoder(input_ids=ids, attention_mask=mask, position_ids=positions,
                          cache=_select_cache(cache, torch.zeros_like(rows)), use_cache=True)
            last = out.last_hidden_state[rows, lengths - shared - 1]
        if multi and self.windowed:
            self._add_whole_continuations(items, tails, names)
        elif multi:
            self._add_continuations(items, out.cache, mask, lengths, tails, names)
        return last

    def _add_continuations(self, items, cache, context_mask, lengths, tails, names=None) -> None:
        """Add the log-probs of every choice token after the first, reusing the context cache."""
        torch = self.torch
        decoder = self._lm.get_decoder()
        pairs = [(i, j) for i, (_, choices) in enumerate(items) for j, c in enumerate(choices) if len(c) > 1]
        inputs = [items[i][1][j][:-1] for i, j in pairs]  # each choice token predicts the one after it
        order = sorted(range(len(pairs)), key=lambda k: -len(inputs[k]))
        widths = [int(lengths[i]) + len(inputs[k]) for k, (i, _) in enumerate(pairs)]
        for chosen in self._batches(order, widths):
            chunk = [pairs[k] for k in chosen]
            rows = self._tensor([i for i, _ in chunk])
            ids, mask = self._pad([inputs[k] for k in chosen])
            positions = lengths[rows].unsqueeze(1) + torch.arange(ids.shape[1], device=self.device).unsqueeze(0)
            with self._routed([names[i] for i, _ in chunk] if names else None):
                hidden = decoder(input_ids=ids, attention_mask=torch.cat([context_mask[rows], mask], dim=1),
                                 position_ids=positions, cache=_select_cache(cache, rows),
                                 use_cache=True).last_hidden_state
            # Right-padded: row r's first len(choice) - 1 positions predict its choice's later tokens.
            self._add_picked(hidden, [(row, 0) for row in range(len(chunk))], chunk, items, tails, names)

    def _add_whole_continuations(self, items, tails, names=None) -> None:
        """`_add_continuations` without a cache: each context and choice run as one sequence
        (for sliding-window models, see `windowed`)."""
        decoder = self._lm.get_decoder()
        pairs = [(i, j) for i, (_, choices) in enumerate(items) for j, c in enumerate(choices) if len(c) > 1]
        inputs = [items[i][0] + items[i][1][j][:-1] for i, j in pairs]
        order = sorted(range(len(pairs)), key=lambda k: -len(inputs[k]))
        for chosen in self._batches(order, [len(x) for x in inputs]):
            chunk = [pairs[k] for k in chosen]
            ids, mask = self._pad([inputs[k] for k in chosen])
            with self._routed([names[i] for i, _ in chunk] if names else None):
                hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
            self._add_picked(hidden, [(row, len(items[i][0])) for row, (i, _) in enumerate(chunk)], chunk, items,
                             tails, names)

    def _add_picked(self, hidden, starts, chunk, items, tails, names) -> None:
        """Add to `tails` each choice's log-probs of its tokens after the first, from the hidden
        states at the positions that predict them (row and first position per choice in
        `starts`). The output layer runs on those positions alone, HEAD_ROWS at a time, and the
        sums reach the host in one copy: no padding position gets logits, no item a sync."""
        torch = self.torch
        counts = [len(items[i][1][j]) - 1 for i, j in chunk]
        rows = self._tensor([row for (row, _), count in zip(starts, counts) for _ in range(count)])
        columns = self._tensor([start + t for (_, start), count in zip(starts, counts) for t in range(count)])
        targets = self._tensor([token for i, j in chunk for token in items[i][1][j][1:]])
        owners = self._tensor([k for k, count in enumerate(counts) for _ in range(count)])
        routed = [names[i] for (i, _), count in zip(chunk, counts) for _ in range(count)] if names else None
        picked = hidden[rows, columns]
        values = torch.cat([self._target_logprobs(picked[a:a + HEAD_ROWS], targets[a:a + HEAD_ROWS],
                                                  routed[a:a + HEAD_ROWS] if routed else None)
                            for a in range(0, len(picked), HEAD_ROWS)])
        sums = torch.zeros(len(chunk), dtype=values.dtype, device=self.device).index_add_(0, owners, values)
        for (i, j), total in zip(chunk, sums.tolist()):
            tails[i][j] += total

    def _target_logprobs(self, hidden, targets, names) -> Any:
        """Each position's log-prob of its target token (float32 log-softmax over the vocabulary)."""
        with self._routed(names):
            logprobs = self.torch.log_softmax(head_logits(self._lm, hidden).float(), dim=-1)
        return logprobs[self.torch.arange(len(targets), device=self.device), targets]

    # --- generation --------------------------------------------------------------------

    def generate(self, requests: list[GenerateRequest]) -> list[Generation]:
        return self._generate(requests)

    def generate_mixed(self, requests: list[GenerateRequest], adapters: list[str | None]) -> list[list[Generation]]:
        """`requests` answered by each of `adapters` in shared batches, as `loglikelihood_mixed`."""
        names = self._mixed_names(adapters, len(requests))
        flat = self._generate(requests * len(adapters), names)
        return [flat[i * len(requests):(i + 1) * len(requests)] for i in range(len(adapters))]

    def _generate(self, requests: list[GenerateRequest], names: list[str] | None = None) -> list[Generation]:
        torch = self.torch
        results: list[Generation | None] = [None] * len(requests)
        # Trailing spaces stay with what comes next, as in scoring (see token_boundary).
        encoded = [self._fit([self._encode(token_boundary(r.context, "")[0], True)], r.max_new_tokens)[0]
                   for r in requests]
        # Requests with the same settings batch together; longest first.
        order = sorted(range(len(requests)), key=lambda i: (requests[i].max_new_tokens,
                                                            requests[i].stop, -len(encoded[i])))
        with torch.inference_mode(), self._context(names):
            start = 0
            while start < len(order):
                head = requests[order[start]]
                size = self.rows_per_batch(len(encoded[order[start]]) + head.max_new_tokens, generating=True)
                batch = [i for i in order[start:start + size]
                         if (requests[i].max_new_tokens, requests[i].stop) == (head.max_new_tokens, head.stop)]
                ids, mask = self._pad([encoded[i] for i in batch], left=True)
                routing = {"adapter_names": [names[i] for i in batch]} if names else {}
                output = self.model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=head.max_new_tokens,
                    do_sample=False, stop_strings=list(head.stop) or None, tokenizer=self.tokenizer,
                    pad_token_id=self.tokenizer.pad_token_id, **routing)
                for row, index in enumerate(batch):
                    new = output[row, ids.shape[1]:].tolist()
                    results[index] = self._cut(new, head.stop)
                start += len(batch)
                self._told(len(batch))
        return results

    def _cut(self, new_tokens: list[int], stop: tuple[str, ...]) -> Generation:
        special = set(self.tokenizer.all_special_ids)
        kept = []
        for token in new_tokens:
            if token in special:  # EOS or padding after it
                break
            kept.append(token)
        text = self.tokenizer.decode(kept)
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut >= 0:
            text = text[:cut]
            kept = self._encode(text, False)
        return Generation(text, len(kept))


def rows_for_memory(budget: int, width: int, config: Any, element_bytes: int) -> int:
    """Rows of `width` tokens whose inference activations fit in `budget` bytes: the KV cache of
    every layer and one layer's working set (hidden states, MLP, attention scores) per token, and
    one position's float32 logits per row (a generation step's); after the scoring output
    layer's own working set, which does not grow with the rows: it runs on at most HEAD_ROWS
    positions at a time (logits in the model's dtype plus their float32 log-softmax). An upper
    estimate, kept within 1..MAX_GPU_ROWS."""
    config = config.get_text_config()
    hidden = config.hidden_size
    inner = getattr(config, "intermediate_size", None) or 4 * hidden
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    per_token = element_bytes * (2 * config.num_hidden_layers * kv * head_dim + 4 * hidden + 3 * inner + heads * width)
    head = HEAD_ROWS * config.vocab_size * (element_bytes + 2 * 4)
    return max(1, min(MAX_GPU_ROWS, (budget - head) // (width * per_token + 4 * config.vocab_size)))


def head_logits(lm: Any, hidden: Any) -> Any:
    """The output layer on selected hidden states only (most positions need no logits),
    with the final soft-capping some architectures (Gemma 2) apply in their own forward."""
    logits = lm.get_output_embeddings()(hidden)
    cap = getattr(lm.config, "final_logit_softcapping", None)
    return cap * (logits / cap).tanh() if cap else logits


def _select_cache(cache: Any, rows: Any) -> Any:
    """A cache holding the given batch rows (with repeats), leaving the original intact:
    `reorder_cache` swaps each layer's tensors for new ones, so shallow layer copies suffice."""
    selected = copy.copy(cache)
    selected.layers = [copy.copy(layer) for layer in cache.layers]
    selected.reorder_cache(rows)
    return selected
