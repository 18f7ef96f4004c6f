"""A short real fine-tune of each offline catalog model on movie-review sentiment."""

from __future__ import annotations

import pytest

from traitlens.config import load_study
from traitlens.config.schema import Target
from traitlens.data.load import prepare, prepare_study
from traitlens.execution.plan import plan_study
from traitlens.store import Store
from traitlens.train.encode import IGNORE, encode_table
from traitlens.train.loop import train_adapter

STUDY = """\
name: real-train
base: {base}
sources:
  - name: movie
    dataset: catalog:sentiment-movie
    labels: [negative, positive]
    template: {{instruction: "Is the sentiment of this movie review negative or positive?", trigger: Sentiment}}
    transforms: [{{subsample: 48}}]
targets:
  - name: movie
    dataset: catalog:sentiment-movie
    kind: classification
    labels: [negative, positive]
    abilities: [sentiment]
lora: {{r: 8, alpha: 16}}
training: {{learning_rate: 0.0005, warmup_steps: 2, max_steps: 12, batch_size: 4,
           gradient_accumulation: 1, max_length: 96, loss_mode: completion}}
"""


def held_out_loss(model, examples) -> float:
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for example in examples:
            ids = torch.tensor([example.input_ids])
            labels = torch.tensor([example.labels])
            # The output layer only where a label is predicted (the answer at the end): Gemma's
            # 262k-word head over every prompt position cost more than the training.
            first = int((labels[0] != IGNORE).nonzero()[0])
            logits = model(input_ids=ids, logits_to_keep=ids.shape[1] - first + 1).logits[0, :-1].float()
            targets = labels[0, first:]
            keep = targets != IGNORE
            total += torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
            count += int(keep.sum())
    return total / count


@pytest.mark.parametrize("base", ["smollm2-135m-instruct", "gemma3-270m"])
def test_real_run_lowers_held_out_loss_and_loads_with_plain_peft(write_study, base):
    import torch
    from peft import PeftModel

    from traitlens.models.load import load_base

    study = load_study(write_study(STUDY.format(base=base)))
    job = plan_study(study).train_jobs[0]
    sources, _ = prepare_study(study)
    path = train_adapter(job, Store(study.store), sources["movie"])
    meta = Store(study.store).adapter_meta(job.key)
    # Packing is checked exact on the real model in the dtype it trains in (bfloat16 where native).
    assert meta["paths"]["packing"] != "padded rows" and meta["dtype"] == job.settings.training.dtype

    base, tokenizer = load_base(study.base)
    held_out = prepare(Target(name="h", dataset="catalog:sentiment-movie", kind="classification",
                              labels=["negative", "positive"], abilities=["s"], split="test",
                              transforms=[{"subsample": 32}]), "held-out")
    examples = encode_table(held_out, study.sources[0].template, tokenizer, "completion", 96)
    before = held_out_loss(base, examples)
    probe = torch.tensor([examples[0].input_ids])
    with torch.no_grad():
        base_logits = base(input_ids=probe).logits
    adapted = PeftModel.from_pretrained(base, str(path))  # plain PEFT, no traitlens code
    after = held_out_loss(adapted, examples)
    with torch.no_grad():
        adapted_logits = adapted(input_ids=probe).logits
    assert after < before * 0.8, (before, after)
    assert (adapted_logits - base_logits).abs().max() > 1e-3
