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

With `--planted`, the same question across training runs, where the truth is known: planted
studies whose adapters each move two things, a skill (the gold answer's margin) and a preference
(one label's logit), each with a per-source effect and per-seed training noise. A skewed source
teaches a preference as reproducibly as any skill, so a metric can reproduce well and still track
the wrong thing. Per metric: its seed reliability (`analysis.reliability`: how well a retrained
study would rank sources the same) and its validity (Spearman of its seed-averaged source
ranking with the planted skill), the mean over targets and studies.

    .venv/bin/python benchmarks/metric_choice.py docs/evidence/quickstart-items120
    .venv/bin/python benchmarks/metric_choice.py --planted --studies 20
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import replace

import numpy as np
import pandas as pd

from traitlens.analysis.results import Results
from traitlens.analysis.read_export import load_items
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


PER_ITEM = ("accuracy", "calibrated_accuracy", "margin", "calibrated_margin")


def planted(rng: np.random.Generator, sources: int = 12, seeds: int = 2, targets: int = 4, items: int = 200,
            preference: float = 1.0, noise: float = 0.5) -> tuple[Results, np.ndarray]:
    """(results, planted skill: sources x targets) of a study of binary targets whose first label
    holds 60-80% of the items (real targets are rarely balanced). Each adapter's
    margin for the gold label moves by its source's skill plus seed noise; its logit for the
    first label by its source's preference (scale `preference`, in nats) plus seed noise; seed
    noise is `noise` times each effect's spread."""
    skill = rng.normal(0, 0.5, (sources, targets))
    prefer = rng.normal(0, preference, (sources, targets))
    outputs, rows = {}, [{"model": BASE, "source": None, "seed": None}]
    rows += [{"model": f"s{s}/s{r}", "source": f"s{s}", "seed": r} for s in range(sources) for r in range(seeds)]
    for t in range(targets):
        gold = (rng.random(items) > rng.uniform(0.6, 0.8)).astype(int)  # label "a" the majority, as often
        base_margin = rng.normal(0.5, 1.5, items)
        records = {BASE: _records(gold, base_margin, 0.0)}
        for s in range(sources):
            for r in range(seeds):
                margin = (base_margin + skill[s, t] + rng.normal(0, noise * 0.5) + rng.normal(0, 0.5, items))
                bias = prefer[s, t] + rng.normal(0, noise * preference)
                records[f"s{s}/s{r}"] = _records(gold, margin, bias)
        outputs[f"t{t}"] = records
    cells = pd.DataFrame([{**row, "target": f"t{t}", "key": f"{row['model']}@t{t}", "n": items, "metrics": {}}
                          for t in range(targets) for row in rows])
    results = Results(cells, outputs, set(), {f"t{t}": ["x"] for t in range(targets)},
                      labels={f"t{t}": ["a", "b"] for t in range(targets)})
    return results, skill


def _records(gold: np.ndarray, margin: np.ndarray, bias: float) -> list[dict]:
    """Item records: the gold label leads by `margin` nats, then label "a" gains `bias`."""
    out = []
    for g, m in zip(gold, margin):
        logits = {"a": m / 2 if g == 0 else -m / 2, "b": m / 2 if g == 1 else -m / 2}
        logits["a"] += bias
        norm = np.logaddexp(logits["a"], logits["b"])
        logprobs = {k: float(v - norm) for k, v in logits.items()}
        prediction = max(logprobs, key=logprobs.get)
        gold_label = "ab"[g]
        out.append({"gold": gold_label, "prediction": prediction, "score": float(prediction == gold_label),
                    "choice_logprobs": logprobs})
    return out


def planted_table(studies: int, seed: int) -> None:
    from scipy import stats

    from traitlens.analysis.reliability import variance_components

    rng = np.random.default_rng(seed)
    print(f"Planted studies: {studies} per preference scale (12 sources x 2 seeds x 4 binary targets x 200 items, "
          f"60-80% one label; seed noise 50% of each effect), seed {seed}; machine: "
          f"{platform.processor() or platform.machine()}.\n")
    print("| preference (nats) | metric | seed reliability | validity (Spearman with planted skill) |")
    print("|---:|---|---:|---:|")
    for preference in (0.0, 1.0, 2.0):
        rows = {m: {"seed reliability": [], "validity": []} for m in PER_ITEM}
        for _ in range(studies):
            raw, skill = planted(rng, preference=preference)
            order = [f"s{s}" for s in range(skill.shape[0])]
            for metric in PER_ITEM:
                results = raw.scored(metric)
                rows[metric]["seed reliability"] += list(variance_components(results, draws=1)["seed_reliability"])
                matrix = results.matrix("delta")
                rows[metric]["validity"] += [stats.spearmanr(matrix.loc[order, f"t{t}"], skill[:, t]).statistic
                                             for t in range(skill.shape[1])]
        for metric, values in rows.items():
            print(f"| {preference:g} | {metric} | {np.nanmean(values['seed reliability']):.2f} | "
                  f"{np.nanmean(values['validity']):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export", nargs="?", help="an item-level export folder (a report's -data folder)")
    parser.add_argument("--splits", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--planted", action="store_true", help="planted studies with seeds (see the docstring)")
    parser.add_argument("--studies", type=int, default=20, help="with --planted: how many")
    args = parser.parse_args()
    if args.planted:
        return planted_table(args.studies, args.seed)
    if not args.export:
        parser.error("give an export folder, or --planted")
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
