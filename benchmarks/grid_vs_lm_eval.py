"""A whole grid: the base and 4 adapters on 3 targets, traitlens in one process against one
lm-evaluation-harness process per model (what a user scripting it by hand would run).

Uses the quickstart study's adapters (trained here first if the store lacks them) and its three
sentiment targets, each cut to the same --items for both tools. Each side's wall time covers
everything it needs: traitlens loads the base once and switches adapters; lm-eval starts a
process, indexes its tasks and loads base + adapter for every model.

    .venv/bin/pip install -r benchmarks/requirements.txt
    .venv/bin/python benchmarks/grid_vs_lm_eval.py --items 300
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from eval_vs_lm_eval import lm_eval_task
from traitlens.config import load_study
from traitlens.data.load import prepare_study
from traitlens.evaluate.targets import evaluate_target, select_items
from traitlens.execution.local import run_plan
from traitlens.execution.plan import plan_study
from traitlens.models.hf import HFScorer
from traitlens.models.load import resolve
from traitlens.store import Store

STUDY = Path(__file__).parent.parent / "examples" / "quickstart.yaml"
TARGETS = ("movie", "amazon", "nyt-3way")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    study = load_study(STUDY)
    plan, store = plan_study(study), Store(study.store)
    sources, targets = prepare_study(study)
    run_plan(plan, store, sources, targets, Console(), only=lambda job: job.kind == "train")
    adapters = {job.source: store.adapter_path(job.key) for job in plan.train_jobs}
    specs = [study.target(name) for name in TARGETS]
    items = {t.name: select_items(targets[t.name], args.items, 0) for t in specs}

    start = time.perf_counter()
    scorer = HFScorer(study.base, dtype=args.dtype, batch_size=args.batch)
    for source in [None, *adapters]:
        scorer.use_adapter(source, adapters.get(source))
        for target in specs:
            evaluate_target(target, items[target.name], scorer)
    ours = time.perf_counter() - start

    model = resolve(study.base)
    with tempfile.TemporaryDirectory() as scratch:
        for target in specs:
            lm_eval_task(Path(scratch), target.name, target, items[target.name], scorer.tokenizer)
        tasks = ",".join(f"bench_{t.name.replace('-', '_')}" for t in specs)
        start = time.perf_counter()
        for source in [None, *adapters]:
            model_args = f"pretrained={model},dtype={args.dtype}" + (f",peft={adapters[source]}" if source else "")
            subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", model_args,
                            "--tasks", tasks, "--include_path", scratch, "--device", "cpu",
                            "--batch_size", str(args.batch)], check=True, capture_output=True)
        theirs = time.perf_counter() - start
    cells = (1 + len(adapters)) * len(specs)
    print(f"grid of {cells} cells x {args.items} items ({args.dtype}): traitlens {ours:.0f} s in one process, "
          f"lm-eval {theirs:.0f} s in {1 + len(adapters)} processes -> {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
