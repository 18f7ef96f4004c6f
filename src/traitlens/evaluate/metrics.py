"""Turning model outputs into predictions, and items into cell metrics."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np

# Thousands separators only in groups of three, so "3,4" is not read as 34.
NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")
INVALID = "<invalid>"


def final_number(text: str) -> str | None:
    """The last number in `text`, without separators: "9 apples" -> "9", "1,234" -> "1234"."""
    matches = NUMBER.findall(text)
    return matches[-1].replace(",", "") if matches else None


def numbers_equal(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    return abs(float(a) - float(b)) < 1e-6


def parse_label(text: str, labels: list[str]) -> str | None:
    """The label an output starts with (longest first, case-insensitive), else None: invalid."""
    normalized = text.strip().lower()
    for label in sorted(labels, key=len, reverse=True):
        wanted = label.lower()
        if normalized.startswith(wanted):
            rest = normalized[len(wanted):]
            if not rest or not rest[0].isalnum():
                return label
    return None


def cell_metrics(items: list[dict[str, Any]], labels: list[str] | None) -> dict[str, Any]:
    """Accuracy for every kind; macro-F1, label distributions and the confusion matrix when
    there is a label set; invalid rate and generated-length distribution for generated outputs."""
    scores = np.array([item["score"] for item in items], dtype=float)
    metrics: dict[str, Any] = {"n": len(items), "accuracy": float(scores.mean()) if len(items) else 0.0}
    predictions = [item["prediction"] if item["prediction"] is not None else INVALID for item in items]
    generated = [item["generated_tokens"] for item in items if item.get("generated_tokens") is not None]
    if generated:
        metrics["invalid_rate"] = predictions.count(INVALID) / len(items)
        lengths = np.array(generated, dtype=float)
        metrics["generated_tokens"] = {
            "mean": float(lengths.mean()), "median": float(np.median(lengths)),
            "p10": float(np.percentile(lengths, 10)), "p90": float(np.percentile(lengths, 90)),
            "max": float(lengths.max())}
    if labels:
        golds = [item["gold"] for item in items]
        index = {label: k for k, label in enumerate(labels)}  # an invalid or unknown answer: -1, wrong
        metrics["macro_f1"] = float(label_count_metric(
            "macro_f1", np.array([[index.get(g, -1) for g in golds]]),
            np.array([[index.get(p, -1) for p in predictions]]), len(labels))[0])
        counts = Counter(predictions)
        metrics["predicted_distribution"] = {label: counts[label] / len(items)
                                             for label in [*labels, INVALID] if counts[label] or label != INVALID}
        gold_counts = Counter(golds)
        metrics["gold_distribution"] = {label: gold_counts[label] / len(items) for label in labels}
        metrics["confusion"] = {gold: {pred: sum(1 for g, p in zip(golds, predictions) if g == gold and p == pred)
                                       for pred in [*labels, INVALID]} for gold in labels}
    return metrics


def label_count_metric(metric: str, gold: np.ndarray, predicted: np.ndarray, n_labels: int) -> np.ndarray:
    """Balanced accuracy (mean recall over the labels present in gold) or macro-F1 (mean F1
    over every label, 0 where a label is neither gold nor predicted, as scikit-learn's
    `zero_division=0`) per row of `gold` / `predicted` (B x n)."""
    per_label = []
    for k in range(n_labels):
        is_gold, is_pred = gold == k, predicted == k
        tp = (is_gold & is_pred).sum(axis=1)
        if metric == "balanced_accuracy":
            support = is_gold.sum(axis=1)
            per_label.append(np.where(support > 0, tp / np.maximum(support, 1), np.nan))
        else:
            denominator = is_gold.sum(axis=1) + is_pred.sum(axis=1)
            per_label.append(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0))
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.array(per_label), axis=0) if per_label else np.zeros(len(gold))
