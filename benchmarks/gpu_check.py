"""The GPU check: traitlens trains and scores on a CUDA device as it does on the CPU.

A randomly initialised model of SmolLM2-135M's architecture (weights cannot travel to a GPU
machine; a random model exercises every code path and costs the same FLOPs) and a few hundred
catalog items exported to JSONL. Two adapters are trained on the device; the base and both
adapters are then scored on two targets on the device (bfloat16 where native, several adapters
per batch, batch sizes from free memory: every `auto`) and again on the CPU in float32, one
adapter at a time. Reported: the placements the plan resolved, per-cell agreement of
predictions and the largest log-probability gap between the two, training tokens/s, the
2-adapter study's wall time, the share of the device's matmul peak (bfloat16 on a GPU,
measured in the same run) that training reaches, and evaluation items/s on the device with
mixed-adapter batches and one adapter at a time (scoring alone, the same adapters): their
ratio is the mixed-adapter speed-up.

Model FLOPs are counted as in `benchmarks/hardware.py`, more roughly: 2 x non-embedding
parameters per token for a forward pass, twice that for a training step (the backward pass into
the frozen weights' inputs; their own gradients are never computed); attention and the output
layer are left out, so the shares are slight underestimates.

Two steps: `prepare` here (reads the offline catalog, writes `.gpu_check/`: config, tokenizer,
items, about 4 MB), then `run` where the GPU is, with only torch, transformers, peft and the
packages in KINDS.md installed, plus pydantic's wheels shipped beside it:

    .venv/bin/python benchmarks/gpu_check.py prepare .gpu_check
    .venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_17_x86_64 -d .gpu_check/wheels \
        pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    # on the GPU machine, from the checkout (.gpu_check carried beside it):
    pip install --no-deps --target /tmp/site .gpu_check/wheels/*.whl && export PYTHONPATH=/tmp/site
    python3 benchmarks/gpu_check.py run .gpu_check --device cuda --json report.json
    python3 benchmarks/load_memory.py --model .gpu_check/random-model --device cuda

`--tiny` prepares a two-layer model instead (the test suite runs the whole check on the CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout, installed or not

TARGETS = {"movie": ("sentiment-movie", ["negative", "positive"]),
           "amazon": ("sentiment-amazon", ["negative", "positive"])}
SOURCES = {"movie": "sentiment-movie", "tweets": "sentiment-tweets"}


def prepare(out: Path, items: int, tiny: bool) -> None:
    from traitlens.data.catalog import materialize
    from traitlens.models.load import materialize_catalog_model

    model = materialize_catalog_model("smollm2-135m-instruct")
    (out / "model").mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (model / name).exists():
            shutil.copy(model / name, out / "model" / name)
    config = json.loads((model / "config.json").read_text())
    if tiny:
        config.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16)
    (out / "model" / "config.json").write_text(json.dumps(config, indent=1))
    import pandas as pd

    for name, catalog in {**SOURCES, **{f"target-{t}": c for t, (c, _) in TARGETS.items()}}.items():
        split = "test" if name.startswith("target-") else "train"
        table = pd.read_json(materialize(catalog) / f"{split}.jsonl", lines=True, dtype=False)
        table.sample(n=min(items, len(table)), random_state=0).to_json(out / f"{name}.jsonl", orient="records",
                                                                        lines=True)
    print(f"wrote {out} ({sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 2**20:.1f} MB)")


def study_text(folder: Path, device: str, steps: int, items: int, train_dtype: str, eval_dtype: str,
               mixed: str) -> str:
    sources = "".join(f"""
  - name: {name}
    dataset: {folder / f'{name}.jsonl'}
    labels: [negative, positive]
    template: {{instruction: "Is the sentiment negative or positive?", trigger: Sentiment}}""" for name in SOURCES)
    targets = "".join(f"""
  - name: {name}
    dataset: {folder / f'target-{name}.jsonl'}
    kind: classification
    labels: {labels}
    abilities: [sentiment]
    template: {{instruction: "Is the sentiment negative or positive?", trigger: Sentiment}}"""
                      for name, (_, labels) in TARGETS.items())
    return f"""name: gpu-check
