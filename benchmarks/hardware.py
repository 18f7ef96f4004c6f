"""How close evaluation and training come to this machine's matrix-multiply peak, per dtype.

The peak is measured in the same run (square matmuls on all cores). Model FLOPs are counted the
usual way: 2 x non-embedding parameters per token for a forward pass, plus the output layer
where it runs (once per item when scoring single-token labels, at every loss token in
training); a LoRA training step adds about 2 x parameters per token for the backward pass
through the frozen weights (the adapter's own weight gradients are negligible). Attention's
own FLOPs are left out, so the fractions are slight underestimates.

    .venv/bin/python benchmarks/hardware.py --items 200 --steps 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

from traitlens.config import load_study
from traitlens.config.schema import BaseModelSpec, Target
from traitlens.data.load import prepare, prepare_study
from traitlens.evaluate.targets import evaluate_target, prompts, select_items
from traitlens.execution.plan import plan_study
from traitlens.models.hf import HFScorer
from traitlens.store import Store
from traitlens.train.loop import train_adapter

BASE = BaseModelSpec(name="smollm2-135m-instruct")
MOVIE = Target(name="movie", dataset="catalog:sentiment-movie", kind="classification",
               labels=["negative", "positive"], abilities=["sentiment"],
               template={"instruction": "Is the sentiment of this movie review negative or positive?",
                         "trigger": "Sentiment", "format": "{instruction}\n{input}\n{trigger}: {answer}"})


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10, rounds: int = 3) -> float:
    """The best of a few rounds: a slow spell of this shared machine should not lower the peak
    (which would flatter the fractions below)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * size ** 3 * repeats / (time.perf_counter() - start))
    return best


def model_sizes(model) -> tuple[int, int, int]:
    """(non-embedding parameters, hidden size, vocabulary size)."""
    embedding = model.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    return total - embedding.numel(), embedding.shape[1], embedding.shape[0]


def evaluation_flops(dtype: str, items: int) -> float:
    scorer = HFScorer(BASE, dtype=dtype, batch_size=16)
    # Every prompt token counted must be computed: the shared instruction prefix (float32) would
    # run once for all items and inflate the figure past the hardware's peak.
    scorer.share_prefix = False
    chosen = select_items(prepare(MOVIE, "movie"), items, 0)
    tokens = sum(len(scorer.tokenizer(p.rstrip(" "))["input_ids"]) for p in prompts(MOVIE, chosen, scorer))
    params, hidden, vocab = model_sizes(scorer.model)
    start = time.perf_counter()
    evaluate_target(MOVIE, chosen, scorer)
    seconds = time.perf_counter() - start
    return (2 * params * tokens + 2 * hidden * vocab * items) / seconds


def training_flops(dtype: str, steps: int, folder: Path) -> float:
    config = {"name": f"hw-{dtype}", "base": BASE.name, "store": str(folder / dtype),
              "sources": [{"name": "movie", "dataset": "catalog:sentiment-movie", "labels": ["negative", "positive"],
                           "template": MOVIE.template.model_dump(), "transforms": [{"subsample": 8 * steps}]}],
              "targets": [MOVIE.model_dump(mode="json")],
              "lora": {"r": 8, "alpha": 16},
              "training": {"max_steps": steps, "batch_size": 8, "gradient_accumulation": 1, "max_length": 128,
                           "loss_mode": "completion", "dtype": dtype, "checkpoint_every": 10_000,
                           "learning_rate": 3e-4, "warmup_steps": 1}}
    path = folder / f"{dtype}.yaml"
    path.write_text(yaml.safe_dump(config))
    study = load_study(path)
    sources, _ = prepare_study(study)
    adapter = train_adapter(plan_study(study).train_jobs[0], study, Store(study.store), sources["movie"])
    meta = json.loads((adapter / "traitlens.json").read_text())
    params, hidden, vocab = model_sizes(HFScorer(BASE).model)
    loss_tokens = 2 * 8 * steps  # completion mode: the label token and EOS of each example
    # forward + backward through frozen weights: 4 x parameters per token; the output layer
    # (forward and backward) only at loss tokens.
    flops = 4 * params * meta["tokens_seen"] + 4 * hidden * vocab * loss_tokens
    return flops / meta["wall_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            peak = matmul_peak(dtype)
            forward = evaluation_flops(name, args.items)
            train = training_flops(name, args.steps, Path(scratch))
            print(f"{name:8s} matmul peak {peak / 1e9:6.1f} GFLOP/s; evaluation forward {forward / 1e9:6.1f} "
                  f"({forward / peak:.0%}); training step {train / 1e9:6.1f} ({train / peak:.0%})")


if __name__ == "__main__":
    main()
