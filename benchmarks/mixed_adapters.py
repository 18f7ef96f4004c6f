"""Scoring several adapters in one batch (PEFT's mixed-adapter batches) against one at a time.

The base and K adapters score the same movie-review items; "one at a time" switches adapters
between calls (in float32 each is merged into the weights, the scorer's CPU default), "mixed"
sends all K+1 models in one call, each row through its own adapter. Both run in the same
process, alternating, and the figure is the ratio of their items per second (median of the
repeats). Predictions are compared item by item. Adapters are random LoRA weights (r=8 on every
projection, as the quickstart trains): speed does not depend on what they learned.

    .venv/bin/python benchmarks/mixed_adapters.py --adapters 4 --items 96 --repeats 3
    .venv/bin/python benchmarks/mixed_adapters.py --device cuda --dtype bfloat16   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from traitlens.config.schema import BaseModelSpec, Target
from traitlens.data.load import prepare
from traitlens.evaluate.targets import evaluate_models, select_items
from traitlens.models.device import local_hardware
from traitlens.models.hf import HFScorer
from traitlens.models.load import resolve

BASE = BaseModelSpec(name="smollm2-135m-instruct")
MOVIE = Target(name="movie", dataset="catalog:sentiment-movie", kind="classification",
               labels=["negative", "positive"], abilities=["sentiment"],
               template={"instruction": "Is the sentiment of this movie review negative or positive?",
                         "trigger": "Sentiment"})


def random_adapters(folder: Path, count: int) -> dict[str, Path]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = {}
    for index in range(count):
        torch.manual_seed(index)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(resolve(BASE)), LoraConfig(
            r=8, lora_alpha=16, init_lora_weights=False,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data *= 0.05  # a trained adapter's size of change, not a random model's
        model.save_pretrained(folder / f"a{index}")
        out[f"a{index}"] = folder / f"a{index}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--items", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    hardware = local_hardware(args.device)
    print(f"hardware: {hardware.describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    items = select_items(prepare(MOVIE, "movie"), args.items, 0)
    with tempfile.TemporaryDirectory() as scratch:
        adapters = random_adapters(Path(scratch), args.adapters)
        scorer = HFScorer(BASE, dtype=args.dtype, device=args.device)
        for key, path in adapters.items():
            scorer.use_adapter(key, path)
        models = [None, *adapters]
        rates = {"one at a time": [], "mixed": []}
        results = {}
        for _ in range(args.repeats):
            started = time.perf_counter()
            results["one at a time"] = []
            for key in models:
                scorer.use_adapter(key)
                results["one at a time"] += evaluate_models(MOVIE, items, scorer, None)
            rates["one at a time"].append(len(models) * len(items) / (time.perf_counter() - started))
            started = time.perf_counter()
            results["mixed"] = evaluate_models(MOVIE, items, scorer, models)
            rates["mixed"].append(len(models) * len(items) / (time.perf_counter() - started))
    same = sum(a["prediction"] == b["prediction"] for one, mixed in zip(results["one at a time"], results["mixed"])
               for a, b in zip(one, mixed))
    gap = max(abs(a["choice_logprobs"][k] - b["choice_logprobs"][k])
              for one, mixed in zip(results["one at a time"], results["mixed"]) for a, b in zip(one, mixed)
              for k in a["choice_logprobs"])
    for name, values in rates.items():
        print(f"{name:>14}: {statistics.median(values):6.1f} items/s (runs: {', '.join(f'{v:.1f}' for v in values)})")
    print(f"mixed / one at a time: {statistics.median(rates['mixed']) / statistics.median(rates['one at a time']):.2f}x "
          f"({len(models)} models x {len(items)} items, {args.dtype}); identical predictions "
          f"{same}/{len(models) * len(items)}, largest log-prob gap {gap:.1e}")


if __name__ == "__main__":
    main()
