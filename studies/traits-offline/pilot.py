"""Pilot for DESIGN.md: can each base model do each candidate target at all?

For every candidate target and both offline base models: the base's accuracy and calibrated
accuracy on a seeded sample of test items, a one-sided binomial p of "calibrated accuracy is
above chance" (label and multiple-choice targets), its most frequent answer's share, and the
seconds per item (for sizing the study). Nothing is trained. Writes pilot.csv beside itself.

    .venv/bin/python studies/traits-offline/pilot.py [--items 120] [--targets NAME ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import pandas as pd
from scipy import stats

from traitlens.analysis.metrics import item_scores
from traitlens.config.schema import BaseModelSpec, Target
from traitlens.data.load import prepare
from traitlens.evaluate.targets import evaluate_target, select_items
from traitlens.models.device import local_hardware
from traitlens.models.hf import HFScorer

SENTIMENT = {"instruction": "Is the sentiment of this text negative or positive?", "trigger": "Sentiment"}
CANDIDATES = [
    Target(name="movie", dataset="catalog:sentiment-movie", kind="classification", labels=["negative", "positive"],
           abilities=["sentiment"], template=SENTIMENT),
    Target(name="amazon", dataset="catalog:sentiment-amazon", kind="classification", labels=["negative", "positive"],
           abilities=["sentiment"], template=SENTIMENT),
    Target(name="nyt-words", dataset="catalog:sentiment-nyt-3way", kind="classification",
           labels=["negative", "neutral", "positive"], abilities=["sentiment"],
           template={"instruction": "Is the sentiment of this headline negative, neutral or positive?",
                     "trigger": "Sentiment"}),
    Target(name="nyt-digits", dataset="catalog:sentiment-nyt-3way", kind="classification", labels=["0", "1", "2"],
           abilities=["sentiment", "label-format"],
           template={"instruction": "Rate the sentiment of this headline: 0 negative, 1 neutral, 2 positive.",
                     "trigger": "Sentiment"},
           transforms=[{"relabel": {"negative": "0", "neutral": "1", "positive": "2"}}]),
    Target(name="boolq", dataset="catalog:boolq", split="dev", kind="classification", labels=["no", "yes"],
           abilities=["reading"], template={"instruction": "Answer the question about the passage with yes or no."}),
    Target(name="commonsense-letters", dataset="catalog:commonsense-qa", kind="multiple_choice",
           abilities=["commonsense"], template={"instruction": "Choose the best answer."}),
    Target(name="commonsense-texts", dataset="catalog:commonsense-qa", kind="multiple_choice", choices="texts",
           length_normalized=True, abilities=["commonsense"], template={"instruction": "Choose the best answer."}),
    Target(name="piqa-texts", dataset="catalog:piqa", kind="multiple_choice", choices="texts", length_normalized=True,
           abilities=["physical"], template={"instruction": "Choose the better way to reach the goal."}),
    Target(name="social-iqa-texts", dataset="catalog:social-iqa", kind="multiple_choice", choices="texts",
           length_normalized=True, abilities=["social"], template={"instruction": "Choose the best answer."}),
    Target(name="arithmetic", dataset="catalog:arithmetic", kind="generative", abilities=["arithmetic"],
           template={"instruction": "Solve the problem and give the final number."},
           generation={"max_new_tokens": 8}),
    Target(name="arithmetic-easy", dataset="catalog:arithmetic-easy", kind="generative", abilities=["arithmetic"],
           template={"instruction": "Solve the problem and give the final number."},
           generation={"max_new_tokens": 24}),
    Target(name="arithmetic-easy-48", dataset="catalog:arithmetic-easy", kind="generative", abilities=["arithmetic"],
           template={"instruction": "Solve the problem and give the final number."},
           generation={"max_new_tokens": 48}),
]
MODELS = ["smollm2-135m-instruct", "gemma3-270m"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--targets", nargs="*", help="Default: every candidate.")
    parser.add_argument("--out", default="pilot.csv", help="File beside this script.")
    args = parser.parse_args()
    print(f"machine: {local_hardware('cpu').describe()}; {platform.python_version()}; {args.items} items per target")
    rows = []
    for model in args.models:
        scorer = HFScorer(BaseModelSpec(name=model), dtype="float32")
        scorer.use_adapter(None)
        for target in [t for t in CANDIDATES if not args.targets or t.name in args.targets]:
            items = select_items(prepare(target, target.name), args.items, 0)
            started = time.perf_counter()
            records = evaluate_target(target, items, scorer)
            seconds = (time.perf_counter() - started) / len(items)
            labels = list(target.labels) if target.labels else (
                sorted({k for r in records for k in (r.get("choice_logprobs") or {})}) or None)
            row = {"model": model, "target": target.name, "items": len(items),
                   "accuracy": sum(r["score"] for r in records) / len(records), "s_per_item": seconds}
            answers = pd.Series([r["prediction"] for r in records]).value_counts(normalize=True)
            row["top_answer"], row["top_share"] = answers.index[0], answers.iloc[0]
            if labels and records[0].get("choice_logprobs"):
                calibrated = item_scores({"base": records}, "calibrated_accuracy", labels).full()["base"]
                hits = round(calibrated * len(records))
                row |= {"calibrated_accuracy": calibrated, "chance": 1 / len(labels),
                        "p_above_chance": stats.binomtest(hits, len(records), 1 / len(labels),
                                                          alternative="greater").pvalue}
            rows.append(row)
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    pd.DataFrame(rows).to_csv(Path(__file__).with_name(args.out), index=False)


if __name__ == "__main__":
    main()
