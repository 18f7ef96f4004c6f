"""What a cell's score means: metrics computed from the stored items, with no model re-run.

Accuracy alone cannot tell skill from label preference: a base that answers "A" to every
question, and an adapter that only moves which label it prefers, change accuracy without
changing what either model knows. So every metric here is computed from the per-item
predictions and choice log-probabilities the store keeps:

| metric              | per item?  | what it removes                                          |
|---------------------|------------|----------------------------------------------------------|
| accuracy            | 0/1        | nothing                                                  |
| balanced_accuracy   | counts     | the gold labels' imbalance (one-label answers score 1/K) |
| macro_f1            | counts     | the same, and rewards precision on rare labels           |
| calibrated_accuracy | 0/1        | the model's average preference for each label            |
| margin              | continuous | nothing, but measures how far the gold answer leads      |
| calibrated_margin   | continuous | the label preference, and keeps the margin's resolution  |

Calibration follows Batch Calibration (Zhou et al., ICLR 2024): the model's prior for each label
on a target is estimated from the target's own test items, with no content-free probe (so no
model is re-run), and removed from every item's scores. One difference, chosen so a pure shift
of preference is removed exactly: the prior is the mean log-probability of the label (after
normalising each item's log-probabilities over its choices), not the log of the mean
probability. Adding a constant to one label's logit on every item then leaves every calibrated
prediction and margin unchanged. Margins are in nats: the gold choice's normalised
log-probability minus the best wrong choice's.

Targets whose items have no choice log-probabilities (generated answers) fall back to balanced
accuracy where they have a label set, else accuracy; `used` records which metric each target's
scores are.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from traitlens.evaluate.metrics import label_count_metric

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "calibrated_accuracy", "margin", "calibrated_margin")
LOGPROB_METRICS = ("calibrated_accuracy", "margin", "calibrated_margin")
COUNT_METRICS = ("balanced_accuracy", "macro_f1")  # not means over items: computed from label counts
DESCRIPTIONS = {
    "accuracy": "the share of items answered correctly.",
    "balanced_accuracy": "the mean over gold labels of the share of that label's items answered correctly "
                         "(answering one label always scores one over the number of labels).",
    "macro_f1": "the mean F1 over the labels.",
    "calibrated_accuracy": "accuracy after removing the model's average preference for each label on the target.",
    "margin": "the gold answer's log-probability lead over the best wrong answer, in nats, averaged over items.",
    "calibrated_margin": "the gold answer's log-probability lead over the best wrong answer after removing the "
                         "model's average preference for each label on the target, in nats, averaged over items.",
}


def metric_for(metric: str, has_labels: bool, has_logprobs: bool) -> str:
    """The metric a target can be scored with: `metric`, or the nearest one its items allow."""
    if metric in LOGPROB_METRICS and not has_logprobs:
        metric = "balanced_accuracy"
    if metric in COUNT_METRICS and not has_labels:
        metric = "accuracy"
    return metric


@dataclass(frozen=True)
class ItemScores:
    """One target's items scored under one metric, for every model: what resampling needs.

    Mean metrics keep `values` (models x items); count metrics keep the gold label and each
    model's predicted label as indices into `labels` (len(labels) means invalid). `score(rows,
    draws)` gives the metric of each model row on each draw of item indices.
    """

    models: list[str]
    metric: str
    values: np.ndarray | None = None
    gold: np.ndarray | None = None
    predicted: np.ndarray | None = None
    labels: tuple[str, ...] = ()

    @property
    def n_items(self) -> int:
        return (self.values if self.values is not None else self.predicted).shape[1]

    @property
    def binary(self) -> bool:
        return self.values is not None and bool(np.isin(self.values, (0.0, 1.0)).all())

    def row(self, model: str) -> int:
        return self.models.index(model)

    def subset(self, models: list[str]) -> ItemScores:
        rows = [self.row(m) for m in models]
        return replace(self, models=list(models),
                       values=None if self.values is None else self.values[rows],
                       predicted=None if self.predicted is None else self.predicted[rows])

    def score(self, rows: list[int], draws: np.ndarray, predicted: np.ndarray | None = None) -> np.ndarray:
        """(len(rows), B) metric values on each row of `draws` (B x items, indices with repeats).
        `predicted`: label indices (len(rows) x items) to use instead of the models' own (a
        permutation test swaps them between two models)."""
        draws = np.atleast_2d(draws)
        if self.values is not None:
            return self.values[rows][:, draws].mean(axis=-1)
        predicted = self.predicted[rows] if predicted is None else predicted
        gold = self.gold[draws]  # B x n
        out = np.empty((len(predicted), len(draws)))
        for i, prediction in enumerate(predicted):
            out[i] = label_count_metric(self.metric, gold, prediction[draws], len(self.labels))
        return out

    def full(self) -> dict[str, float]:
        """Each model's score on all the items."""
        values = self.score(list(range(len(self.models))), np.arange(self.n_items))[:, 0]
        return dict(zip(self.models, values.tolist()))

    def paired_test(self, a: str, b: str, rng: np.random.Generator, permutations: int = 10_000) -> float:
        """Two-sided p-value of "models a and b score the same on these items": McNemar's exact
        test for 0/1 items, a sign-flip test for continuous ones, and for count metrics a
        permutation test that swaps the two models' answers item by item."""
        if self.values is not None:
            return paired_values_test(self.values[self.row(a)], self.values[self.row(b)], rng, permutations)
        pa, pb = self.predicted[self.row(a)], self.predicted[self.row(b)]
        everything = np.arange(self.n_items)
        observed = np.diff(self.score([self.row(a), self.row(b)], everything)[:, 0])[0]
        if (pa == pb).all():
            return 1.0
        swap = rng.random((min(permutations, 2000), self.n_items)) < 0.5  # count metrics cost a pass each
        null = np.array([np.diff(self.score([0, 1], everything, np.where(s, [pb, pa], [pa, pb]))[:, 0])[0]
                         for s in swap])
        return float((1 + (np.abs(null) >= abs(observed) - 1e-12).sum()) / (len(null) + 1))


def paired_values_test(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                       permutations: int = 10_000) -> float:
    """Two-sided p-value of equal means of paired item values: McNemar's exact test when both
    are 0/1, else a sign-flip permutation test of the differences."""
    from scipy import stats  # imported here: the CLI imports this module to list the metrics

    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all():
        gained, lost = int(((b == 1) & (a == 0)).sum()), int(((b == 0) & (a == 1)).sum())
        return 1.0 if gained + lost == 0 else float(stats.binomtest(gained, gained + lost, 0.5).pvalue)
    differences = b - a
    if not differences.any():
        return 1.0
    signs = rng.choice((-1.0, 1.0), size=(permutations, len(differences)))
    null = np.abs((signs * differences).mean(axis=1))
    return float((1 + (null >= abs(differences.mean()) - 1e-12).sum()) / (permutations + 1))


def item_scores(outputs: dict[str, list[dict[str, Any]]], metric: str,
                labels: list[str] | None = None) -> ItemScores:
    """The items of one target (`outputs`: model -> its item records, the same items in the
    same order for every model) scored under `metric`, or the metric it falls back to (see
    `metric_for`). `labels`: the target's label set where it has one."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    models = list(outputs)
    records = list(outputs.values())
    lengths = {len(r) for r in records}
    if len(lengths) != 1:
        raise ValueError(f"the models of a target must answer the same items; item counts: {sorted(lengths)}")
    has_logprobs = all(item.get("choice_logprobs") for r in records for item in r)
    metric = metric_for(metric, bool(labels) or has_logprobs, has_logprobs)
    if metric == "accuracy":
        return ItemScores(models, metric, values=np.array([[i["score"] for i in r] for r in records], float))
    seen = {i["gold"] for r in records for i in r} | {k for r in records for i in r for k in i.get("choice_logprobs") or {}}
    names = tuple(labels or ()) + tuple(sorted(seen - set(labels or ())))
    index = {label: k for k, label in enumerate(names)}
    gold = np.array([index[i["gold"]] for i in records[0]])
    if metric in COUNT_METRICS:
        predicted = np.array([[index.get(i["prediction"], len(names)) for i in r] for r in records])
        return ItemScores(models, metric, gold=gold, predicted=predicted, labels=names)
    logprobs = np.full((len(models), len(gold), len(names)), -np.inf)
    for m, r in enumerate(records):
        for n, item in enumerate(r):
            for label, value in item["choice_logprobs"].items():
                logprobs[m, n, index[label]] = value
    return ItemScores(models, metric, values=_logprob_values(logprobs, gold, metric), labels=names)


def _logprob_values(logprobs: np.ndarray, gold: np.ndarray, metric: str) -> np.ndarray:
    """Per model and item (models x items): calibrated correctness, or the (calibrated) margin
    of the gold choice over the best wrong one, from log-probabilities (models x items x
    labels, -inf where an item does not offer a label)."""
    offered = np.isfinite(logprobs)
    normalised = logprobs - np.logaddexp.reduce(logprobs, axis=2, keepdims=True)
    if metric.startswith("calibrated"):
        # Each label's prior: its mean normalised log-probability over the items offering it.
        prior = np.where(offered, normalised, 0).sum(axis=1) / np.maximum(offered.sum(axis=1), 1)
        normalised = np.where(offered, normalised - prior[:, None, :], -np.inf)
    items = np.arange(len(gold))
    gold_value = normalised[:, items, gold]
    if metric == "calibrated_accuracy":
        return (normalised.argmax(axis=2) == gold).astype(float)
    wrong = normalised.copy()
    wrong[:, items, gold] = -np.inf
    best_wrong = wrong.max(axis=2)
    return np.where(np.isfinite(best_wrong), gold_value - best_wrong, 0.0)  # one option: no margin
