"""Training budgets (steps, epochs, tokens), the validation holdout, early stopping and seed streams."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_TRAIN, train_killed_after_checkpoint
from traitlens.config import load_study
from traitlens.config.schema import Training
from traitlens.data.load import prepare_study
from traitlens.errors import TraitlensError
from traitlens.execution.plan import plan_study
from traitlens.forecast.cost import training_tokens
from traitlens.store import Store
from traitlens.store.db import ADAPTER_META_FILE
from traitlens.train import loop
from traitlens.train.loop import plan_training, stream_seed, train_adapter


def _training(**fields) -> Training:
    return Training(batch_size=2, gradient_accumulation=2, **fields)


def test_a_token_budget_stops_at_the_step_that_reaches_it():
    lengths = [10] * 6 + [100] * 6  # a step draws 4 examples: 40 to 400 tokens
    plan = plan_training(_training(max_tokens=1000), lengths, seed=3, source="a")
    spent = [sum(lengths[i] for micro in plan.step_rows(step) for i in micro) for step in range(plan.steps)]
    assert sum(spent) >= 1000 > sum(spent[:-1])
    # the same budget buys more steps of shorter examples
    assert plan_training(_training(max_tokens=1000), [10] * 12, 3, "a").steps == 25 > plan.steps
    with pytest.raises(ValueError, match="max_steps or max_tokens, not both"):
        _training(max_steps=3, max_tokens=100)


def test_epochs_count_the_rows_that_train_and_the_holdout_is_the_same_for_every_seed():
    training = _training(epochs=2, validation={"holdout": 0.25})
    plans = [plan_training(training, [5] * 20, seed, "a") for seed in (0, 1)]
    assert all(len(p.holdout_rows) == 5 and len(p.train_rows) == 15 for p in plans)
    assert plans[0].steps == 2 * 4  # 15 rows, 4 per step: 4 steps an epoch
    assert (plans[0].holdout_rows == plans[1].holdout_rows).all()
    trained = {i for p in plans for step in range(p.steps) for micro in p.step_rows(step) for i in micro}
    assert trained == set(plans[0].train_rows) and not trained & set(plans[0].holdout_rows)
    assert plans[0].every == 1  # a tenth of 8 planned steps, at least one
    with pytest.raises(TraitlensError, match="training.validation.holdout: 20 .* none to train on"):
        plan_training(_training(validation={"holdout": 20}), [5] * 20, 0, "a")


def test_seed_streams_are_common_across_sources_unless_asked_otherwise():
    assert stream_seed(4, "movie", "shared") == stream_seed(4, "tweets", "shared") == 4
    own = {stream_seed(seed, source, "per_source") for seed in (0, 1) for source in ("movie", "tweets")}
    assert len(own) == 4 and all(0 <= s < 2**32 for s in own)
    orders = [plan_training(_training(seed_streams=streams), [5] * 20, 0, source).step_rows(0)[0].tolist()
              for streams in ("shared", "per_source") for source in ("movie", "tweets")]
    assert orders[0] == orders[1] and orders[2] != orders[3]


def test_the_cost_counts_the_holdout_once_per_measurement(write_study, tiny_model):
    study = load_study(write_study(TINY_TRAIN.format(base=tiny_model)))
    with_validation = study.model_copy(update={"training": study.training.model_copy(
        update={"validation": Training(validation={"holdout": 8, "every": 2}).validation})})
    lengths = list(range(20, 44))
    steps, tokens, examples, validation = training_tokens(lengths, with_validation, 0, "movie")
    plan = plan_training(with_validation.training, lengths, 0, "movie")
    assert steps == 6 and examples == 6 * 8
    assert validation == 4 * sum(lengths[i] for i in plan.holdout_rows)  # steps 0, 2, 4, 6
    assert training_tokens(lengths, study, 0, "movie")[3] == 0


def test_new_settings_at_their_defaults_leave_job_keys_unchanged(write_study, tiny_model):
    text = TINY_TRAIN.format(base=tiny_model)
    plain = plan_study(load_study(write_study(text, name="a.yaml"))).train_jobs[0]
    spelt = plan_study(load_study(write_study(text.replace(
        "  checkpoint_every: 2\n", "  checkpoint_every: 2\n  seed_streams: shared\n  max_tokens: null\n"),
        name="b.yaml"))).train_jobs[0]
    assert plain.key == spelt.key and "validation" not in plain.spec["training"]
    stopped = plan_study(load_study(write_study(text.replace(
        "  checkpoint_every: 2\n", "  checkpoint_every: 2\n  validation: {holdout: 8, patience: 2}\n"),
        name="c.yaml"))).train_jobs[0]
    assert stopped.key != plain.key


@pytest.fixture
def budget_study(write_study, tiny_model):
    def make(validation: str, store: str):
        text = TINY_TRAIN.format(base=tiny_model).replace(
            "  checkpoint_every: 2\n", f"  checkpoint_every: 2\n  validation: {validation}\n")
        study = load_study(write_study(text + f"store: {store}\n", name=f"{store}.yaml"))
        sources, _ = prepare_study(study)
        return plan_study(study).train_jobs[0], Store(study.store), sources["movie"]
    return make


def _meta(path):
    return json.loads((path / ADAPTER_META_FILE).read_text())


def _weights(path):
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


def test_validation_measures_the_holdout_through_training(budget_study):
    job, store, table = budget_study("{holdout: 8, every: 2}", "measured")
    meta = _meta(train_adapter(job, store, table))
    record = meta["validation"]
    assert [step for step, _ in record["curve"]] == [0, 2, 4, 6] and record["holdout"] == 8
    assert all(np.isfinite(loss) and loss > 0 for _, loss in record["curve"])
    assert record["initial_loss"] == record["curve"][0][1] and record["stopped_at"] is None
    assert meta["examples"] == 16 and meta["steps"] == meta["planned_steps"] == 6


PLANTED = {0: 5.0, 1: 4.0, 2: 3.0, 3: 3.5, 4: 3.6, 5: 3.7, 6: 3.8}  # best at step 2, worse after


@pytest.fixture
def planted_losses(monkeypatch):
    """Validation losses by step, so the stop point is known; the real loss is still computed."""
    real = loop._record_validation
    monkeypatch.setattr(loop, "_record_validation",
                        lambda state, loss, validation, weights: real(state, PLANTED[state["step"]], validation, weights))


def test_early_stopping_records_the_stop_and_keeps_the_best_weights(budget_study, planted_losses):
    job, store, table = budget_study("{holdout: 8, every: 1, patience: 3}", "stopped")
    meta = _meta(path := train_adapter(job, store, table))
    assert meta["steps"] == 5 and meta["planned_steps"] == 6
    assert meta["validation"]["stopped_at"] == 5 and meta["validation"]["best_step"] == 2
    # the weights are those of step 2: the checkpoint of step 2 of an identical run that goes on
    job, store, table = budget_study("{holdout: 8, every: 1, patience: 3}", "reference")
    latest = train_killed_after_checkpoint(job, store, table, step=2)
    step_two = {k.removeprefix("base_model.model."): v for k, v in _weights(latest).items()}
    final = {k.removeprefix("base_model.model."): v for k, v in _weights(path).items()}
    assert final.keys() == step_two.keys() and all((final[k] == step_two[k]).all() for k in final)


def test_a_killed_early_stopping_run_resumes_to_the_same_adapter(budget_study, planted_losses):
    job, store, table = budget_study("{holdout: 8, every: 1, patience: 3}", "whole")
    whole = train_adapter(job, store, table)
    job, store, table = budget_study("{holdout: 8, every: 1, patience: 3}", "killed")
    train_killed_after_checkpoint(job, store, table, step=4)  # after the best (2), before the stop (5)
    resumed = train_adapter(job, store, table)
    assert _meta(resumed)["resumed_from_step"] == 4
    for key in ("validation", "loss_curve", "steps"):
        assert _meta(resumed)[key] == _meta(whole)[key]
    a, b = _weights(whole), _weights(resumed)
    assert all((a[k] == b[k]).all() for k in a)
