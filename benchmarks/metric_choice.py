"""Which metric measures skill: every analysis metric compared on one study's item-level export.

For each metric, from the items alone (no model is run):
- reliability: the adapters' deltas from one random half of every target's items against those
  from the other half (Pearson over every adapter cell, each target's deltas divided by their
  spread across adapters so targets weigh alike), averaged over halvings and stepped up to the
  full length with Spearman-Brown. A metric that measures a stable property of the adapter
  agrees with itself; one dominated by item noise does not.
- own task: how many adapters show a gain on their own task's held-out items whose 95% interval
  excludes zero. Training on a task should teach it; a metric that cannot see that is blind.
- preference: every adapter's choice log-probabilities on every target get +1 nat on one label
  (the target's first) and nothing else, a change of preference and not of skill; the table
  shows how far that moves the adapters' deltas, in units of the target's spread across adapters.
  A metric of skill should not move.

    .venv/bin/python benchmarks/metric_choice.py docs/evidence/quickstart-items120
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import replace

import numpy as np
import pandas as pd

from traitlens.analysis.results import Results
from traitlens.analysis.export import load_items
from traitlens.analysis.metrics import METRICS
from traitlens.analysis.uncertainty import source_uncertainty
from traitlens.config.schema import BASE


def deltas(results: Results, index: dict[str, np.ndarray] | None = None) -> pd.Series:
    """(source, target) -> adapter minus base, on all items or on `index` per target."""
    out = {}
    for target, scores in results.scores.items():
        rows = list(range(len(scores.models)))
        values = scores.score(rows, index[target] if index else np.arange(scores.n_items))[:, 0]
        by_model = dict(zip(scores.models, values))
        for model in scores.models:
            if model != BASE:
                out[(model, target)] = by_model[model] - by_model[BASE]
    return pd.Series(out)


def spread(values: pd.Series) -> pd.Series:
    """Each target's deltas divided by their standard deviation across adapters."""
    frame = values.rename("delta").reset_index()
    frame.columns = ["model", "target", "delta"]
    sd = frame.groupby("target")["delta"].transform(lambda d: d.std(ddof=1))
    return pd.Series((frame["delta"] / sd.where(sd > 1e-12)).to_numpy(), index=values.index)


def reliability(results: Results, splits: int, rng: np.random.Generator) -> float:
    values = []
    for _ in range(splits):
        first, second = {}, {}
        for target, scores in results.scores.items():
            order = rng.permutation(scores.n_items)
            first[target], second[target] = order[: len(order) // 2], order[len(order) // 2:]
        a, b = spread(deltas(results, first)), spread(deltas(results, second))
        ok = a.notna() & b.notna()
        values.append(np.corrcoef(a[ok], b[ok])[0, 1])
    r = float(np.nanmean(values))
    return 2 * r / (1 + r)


def prefer_first_label(results: Results, nats: float = 1.0) -> Results:
    """Every adapter's choice log-probabilities with `nats` added to each target's first label."""
    outputs = {}
    for target, by_model in results.outputs.items():
        first = (results.labels.get(target) or [None])[0]
        outputs[target] = {}
        for model, items in by_model.items():
            shifted = []
            for item in items:
                logprobs = item.get("choice_logprobs")
                if model == BASE or not logprobs or first not in logprobs:
                    shifted.append(item)
                    continue
                logprobs = {k: v + (nats if k == first else 0.0) for k, v in logprobs.items()}
                prediction = max(logprobs, key=logprobs.get)
                shifted.append(dict(item, choice_logprobs=logprobs, prediction=prediction,
                                    score=float(prediction == item["gold"])))
            outputs[target][model] = shifted
    return replace(results, outputs=outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export", help="an item-level export folder (a report's -data folder)")
    parser.add_argument("--splits", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    raw = load_items(args.export)
    shifted_raw = prefer_first_label(raw)
    print(f"Study {raw.study}: {len(raw.models) - 1} adapters x {len(raw.targets)} targets, items per target "
          f"{sorted({s.n_items for s in raw.scores.values()})}; {args.splits} halvings, seed {args.seed}; "
          f"machine: {platform.processor() or platform.machine()}.\n")
    print("| metric | targets scored with it | reliability (split-half, Spearman-Brown) | own-task gains found "
          "| preference shift moves deltas by (target SDs) |")
    print("|---|---:|---:|---:|---:|")
    for metric in METRICS:
        results, shifted = raw.scored(metric), shifted_raw.scored(metric)
        rng = np.random.default_rng(args.seed)
        own = source_uncertainty(results, 1000, 0.05, args.seed)
        home = own[[(s, t) in results.diagonal for s, t in zip(own["source"], own["target"])]]
        base_scale = spread(deltas(results)) / deltas(results)  # 1 / each target's SD
        moved = ((deltas(shifted) - deltas(results)) * base_scale).abs()
        native = sum(m == metric for m in results.used.values())
        print(f"| {metric} | {native} of {len(results.used)} | {reliability(results, args.splits, rng):.2f} | "
              f"{int((home['low'] > 0).sum())} of {len(home)} | {moved.mean():.2f} |")


if __name__ == "__main__":
    main()