base: {folder / 'random-model'}
sources:{sources}
targets:{targets}
lora: {{r: 16, alpha: 32}}
training: {{learning_rate: 0.0003, warmup_steps: 2, max_steps: {steps}, max_length: 256, dtype: {train_dtype}}}
evaluation: {{limit: {items}, dtype: {eval_dtype}, mixed_adapters: {mixed}}}
execution: {{device: {device}}}
"""


def matmul_peak(device: str, dtype) -> float:
    """FLOP/s of square matmuls on `device`: 4096-wide on a GPU, 1024 on a CPU (a 4096 one takes
    seconds there)."""
    import torch

    size, repeats = (4096, 20) if device.startswith("cuda") else (1024, 5)

    a = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ a
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ a
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def run_study(text: str, folder: Path, name: str, adapters_from=None):
    """Run the study `text` in its own store; `adapters_from`: (plan, store) whose adapters are
    copied in first (the study asks for the same training, so the same keys), leaving only the
    evaluations to run. (plan, store, wall seconds)."""
    from rich.console import Console

    from traitlens.config import load_study
    from traitlens.data.load import prepare_study
    from traitlens.execution.local import run_plan
    from traitlens.execution.plan import plan_study
    from traitlens.store import Store

    path = folder / f"{name}.yaml"
    path.write_text(text)
    plan = plan_study(load_study(path))
    store = Store(folder / f"store-{name}")
    if adapters_from is not None:
        source_plan, source_store = adapters_from
        for job, ours in zip(source_plan.train_jobs, plan.train_jobs):
            assert job.key == ours.key
            scratch = store.scratch_dir(job.key)
            shutil.copytree(source_store.adapter_path(job.key), scratch, dirs_exist_ok=True)
            store.start_job(job.key, "train", job.label, job.spec, "gpu-check")
            store.put_adapter(job.key, job.source, job.seed, scratch, source_store.adapter_meta(job.key))
    sources, targets = prepare_study(plan.study)
    started = time.perf_counter()
    summary = run_plan(plan, store, sources, targets, Console(stderr=True))
    if summary.failed:
        raise SystemExit(f"{name}: failed jobs {summary.failed}")
    return plan, store, time.perf_counter() - started


def run(folder: Path, device: str, steps: int, items: int, mixed: str = "auto") -> dict:
    """The device study (every setting `auto`), its evaluations again on the device with and
    without mixed-adapter batches, and on the CPU in float32 one adapter at a time."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from traitlens.models.device import local_hardware

    folder = folder.resolve()
    model_dir = folder / "random-model"
    if not (model_dir / "config.json").exists():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder / "model"))
        model.save_pretrained(model_dir)
        AutoTokenizer.from_pretrained(folder / "model").save_pretrained(model_dir)
    for old in folder.glob("store-*"):
        shutil.rmtree(old)
    non_embedding = sum(p.numel() for n, p in AutoModelForCausalLM.from_pretrained(model_dir).named_parameters()
                        if "embed" not in n and "lm_head" not in n)

    plan, store, device_seconds = run_study(study_text(folder, device, steps, items, "auto", "auto", mixed),
                                            folder, "device")
    placement = plan.placements["train"]  # what the study resolved, as every job ran it
    hardware = local_hardware(placement.device)
    train_dtype, eval_dtype = plan.study.training.dtype, plan.study.evaluation.dtype
    peak = matmul_peak(hardware.device, torch.bfloat16 if train_dtype == "bfloat16" else torch.float32)
    adapters = [store.adapter_meta(job.key) for job in plan.train_jobs]
    train_tokens = sum(meta["tokens_seen"] for meta in adapters)
    train_seconds = sum(meta["wall_seconds"] for meta in adapters)
    eval_items = sum(store.cell(job.key)["n_items"] for job in plan.eval_jobs)
    mixed_used = sorted({store.cell(job.key)["meta"]["mixed_batch"] for job in plan.eval_jobs})

    # Scoring alone on the device, each adapter's rows mixed in one batch and one adapter at a time.
    rates = {}
    for mixing in ("true", "false"):
        text = study_text(folder, device, steps, items, train_dtype, eval_dtype, mixing)
        rates[mixing] = eval_items / run_study(text, folder, f"device-mixed-{mixing}", (plan, store))[2]
    # The same adapters scored on the CPU in float32, one at a time: the reference.
    cpu_text = study_text(folder, "cpu", steps, items, train_dtype, "float32", "false")
    cpu_plan, cpu_store, _ = run_study(cpu_text, folder, "cpu", (plan, store))
    agreement, gaps = {}, []
    for job, cpu_job in zip(plan.eval_jobs, cpu_plan.eval_jobs):
        ours, theirs = store.items(job.key), cpu_store.items(cpu_job.key)
        agreement[f"{job.model} on {job.target}"] = sum(
            a["prediction"] == b["prediction"] for a, b in zip(ours, theirs)) / len(ours)
        gaps += [abs(a["choice_logprobs"][k] - b["choice_logprobs"][k]) for a, b in zip(ours, theirs)
                 for k in a["choice_logprobs"]]
    report = {
        "device": hardware.describe(), "torch": torch.__version__, "python": platform.python_version(),
        "placements": {kind: {"device": p.device, "dtype": p.dtype, "deterministic": p.deterministic}
                       for kind, p in plan.placements.items()},
        "dtype": eval_dtype, "mixed_batches": mixed_used,
        "adapter_paths": adapters[0]["paths"], "peak_tflops": peak / 1e12,
        "train_tokens_per_s": train_tokens / train_seconds,
        "train_share_of_peak": 4 * non_embedding * train_tokens / train_seconds / peak,
        "eval_items_per_s": rates["true" if mixed_used == [True] else "false"],  # as the study scored
        "eval_items_per_s_mixed": rates["true"], "eval_items_per_s_one_at_a_time": rates["false"],
        "mixed_speedup": rates["true"] / rates["false"], "device_seconds": device_seconds,
        "agreement_min": min(agreement.values()), "agreement": agreement, "max_logprob_gap": max(gaps),
    }
    print(json.dumps(report, indent=1))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="export config, tokenizer and items (needs the offline catalog)")
    p.add_argument("folder", type=Path)
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--tiny", action="store_true", help="a two-layer model (for the CPU test)")
    r = sub.add_parser("run", help="train and score on the device and on the CPU, report")
    r.add_argument("folder", type=Path)
    r.add_argument("--device", default="cuda")
    r.add_argument("--steps", type=int, default=30)
    r.add_argument("--items", type=int, default=200, help="items per target")
    r.add_argument("--mixed", default="auto", choices=["auto", "true", "false"],
                   help="evaluation.mixed_adapters on the device (auto: on a GPU, yes)")
    r.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.folder, args.items, args.tiny)
    else:
        report = run(args.folder, args.device, args.steps, args.items, args.mixed)
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
