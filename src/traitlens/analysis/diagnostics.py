"""What to check before reading a matrix: whether the base can do each target at all, whether
it just answers one label, and whether each adapter learned its own task."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from scipy import stats

from traitlens.config.schema import BASE

if TYPE_CHECKING:
    from traitlens.analysis.results import Results

ONE_LABEL = 0.9  # a base answering one label this often shows preference, not skill
FLOOR, CEILING = 0.05, 0.95  # accuracies where a target cannot show harm, or help

TARGET_COLUMNS = ["target", "metric", "base_score", "base_accuracy", "chance", "p_above_chance",
                  "top_label", "top_share", "predicted_shares", "flags"]
OWN_COLUMNS = ["source", "target", "delta", "low", "high", "variance", "accuracy_delta", "flags"]


def target_diagnostics(results: Results) -> pd.DataFrame:
    """Per target: the base's score, accuracy, chance level (one over the labels), a one-sided
    binomial p of "the base is above chance", its predicted-label shares, and flags: one label
    over 90% of answers, at chance, at floor, at ceiling."""
    rows = []
    base_cells = results.cells[results.cells["model"] == BASE].set_index("target")
    for target in results.targets:
        if target not in base_cells.index:
            continue
        cell = base_cells.loc[target]
        metrics, n = cell["metrics"], int(cell["n"])
        accuracy = float(metrics["accuracy"])
        shares = {label: share for label, share in metrics.get("predicted_distribution", {}).items() if share > 0}
        labels = results.labels.get(target)
        chance = 1 / len(labels) if labels else None
        p = (float(stats.binomtest(round(accuracy * n), n, chance, alternative="greater").pvalue)
             if chance is not None and n else None)
        top = max(shares, key=shares.get) if shares else None
        flags = []
        if top is not None and shares[top] > ONE_LABEL:
            flags.append(f"answers {top!r} {shares[top]:.0%} of the time")
        if p is not None and p >= 0.05:
            flags.append(f"not above chance ({accuracy:.2f} vs {chance:.2f}, p={p:.2f})")
        if accuracy <= FLOOR:
            flags.append(f"at floor (accuracy {accuracy:.2f})")
        elif accuracy >= CEILING:
            flags.append(f"at ceiling (accuracy {accuracy:.2f})")
        rows.append({"target": target, "metric": results.scores[target].metric,
                     "base_score": float(cell["score"]), "base_accuracy": accuracy, "chance": chance,
                     "p_above_chance": p, "top_label": top, "top_share": shares.get(top) if top else None,
                     "predicted_shares": shares, "flags": flags})
    return pd.DataFrame(rows, columns=TARGET_COLUMNS)


def own_task(results: Results, uncertainty: pd.DataFrame) -> pd.DataFrame:
    """Per source trained on a target's dataset: its delta there (under the analysis metric,
    from the source-level `uncertainty`, whose `variance` says what its interval counts: seeds
    and items where the source has two or more adapters) and its accuracy delta, flagged when
    training did not measurably help its own task (the interval reaches zero or below)."""
    accuracy = results.cells.assign(accuracy=[m["accuracy"] for m in results.cells["metrics"]])
    base = accuracy[accuracy["model"] == BASE].set_index("target")["accuracy"]
    rows = []
    for source, target in sorted(results.diagonal):
        row = uncertainty[(uncertainty["source"] == source) & (uncertainty["target"] == target)]
        if row.empty or target not in base.index:
            continue
        row = row.iloc[0]
        own = accuracy[(accuracy["source"] == source) & (accuracy["target"] == target)]["accuracy"].mean()
        flags = []
        if row["low"] <= 0:
            flags.append("training did not measurably help its own task"
                         + (" (it got worse)" if row["high"] < 0 else ""))
        rows.append({"source": source, "target": target, "delta": row["delta"], "low": row["low"],
                     "high": row["high"], "variance": row["variance"], "accuracy_delta": float(own - base[target]),
                     "flags": flags})
    return pd.DataFrame(rows, columns=OWN_COLUMNS)
