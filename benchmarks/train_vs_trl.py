"""Training throughput: traitlens's loop against TRL's SFTTrainer on the same work, same run.

Same base (the offline SmolLM2-135M-Instruct), same examples (movie-review sentiment, rendered
by traitlens's template), same LoRA (r, alpha, all projections), same batch shape, optimizer
settings and completion-only loss, both in --dtype (float32 by default) with no gradient
checkpointing, unless --trl-defaults (then TRL keeps its CPU defaults: bfloat16 autocast and
gradient checkpointing). Absolute times on a shared 2-core machine are noisy; the ratio within
one run is the figure.

    .venv/bin/pip install -r benchmarks/requirements.txt
    .venv/bin/python benchmarks/train_vs_trl.py --steps 12 --repeats 3
    .venv/bin/python benchmarks/train_vs_trl.py --steps 12 --repeats 2 --dtype bfloat16 --trl-defaults
    .venv/bin/python benchmarks/train_vs_trl.py --steps 12 --repeats 2 --accumulation 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from traitlens.config import load_study
from traitlens.data.load import prepare_study
from traitlens.data.template import render, token_boundary
from traitlens.execution.plan import plan_study
from traitlens.store import Store
from traitlens.train.loop import train_adapter

TEMPLATE = {"instruction": "Is the sentiment of this movie review negative or positive?", "trigger": "Sentiment"}


def study_file(folder: Path, args: argparse.Namespace, run: int) -> Path:
    config = {
        "name": f"bench-{run}", "base": "smollm2-135m-instruct",
        "sources": [{"name": "movie", "dataset": "catalog:sentiment-movie", "labels": ["negative", "positive"],
                     "template": TEMPLATE, "transforms": [{"subsample": args.steps * args.batch * args.accumulation}]}],
        "targets": [{"name": "movie", "dataset": "catalog:sentiment-movie", "kind": "classification",
                     "labels": ["negative", "positive"], "abilities": ["sentiment"]}],
        "lora": {"r": args.rank, "alpha": 2 * args.rank},
        "training": {"learning_rate": 3e-4, "warmup_steps": 2, "epochs": 1, "batch_size": args.batch,
                     "gradient_accumulation": args.accumulation, "max_length": args.max_length,
                     "loss_mode": "completion",
                     "seeds": [run], "checkpoint_every": 10_000, "dtype": args.dtype},
        "store": str(folder / f"store-{run}"),
    }
    path = folder / f"study-{run}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_traitlens(path: Path) -> dict:
    import json

    study = load_study(path)
    sources, _ = prepare_study(study)
    job = plan_study(study).train_jobs[0]
    adapter = train_adapter(job, Store(study.store), sources["movie"])
    meta = json.loads((adapter / "traitlens.json").read_text())
    return {"tokens": meta["tokens_seen"], "seconds": meta["wall_seconds"],
            "final_loss": statistics.mean(meta["loss_curve"][-3:])}


def run_trl(path: Path, args: argparse.Namespace, seed: int) -> dict:
    import datasets
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from traitlens.models.load import load_base

    study = load_study(path)
    sources, _ = prepare_study(study)
    model, tokenizer = load_base(study.base, "float32")
    rows = []
    for row in sources["movie"].to_dict("records"):
        rendered = render(study.sources[0].template, row)
        prompt, answer = token_boundary(rendered.prompt, rendered.answer)
        rows.append({"prompt": prompt, "completion": answer})
    lora = study.lora
    config = SFTConfig(
        output_dir=str(path.parent / f"trl-{seed}"), per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=args.accumulation, num_train_epochs=1, learning_rate=3e-4,
        lr_scheduler_type="cosine", warmup_steps=2, max_length=args.max_length, completion_only_loss=True, packing=False,
        logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=seed,
        **({} if args.trl_defaults else {"bf16": args.dtype == "bfloat16", "gradient_checkpointing": False}))
    trainer = SFTTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_list(rows),
                         processing_class=tokenizer,
                         peft_config=LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0,
                                                target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"tokens": tokens, "seconds": seconds, "final_loss": statistics.mean(losses[-3:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12,
                        help="optimizer steps (one epoch of steps x batch x accumulation examples)")
    parser.add_argument("--batch", type=int, default=8, help="examples per micro-batch")
    parser.add_argument("--accumulation", type=int, default=1,
                        help="micro-batches per step, both tools (traitlens merges them into fewer passes on a CPU)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each tool")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="traitlens's training dtype, and TRL's unless --trl-defaults")
    parser.add_argument("--trl-defaults", action="store_true", help="let TRL use its CPU defaults")
    args = parser.parse_args()
    from traitlens.models.device import bf16_native, cpu_name

    print(f"machine: {cpu_name()}, bfloat16 native: {bf16_native('cpu')}")  # ratios differ by CPU
    results: dict[str, list[dict]] = {"traitlens": [], "trl": []}
    with tempfile.TemporaryDirectory() as scratch:
        for run in range(args.repeats):
            path = study_file(Path(scratch), args, run)
            results["traitlens"].append(run_traitlens(path))
            results["trl"].append(run_trl(path, args, run))
    for tool, runs in results.items():
        for run in runs:
            print(f"{tool:9s} {run['tokens']:6d} tokens in {run['seconds']:6.1f} s = "
                  f"{run['tokens'] / run['seconds']:6.1f} tok/s, final loss {run['final_loss']:.3f}")
    speed = {tool: statistics.median(r["tokens"] / r["seconds"] for r in runs) for tool, runs in results.items()}
    print(f"traitlens / TRL tokens per second (median of {args.repeats}): {speed['traitlens'] / speed['trl']:.2f}x")


if __name__ == "__main__":
    main()
