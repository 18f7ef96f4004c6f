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
        metrics["macro_f1"] = _macro_f1(golds, predictions, labels)
        counts = Counter(predictions)
        metrics["predicted_distribution"] = {label: counts[label] / len(items)
                                             for label in [*labels, INVALID] if counts[label] or label != INVALID}
        gold_counts = Counter(golds)
        metrics["gold_distribution"] = {label: gold_counts[label] / len(items) for label in labels}
        metrics["confusion"] = {gold: {pred: sum(1 for g, p in zip(golds, predictions) if g == gold and p == pred)
                                       for pred in [*labels, INVALID]} for gold in labels}
    return metrics


def _macro_f1(golds: list[str], predictions: list[str], labels: list[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(golds, predictions, labels=labels, average="macro", zero_division=0))
