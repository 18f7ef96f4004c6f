"""Metrics from stored items: skill vs label preference, fallbacks, resampling and tests."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from tests.test_analysis import label_items
from traitlens.analysis.metrics import METRICS, item_scores, metric_for

LABELS = ("negative", "neutral", "positive")


def outputs(rng, n=300, shift=None):
    golds = rng.choice(LABELS, n)
    base = label_items(rng, 0.8, golds, LABELS)
    # An adapter that only moves the prior: the base's log-probabilities plus a constant per label.
    preferring = [dict(item, choice_logprobs={k: v + (shift or {}).get(k, 0.0) for k, v in item["choice_logprobs"].items()})
                  for item in base]
    for item in preferring:
        item["prediction"] = max(item["choice_logprobs"], key=item["choice_logprobs"].get)
        item["score"] = float(item["prediction"] == item["gold"])
    return {"base": base, "preferring": preferring}


def test_a_pure_label_preference_shift_moves_accuracy_but_not_the_calibrated_metrics():
    rng = np.random.default_rng(0)
    data = outputs(rng, shift={"positive": 2.5})
    accuracy = item_scores(data, "accuracy", list(LABELS))
    assert accuracy.full()["preferring"] < accuracy.full()["base"] - 0.1
    assert accuracy.paired_test("base", "preferring", rng) < 0.01  # a "significant" change of skill
    for metric in ("calibrated_accuracy", "calibrated_margin"):
        scores = item_scores(data, metric, list(LABELS))
        assert np.allclose(scores.values[0], scores.values[1]), metric  # item by item
        assert scores.paired_test("base", "preferring", rng) == 1.0
    margin = item_scores(data, "margin", list(LABELS))
    assert not np.allclose(margin.values[0], margin.values[1])  # the raw margin sees the shift


def test_calibrated_metrics_still_see_skill():
    rng = np.random.default_rng(1)
    golds = rng.choice(LABELS, 400)
    data = {"base": label_items(rng, 0.5, golds, LABELS), "skilled": label_items(rng, 1.5, golds, LABELS)}
    for metric in METRICS:
        scores = item_scores(data, metric, list(LABELS))
        full = scores.full()
        assert full["skilled"] > full["base"], metric
        assert scores.paired_test("base", "skilled", rng) < 0.01, metric


def test_count_metrics_match_scikit_learn_and_a_one_label_model_scores_chance():
    rng = np.random.default_rng(2)
    data = outputs(rng, n=200)
    data["one label"] = [dict(item, prediction="positive", score=float(item["gold"] == "positive"))
                         for item in data["base"]]
    golds = [i["gold"] for i in data["base"]]
    balanced = item_scores(data, "balanced_accuracy", list(LABELS)).full()
    f1 = item_scores(data, "macro_f1", list(LABELS)).full()
    for model, items in data.items():
        predictions = [i["prediction"] for i in items]
        assert balanced[model] == pytest.approx(balanced_accuracy_score(golds, predictions))
        assert f1[model] == pytest.approx(f1_score(golds, predictions, labels=list(LABELS), average="macro",
                                                   zero_division=0))
    assert balanced["one label"] == pytest.approx(1 / 3)
    scores = item_scores(data, "macro_f1", list(LABELS))
    assert scores.paired_test("base", "preferring", rng) == 1.0  # no shift: the same answers
    assert scores.paired_test("base", "one label", rng) < 0.01
    draws = rng.integers(0, 200, (50, 200))
    assert scores.score([0, 2], draws).shape == (2, 50)


def test_targets_without_log_probabilities_fall_back():
    assert metric_for("calibrated_margin", has_labels=True, has_logprobs=False) == "balanced_accuracy"
    assert metric_for("calibrated_margin", has_labels=False, has_logprobs=False) == "accuracy"
    assert metric_for("macro_f1", has_labels=False, has_logprobs=False) == "accuracy"
    generated = {"base": [{"gold": "3", "prediction": "3", "score": 1.0}, {"gold": "4", "prediction": None, "score": 0.0}],
                 "adapter": [{"gold": "3", "prediction": "3", "score": 1.0}, {"gold": "4", "prediction": "4", "score": 1.0}]}
    scores = item_scores(generated, "calibrated_margin", None)
    assert scores.metric == "accuracy" and scores.full() == {"base": 0.5, "adapter": 1.0}
    with pytest.raises(ValueError, match="unknown metric"):
        item_scores(generated, "auroc")


def test_multiple_choice_items_may_offer_different_options():
    items = {"base": [{"gold": "A", "prediction": "A", "score": 1.0, "choice_logprobs": {"A": -0.5, "B": -1.5, "C": -2.0}},
                      {"gold": "B", "prediction": "A", "score": 0.0, "choice_logprobs": {"A": -0.4, "B": -1.1}}]}
    margin = item_scores(items, "margin", ["A", "B", "C"]).values[0]
    assert margin == pytest.approx([1.0, -0.7])
    calibrated = item_scores(items, "calibrated_margin", ["A", "B", "C"]).values[0]
    assert np.isfinite(calibrated).all()
