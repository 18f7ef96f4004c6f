"""Evaluation speed: traitlens's scorer against lm-evaluation-harness on the same items, same run.

Two targets on the offline SmolLM2-135M-Instruct: binary movie-review sentiment (single-token
labels) and CommonsenseQA scored by its multi-token option texts. Both tools get the same
prompts: traitlens renders "...Sentiment: {answer}", and lm-evaluation-harness gets the prompt
without the trailing space because its `target_delimiter` puts a space before each choice.
Each side is timed from model load to predictions (what a user waits for); the figure is the
median ratio of items per second over alternating runs, with the share of identical predictions.

    .venv/bin/pip install -r benchmarks/requirements.txt
    .venv/bin/python benchmarks/eval_vs_lm_eval.py --items 300 --targets sentiment
    .venv/bin/python benchmarks/eval_vs_lm_eval.py --items 100 --targets mc-texts
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from traitlens.config.schema import BaseModelSpec, Target
from traitlens.data.load import OPTION_LINE, prepare
from traitlens.data.template import render, token_boundary
from traitlens.evaluate.targets import evaluate_target, select_items
from traitlens.models.hf import HFScorer
from traitlens.models.load import materialize_catalog_model

TARGETS = {
    "sentiment": Target(name="movie", dataset="catalog:sentiment-movie", kind="classification",
                        labels=["negative", "positive"], abilities=["sentiment"],
                        template={"instruction": "Is the sentiment of this movie review negative or positive?",
                                  "trigger": "Sentiment", "format": "{instruction}\n{input}\n{trigger}: {answer}"}),
    "mc-texts": Target(name="csqa", dataset="catalog:commonsense-qa", kind="multiple_choice", choices="texts",
                       abilities=["reasoning"],
                       template={"instruction": "Choose the best answer.",
                                 "format": "{instruction}\n{input}\n{trigger}: {answer}"}),
}


def lm_eval_task(folder: Path, name: str, target: Target, items, tokenizer) -> list[int]:
    """Write a local lm-evaluation-harness task over exactly these items; return gold indices."""
    rows, golds = [], []
    for row in items.to_dict("records"):
        context, _ = token_boundary(render(target.template, row, tokenizer).prompt, "")
        if target.kind == "classification":
            choices, gold = list(target.labels), target.labels.index(row["answer"])
        else:
            parsed = OPTION_LINE.findall(row["options"])
            choices, gold = [text for _, text in parsed], [letter for letter, _ in parsed].index(row["answer"])
        rows.append({"prompt": context, "choices": choices, "gold": gold})
        golds.append(gold)
    # lm-eval puts `target_delimiter` (a space by default) between prompt and choice; a prompt
    # that ends its line already (the paper's "Trigger:\n" format) needs none.
    delimiter = '""' if rows and rows[0]["prompt"].endswith("\n") else '" "'
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / f"{name}.yaml").write_text(
        f"task: bench_{name.replace('-', '_')}\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: \"{{prompt}}\"\ndoc_to_choice: \"{{choices}}\"\n"
        f"doc_to_target: \"{{{{gold}}}}\"\ntarget_delimiter: {delimiter}\nmetric_list:\n  - metric: acc\n")
    return golds


def run_lm_eval(folder: Path, model: Path, name: str, dtype: str, batch: int) -> tuple[float, list[int]]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model},dtype={dtype}",
                                  tasks=[f"bench_{name.replace('-', '_')}"], batch_size=batch,
                                  device="cpu",
                                  task_manager=TaskManager(include_path=str(folder)), log_samples=True)
    seconds = time.perf_counter() - start
    samples = sorted(out["samples"][f"bench_{name.replace('-', '_')}"], key=lambda s: s["doc_id"])
    predictions = [int(np.argmax([r[0] for r in s["filtered_resps"]])) for s in samples]
    return seconds, predictions


def run_traitlens(model: Path, target: Target, items, dtype: str, batch: int) -> tuple[float, list[int]]:
    start = time.perf_counter()
    scorer = HFScorer(BaseModelSpec(name=str(model)), dtype=dtype, batch_size=batch)
    results = evaluate_target(target, items, scorer)
    seconds = time.perf_counter() - start
    if target.kind == "classification":
        return seconds, [target.labels.index(r["prediction"]) for r in results]
    return seconds, [ord(r["prediction"]) - ord("A") for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each tool; the median ratio counts")
    args = parser.parse_args()
    from traitlens.models.device import bf16_native, cpu_name

    print(f"machine: {cpu_name()}, bfloat16 native: {bf16_native('cpu')}")  # ratios differ by CPU
    model = materialize_catalog_model("smollm2-135m-instruct")
    tokenizer = HFScorer(BaseModelSpec(name=str(model))).tokenizer
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.targets:
            target = TARGETS[name]
            items = select_items(prepare(target, name), args.items, 0)
            golds = lm_eval_task(Path(scratch), name, target, items, tokenizer)
            for dtype in args.dtypes:
                ratios = []
                for _ in range(args.repeats):  # alternating, so slow spells of the machine hit both
                    ours_s, ours = run_traitlens(model, target, items, dtype, args.batch)
                    theirs_s, theirs = run_lm_eval(Path(scratch), model, name, dtype, args.batch)
                    ratios.append(theirs_s / ours_s)
                    print(f"{name:9s} {dtype:8s} {len(items)} items: traitlens {len(items) / ours_s:6.1f} items/s, "
                          f"lm-eval {len(items) / theirs_s:6.1f} items/s -> {theirs_s / ours_s:.2f}x", flush=True)
                agree = np.mean(np.array(ours) == np.array(theirs))
                acc = lambda p: np.mean(np.array(p) == np.array(golds))
                print(f"{name:9s} {dtype:8s} median of {args.repeats}: {statistics.median(ratios):.2f}x; "
                      f"identical predictions {agree:.1%}; accuracy {acc(ours):.3f} vs {acc(theirs):.3f}")


if __name__ == "__main__":
    main()
