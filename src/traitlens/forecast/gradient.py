"""The gradient-affinity probe: how well a source's training signal lines up with each target's,
measured before any training (#23; after TAG, Fifty et al. 2021, here as a gradient cosine).

A fresh LoRA adapter is put on the base (the study's LoRA settings and first seed). For each
source, the gradient of its training loss on a sample of its examples; for each target, the
gradient of the loss of the gold answer (the continuation evaluation scores) on a sample of its
items. A cell's affinity is the cosine between the two: a first step on the source lowers the
target's loss in proportion to it (first-order look-ahead, scale removed).

A fresh adapter's B matrices are zero, so only B receives gradient: the full weight gradient
seen through the random A, which keeps cosines approximately (a random projection).

The affinity is a score, not a delta: within a target it ranks the sources, and the traits
(which standardise each target) are fitted from it; deltas come from a ridge fitted on
measured cells (`forecast.profiles.feature_forecast(extra=...)`).

Cost, in `forecast.cost`'s units: every token of every example used, forward and backward
(TRAIN_PASSES per token). The samples grow together, up to MAX_EXAMPLES per dataset, until the
next one would pass the budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from traitlens.config.schema import Study, Target
from traitlens.data.load import OPTION_LINE
from traitlens.data.template import render
from traitlens.errors import TraitlensError
from traitlens.evaluate.targets import select_items
from traitlens.forecast.cost import TRAIN_PASSES
from traitlens.train.encode import Encoded, encode_example, encode_table

if TYPE_CHECKING:
    from traitlens.models.device import Placement

MAX_EXAMPLES = 64  # per dataset: past this the cosine moves little and the cost keeps growing
MIN_EXAMPLES = 2
MICRO_BATCH = 8


def gradient_encodings(study: Study, sources: dict[str, pd.DataFrame], targets: dict[str, pd.DataFrame],
                       tokenizer) -> tuple[dict[str, list[Encoded]], dict[str, list[Encoded]]]:
    """Up to MAX_EXAMPLES encoded examples per source (its training loss) and per target (the
    gold continuation's loss), a seeded sample of each."""
    seed = study.training.seeds[0]
    training = study.training
    encoded_sources = {s.name: encode_table(select_items(sources[s.name], MAX_EXAMPLES, seed), s.template, tokenizer,
                                            training.loss_mode, training.max_length) for s in study.sources}
    encoded_targets = {}
    for target in study.targets:
        rows = select_items(targets[target.name], MAX_EXAMPLES, seed).to_dict("records")
        encoded_targets[target.name] = [
            encode_example(render(target.template, row, tokenizer).prompt, _gold(target, row), tokenizer,
                           "completion", training.max_length) for row in rows]
    return encoded_sources, encoded_targets


def probe_size(encoded: dict[str, list[Encoded]], budget_tokens: float) -> tuple[int, int]:
    """(examples per dataset, cost): the most examples per dataset whose cost fits the budget."""
    cost = lambda n: TRAIN_PASSES * sum(len(e.input_ids) for examples in encoded.values() for e in examples[:n])
    n = max((n for n in range(1, MAX_EXAMPLES + 1) if cost(n) <= budget_tokens), default=0)
    if n < MIN_EXAMPLES:
        raise TraitlensError(f"a budget of {budget_tokens:,.0f} tokens buys fewer than {MIN_EXAMPLES} examples per "
                             f"dataset for the gradient probe ({cost(MIN_EXAMPLES):,} tokens); raise --budget.")
    return n, cost(n)


def gradient_affinity(study: Study, placement: Placement, encoded_sources: dict[str, list[Encoded]],
                      encoded_targets: dict[str, list[Encoded]], examples: int, diagonal: set) -> pd.DataFrame:
    """Sources x targets cosines of LoRA gradients (see the module docstring), computed where
    `placement` (the plan's "probe": this process, float32) says; `diagonal`: (source, target)
    pairs to mask."""
    with placement.running():  # deterministic; the device's memory given back for what the driver does next
        return _affinity(study, placement, encoded_sources, encoded_targets, examples, diagonal)


def _affinity(study: Study, placement: Placement, encoded_sources: dict[str, list[Encoded]],
              encoded_targets: dict[str, list[Encoded]], examples: int, diagonal: set) -> pd.DataFrame:
    import torch
    from peft import LoraConfig, get_peft_model

    from traitlens.train.loop import loss_logits

    torch.manual_seed(study.training.seeds[0])
    model, tokenizer = placement.load(study.base)
    peft_model = get_peft_model(model, LoraConfig(r=study.lora.r, lora_alpha=study.lora.alpha, lora_dropout=0.0,
                                                  target_modules=list(study.lora.target_modules),
                                                  task_type="CAUSAL_LM"))
    peft_model.eval()  # no dropout: the same examples give the same gradient
    params = [p for p in peft_model.parameters() if p.requires_grad]
    lm = peft_model.get_base_model()

    def gradient(batch: list[Encoded]) -> np.ndarray:
        peft_model.zero_grad(set_to_none=True)
        loss_tokens = max(1, sum(e.loss_tokens for e in batch))
        for start in range(0, len(batch), MICRO_BATCH):
            logits, labels = loss_logits(lm.get_decoder(), lm, batch[start:start + MICRO_BATCH],
                                         tokenizer.pad_token_id, None)
            (torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum") / loss_tokens).backward()
        flat = torch.cat([p.grad.flatten() for p in params if p.grad is not None])
        return (flat / flat.norm().clamp_min(1e-12)).cpu().numpy()

    source_grads = {name: gradient(batch[:examples]) for name, batch in encoded_sources.items()}
    target_grads = {name: gradient(batch[:examples]) for name, batch in encoded_targets.items()}
    affinity = pd.DataFrame({t: {s: float(g @ target_grads[t]) for s, g in source_grads.items()}
                             for t in target_grads}).rename_axis(index="source", columns="target")
    for source, target in diagonal:
        if source in affinity.index and target in affinity.columns:
            affinity.loc[source, target] = np.nan
    return affinity


def _gold(target: Target, row: dict) -> str:
    """The continuation evaluation counts as right: the label, the gold option (its letter or
    its text) or the reference answer."""
    if target.kind == "multiple_choice" and target.choices != "letters":
        options = dict(OPTION_LINE.findall(row.get("options") or ""))
        return options.get(row["answer"], row["answer"])
    return str(row["answer"])  # the prompt's trailing space moves onto it, as in training (`token_boundary`)
