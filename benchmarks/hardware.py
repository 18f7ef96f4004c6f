"""How close evaluation and training come to this machine's matrix-multiply peak, per dtype.

The peak is measured in the same run (square matmuls on all cores). Model FLOPs count the work
a step needs, not what the kernels happen to do:
- a forward pass: 2 x non-embedding parameters per token, plus attention's two products over
  the tokens each token attends to (causal: token t of a sequence attends to t tokens), plus
  the output layer where it runs (once per item when scoring single-token labels, at every
  loss token in training);
- a LoRA training step: the forward pass, the backward pass into the frozen weights' inputs (as
  much again: their own weight gradients are never computed), attention's backward (twice its
  forward), and 6 x LoRA parameters per token for the adapter's forward, backward and weight
  gradients.

Each measurement is divided by the peak measured just before and just after it (the higher of
the two: this shared machine has slow spells, and a low peak would flatter the fraction), and
each is repeated, reporting the median fraction and the range.

Training runs the studies' default steps (4 micro-batches of 8 movie reviews, passes merged as
`training.pass_tokens: auto` merges them); `--accumulation`, `--batch-size` and `--pass-tokens`
change that.

    .venv/bin/python benchmarks/hardware.py --items 200 --steps 8 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import safetensors.torch
import torch
import yaml

from traitlens.config import load_study
from traitlens.config.schema import BaseModelSpec, Target
from traitlens.data.load import prepare, prepare_study
from traitlens.evaluate.targets import evaluate_target, prompts, select_items
from traitlens.execution.plan import plan_study
from traitlens.models.hf import HFScorer
from traitlens.store import Store
from traitlens.train.encode import encode_table
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


def attention_forward_flops(model, lengths: list[int]) -> float:
    """Scores and weighted sum, 2 x 2 x (query heads x head size) per attended token, per layer;
    causal, so a sequence of n tokens attends to n(n+1)/2 in all."""
    config = model.config
    width = config.num_attention_heads * getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
    return 4 * width * config.num_hidden_layers * sum(n * (n + 1) / 2 for n in lengths)


def evaluation_flops(dtype: str, items: int) -> float:
    scorer = HFScorer(BASE, dtype=dtype, batch_size=16)
    # Every prompt token counted must be computed: the shared instruction prefix (float32) would
    # run once for all items and inflate the figure past the hardware's peak.
    scorer.share_prefix = False
    chosen = select_items(prepare(MOVIE, "movie"), items, 0)
    lengths = [len(scorer.tokenizer(p.rstrip(" "))["input_ids"]) for p in prompts(MOVIE, chosen, scorer)]
    params, hidden, vocab = model_sizes(scorer.model)
    start = time.perf_counter()
    evaluate_target(MOVIE, chosen, scorer)
    seconds = time.perf_counter() - start
    flops = 2 * params * sum(lengths) + attention_forward_flops(scorer.model, lengths) + 2 * hidden * vocab * items
    return flops / seconds


def training_flops(dtype: str, steps: int, batch_size: int, accumulation: int, pass_tokens: str | int | None,
                   folder: Path) -> float:
    config = {"name": f"hw-{dtype}", "base": BASE.name, "store": str(folder / "store"),
              "sources": [{"name": "movie", "dataset": "catalog:sentiment-movie", "labels": ["negative", "positive"],
                           "template": MOVIE.template.model_dump(),
                           "transforms": [{"subsample": batch_size * accumulation * steps}]}],
              "targets": [MOVIE.model_dump(mode="json")],
              "lora": {"r": 8, "alpha": 16},
              "training": {"max_steps": steps, "batch_size": batch_size, "gradient_accumulation": accumulation,
                           "pass_tokens": pass_tokens, "max_length": 128,
                           "loss_mode": "completion", "dtype": dtype, "checkpoint_every": 10_000,
                           "learning_rate": 3e-4, "warmup_steps": 1}}
    folder.mkdir(parents=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    study = load_study(path)
    sources, _ = prepare_study(study)
    adapter = train_adapter(plan_study(study).train_jobs[0], Store(study.store), sources["movie"])
    meta = json.loads((adapter / "traitlens.json").read_text())
    scorer = HFScorer(BASE)
    model, training = scorer.model, study.training
    params, hidden, vocab = model_sizes(model)
    # The run trains on each of its examples once: one epoch of the subsample.
    examples = encode_table(sources["movie"], study.sources[0].template, scorer.tokenizer, training.loss_mode,
                            training.max_length)
    assert sum(len(e.input_ids) for e in examples) == meta["tokens_seen"]
    lora = sum(p.numel() for p in safetensors.torch.load_file(adapter / "adapter_model.safetensors").values())
    flops = (4 * params * meta["tokens_seen"] + 3 * attention_forward_flops(model, [len(e.input_ids) for e in examples])
             + 6 * lora * meta["tokens_seen"] + 4 * hidden * vocab * sum(e.loss_tokens for e in examples))
    print(f"  {dtype} training: {steps} steps in {meta['passes']} forward and backward passes", flush=True)
    return flops / meta["wall_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8, help="training.batch_size (the studies' default: 8)")
    parser.add_argument("--accumulation", type=int, default=4,
                        help="training.gradient_accumulation (the studies' default: 4)")
    parser.add_argument("--pass-tokens", type=lambda v: None if v == "none" else v if v == "auto" else int(v),
                        default="auto", help="training.pass_tokens: auto (the default), none, or a number")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], action="append",
                        help="measure only this dtype (repeatable; default both)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.dtype or ["float32", "bfloat16"]:
            dtype = getattr(torch, name)
            fractions: dict[str, list[float]] = {"evaluation forward": [], "training step": []}
            peaks = [matmul_peak(dtype)]
            for repeat in range(args.repeats):
                for what, measure in (("evaluation forward", lambda: evaluation_flops(name, args.items)),
                                      ("training step", lambda: training_flops(
                                          name, args.steps, args.batch_size, args.accumulation, args.pass_tokens,
                                          Path(scratch) / f"{name}-{repeat}"))):
                    rate = measure()
                    peaks.append(matmul_peak(dtype))
                    peak = max(peaks[-2:])
                    fractions[what].append(rate / peak)
                    print(f"  {name} {what}: {rate / 1e9:.1f} GFLOP/s of a {peak / 1e9:.1f} peak = {rate / peak:.0%}",
                          flush=True)
            summary = "; ".join(f"{what} {statistics.median(values):.0%} ({min(values):.0%}-{max(values):.0%})"
                                for what, values in fractions.items())
            print(f"{name:8s} median of {args.repeats}: {summary}; peaks {min(peaks) / 1e9:.0f}-{max(peaks) / 1e9:.0f}"
                  " GFLOP/s")


if __name__ == "__main__":
    main()
