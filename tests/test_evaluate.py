"""Target kinds, metrics, cells and their caching, driven by the deterministic fake scorer."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from traitlens.config import load_study
from traitlens.config.schema import Target
from traitlens.evaluate.cell import AdapterGuardError, evaluate_cell
from traitlens.evaluate.metrics import cell_metrics, final_number, numbers_equal, parse_label
from traitlens.evaluate.targets import evaluate_target, select_items
from traitlens.execution.plan import plan_study
from traitlens.models.fake import FakeScorer
from traitlens.store import Store
from traitlens.store.db import ADAPTER_META_FILE


@pytest.mark.parametrize("text, number", [
    ("9 apples", "9"), ("1,234", "1234"), ("-3.5", "-3.5"), ("The answer is 42.", "42"),
    ("from 3 to 12,500.75 dollars", "12500.75"), ("3,4", "4"), ("no number here", None), ("", None),
])
def test_final_number(text, number):
    assert final_number(text) == number


def test_numbers_equal():
    assert numbers_equal("9", "9.0") and numbers_equal("-3.5", "-3.50")
    assert not numbers_equal("9", "10") and not numbers_equal(None, "9")


@pytest.mark.parametrize("text, label", [
    ("positive", "positive"), (" Positive.\nThe review", "positive"), ("very negative!", "very negative"),
    ("negative", "negative"), ("positively", None), ("", None), ("I think positive", None),
])
def test_parse_label(text, label):
    assert parse_label(text, ["negative", "positive", "very negative"]) == label


def test_cell_metrics_classification():
    items = [{"gold": g, "prediction": p, "score": float(g == p)}
             for g, p in [("a", "a"), ("a", "b"), ("b", "b"), ("b", "b")]]
    metrics = cell_metrics(items, ["a", "b"])
    assert metrics["accuracy"] == 0.75 and metrics["n"] == 4
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert metrics["predicted_distribution"] == {"a": 0.25, "b": 0.75}
    assert metrics["gold_distribution"] == {"a": 0.5, "b": 0.5}
    assert metrics["confusion"]["a"] == {"a": 1, "b": 1, "<invalid>": 0}
    assert "invalid_rate" not in metrics


def test_cell_metrics_generation():
    items = [{"gold": "a", "prediction": None, "score": 0.0, "generated": "??", "generated_tokens": 4},
             {"gold": "a", "prediction": "a", "score": 1.0, "generated": "a", "generated_tokens": 2}]
    metrics = cell_metrics(items, ["a", "b"])
    assert metrics["invalid_rate"] == 0.5 and metrics["generated_tokens"]["mean"] == 3
    assert metrics["predicted_distribution"] == {"a": 0.5, "b": 0.0, "<invalid>": 0.5}
    assert metrics["confusion"]["a"]["<invalid>"] == 1


def target(kind: str, **fields) -> Target:
    return Target(name="t", dataset="catalog:x", kind=kind, abilities=["a"], **fields)


SENTIMENT = pd.DataFrame({"input": [f"text {i}" for i in range(12)],
                          "answer": ["negative", "positive"] * 6})


def test_classification_by_loglikelihood():
    items = evaluate_target(target("classification", labels=["negative", "positive"]), SENTIMENT,
                            FakeScorer(bias={None: "positive"}))
    assert [i["prediction"] for i in items] == ["positive"] * 12  # the planted bias wins
    assert [i["score"] for i in items] == [0.0, 1.0] * 6
    assert set(items[0]["choice_logprobs"]) == {"negative", "positive"}


def test_classification_by_generation_reports_invalid_outputs():
    spec = target("generation_classification", labels=["negative", "positive"])
    items = evaluate_target(spec, SENTIMENT, FakeScorer(bias={None: "positive!"}))
    assert {i["prediction"] for i in items} == {"positive"} and items[1]["score"] == 1.0
    items = evaluate_target(spec, SENTIMENT, FakeScorer(bias={None: "I am not sure"}))
    assert all(i["prediction"] is None and i["score"] == 0.0 for i in items)
    assert cell_metrics(items, ["negative", "positive"])["invalid_rate"] == 1.0


def test_generative_final_number_exact_match():
    table = pd.DataFrame({"input": ["2+7?", "1000+234?"], "answer": ["9", "1234"]})
    items = evaluate_target(target("generative"), table, FakeScorer(bias={None: "That makes 1,234 apples"}))
    assert [i["prediction"] for i in items] == ["1234", "1234"]
    assert [i["score"] for i in items] == [0.0, 1.0]
    assert items[0]["generated"] == "That makes 1,234 apples" and items[0]["generated_tokens"] == 4


MC = pd.DataFrame({"input": ["Pick one", "Pick again"], "options": ["A. red\nB. blue wave", "A. blue\nB. green"],
                   "answer": ["B", "A"]})


def test_multiple_choice_letters_and_texts():
    items = evaluate_target(target("multiple_choice"), MC, FakeScorer(bias={None: "B"}))
    assert [i["prediction"] for i in items] == ["B", "B"] and set(items[0]["choice_logprobs"]) == {"A", "B"}
    items = evaluate_target(target("multiple_choice", choices="texts"), MC, FakeScorer(bias={None: "blue"}))
    assert [i["prediction"] for i in items] == ["B", "A"] and [i["score"] for i in items] == [1.0, 1.0]


def test_multiple_choice_length_normalization():
    class Scorer(FakeScorer):
        def loglikelihood(self, requests):  # the long option has the higher sum, lower per token
            from traitlens.models.scorer import ChoiceScores
            return [ChoiceScores((-3.0, -4.0), (1, 8)) for _ in requests]

    table = MC.iloc[:1]
    assert evaluate_target(target("multiple_choice", choices="texts"), table, Scorer())[0]["prediction"] == "A"
    normalized = target("multiple_choice", choices="texts", length_normalized=True)
    assert evaluate_target(normalized, table, Scorer())[0]["prediction"] == "B"


def test_multiple_choice_answer_must_be_an_option():
    with pytest.raises(ValueError, match="not one of its option letters"):
        evaluate_target(target("multiple_choice"), MC.assign(answer=["C", "A"]), FakeScorer())


def test_select_items_is_seeded_and_shared():
    table = pd.DataFrame({"input": [str(i) for i in range(50)], "answer": ["x"] * 50})
    assert select_items(table, 10, 0).equals(select_items(table, 10, 0))
    assert not select_items(table, 10, 0).equals(select_items(table, 10, 1))
    assert len(select_items(table, None, 0)) == 50 and len(select_items(table, 80, 0)) == 50


# --- cells in the store ----------------------------------------------------------------------


@pytest.fixture
def tiny(write_study, tmp_path):
    study = load_study(write_study())
    return study, plan_study(study), Store(tmp_path / "store")


def test_cell_is_cached_by_key(tiny):
    study, plan, store = tiny
    job = next(j for j in plan.eval_jobs if j.model == "base" and j.target == "movie")
    scorer = FakeScorer()
    first = evaluate_cell(job, store, scorer, SENTIMENT)
    assert scorer.calls == 1 and first["n_items"] == 4 and len(store.items(job.key)) == 4
    assert first["meta"]["example"].endswith("Answer:\n" + store.items(job.key)[0]["gold"])
    again = evaluate_cell(job, store, scorer, SENTIMENT)
    assert scorer.calls == 1 and again == first  # a cache hit: nothing scored


def test_failed_cell_is_recorded_and_retried(tiny):
    study, plan, store = tiny
    job = next(j for j in plan.eval_jobs if j.model == "base" and j.target == "movie")

    class Broken(FakeScorer):
        def loglikelihood(self, requests):
            raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        evaluate_cell(job, store, Broken(), SENTIMENT)
    record = store.jobs([job.key])[job.key]
    assert record.state == "failed" and record.error == "RuntimeError: out of memory"
    evaluate_cell(job, store, FakeScorer(), SENTIMENT)
    assert store.jobs([job.key])[job.key].attempts == 2


def _store_adapter(store, job, base):
    store.start_job(job.key, "train", job.label, job.spec, worker="test")
    scratch = store.scratch_dir(job.key)
    (scratch / ADAPTER_META_FILE).write_text(json.dumps({"base": base}))
    store.put_adapter(job.key, job.source, job.seed, scratch, {})


def test_adapter_guard_refuses_another_base(tiny):
    study, plan, store = tiny
    train = plan.train_jobs[0]
    _store_adapter(store, train, {"hub": "someone/else", "revision": "main"})
    job = next(j for j in plan.eval_jobs if j.needs == train.key and j.target == "movie")
    with pytest.raises(AdapterGuardError, match="was trained on base .*someone/else"):
        evaluate_cell(job, store, FakeScorer(), SENTIMENT)
    assert store.jobs([job.key])[job.key].state == "failed"


def test_adapter_guard_passes_a_real_change_and_scores_differ(tiny):
    study, plan, store = tiny
    train = plan.train_jobs[0]
    _store_adapter(store, train, train.spec["base"])
    job = next(j for j in plan.eval_jobs if j.needs == train.key and j.target == "movie")
    base_job = next(j for j in plan.eval_jobs if j.model == "base" and j.target == "movie")
    adapted = evaluate_cell(job, store, FakeScorer(), SENTIMENT)
    evaluate_cell(base_job, store, FakeScorer(), SENTIMENT)
    assert adapted["meta"]["adapter"] == train.key
    assert store.items(job.key)[0]["choice_logprobs"] != store.items(base_job.key)[0]["choice_logprobs"]


def test_adapter_missing_from_store(tiny):
    study, plan, store = tiny
    job = next(j for j in plan.eval_jobs if j.needs)
    with pytest.raises(AdapterGuardError, match="not in the store; train it first"):
        evaluate_cell(job, store, FakeScorer(), SENTIMENT)
