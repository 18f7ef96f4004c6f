from __future__ import annotations

import pytest

from conftest import MINIMAL
from traitlens.config import load_study
from traitlens.errors import ConfigError
from traitlens.execution.plan import plan_study
from traitlens.store import Store


def keys_by_label(plan):
    return {job.label: job.key for job in plan.jobs}


def test_one_training_per_source_and_seed_one_eval_per_model_and_target(write_study):
    plan = plan_study(load_study(write_study(MINIMAL + "  seeds: [0, 1, 2]\n")))
    assert len(plan.train_jobs) == 2 * 3
    assert len(plan.eval_jobs) == (1 + 2 * 3) * 2
    models = {job.model for job in plan.eval_jobs}
    assert models == {"base", "movie/s0", "movie/s1", "movie/s2", "boolq/s0", "boolq/s1", "boolq/s2"}
    train_keys = {job.key for job in plan.train_jobs}
    assert all(job.needs in train_keys for job in plan.eval_jobs if job.model != "base")
    assert len({job.key for job in plan.jobs}) == len(plan.jobs)  # every key distinct


def test_single_seed_models_are_named_by_source(write_study):
    plan = plan_study(load_study(write_study()))
    assert {job.model for job in plan.eval_jobs} == {"base", "movie", "boolq"}


def test_training_setting_changes_adapter_jobs_only(write_study):
    before = keys_by_label(plan_study(load_study(write_study())))
    after = keys_by_label(plan_study(load_study(write_study(MINIMAL.replace("0.001", "0.002")))))
    changed = {label for label in before if before[label] != after[label]}
    assert changed == {label for label in before if not label.startswith("eval base")}


def test_labels_that_cannot_change_results_do_not_change_keys(write_study):
    before = keys_by_label(plan_study(load_study(write_study())))
    text = (MINIMAL.replace("abilities: [sentiment]", "abilities: [sentiment, reviews]")
            + "  checkpoint_every: 7\n  packing: false\n  pass_tokens: 64\n")
    assert keys_by_label(plan_study(load_study(write_study(text)))) == before


def test_target_limit_changes_only_that_targets_cells(write_study):
    before = keys_by_label(plan_study(load_study(write_study())))
    text = MINIMAL.replace("kind: generative", "kind: generative\n    limit: 10")
    after = keys_by_label(plan_study(load_study(write_study(text))))
    changed = {label for label in before if before[label] != after[label]}
    assert changed == {"eval base on asdiv", "eval movie on asdiv", "eval boolq on asdiv"}


def test_adding_a_source_adds_exactly_its_jobs(write_study):
    before = keys_by_label(plan_study(load_study(write_study())))
    text = MINIMAL.replace("targets:", "  - name: tweets\n    dataset: catalog:sentiment-tweets\ntargets:")
    after = keys_by_label(plan_study(load_study(write_study(text))))
    assert all(after[label] == key for label, key in before.items())
    assert set(after) - set(before) == {"train tweets (seed 0)", "eval tweets on movie",
                                        "eval tweets on asdiv"}


def test_local_file_fingerprint_follows_its_content(write_study, tmp_path):
    data = tmp_path / "local.jsonl"
    data.write_text('{"input": "great", "answer": "positive"}\n')
    text = MINIMAL.replace("dataset: catalog:boolq", "dataset: local.jsonl")
    first = keys_by_label(plan_study(load_study(write_study(text))))
    data.write_text('{"input": "awful", "answer": "negative"}\n')
    second = keys_by_label(plan_study(load_study(write_study(text))))
    assert first["train boolq (seed 0)"] != second["train boolq (seed 0)"]
    assert first["train movie (seed 0)"] == second["train movie (seed 0)"]


def test_missing_local_file_names_the_field(write_study):
    text = MINIMAL.replace("dataset: catalog:boolq", "dataset: data/missing.jsonl")
    with pytest.raises(ConfigError) as info:
        plan_study(load_study(write_study(text)))
    assert "sources[1] (boolq).dataset: file" in str(info.value) and "does not exist" in str(info.value)


def test_local_base_model_identity_follows_its_files(write_study, tmp_path):
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(b"\x00" * 64)
    text = MINIMAL.replace("base: smollm2-135m-instruct", "base: ./my-model")
    first = plan_study(load_study(write_study(text)))
    assert first.jobs[0].spec["base"]["local"]
    (model / "model.safetensors").write_bytes(b"\x01" * 64)
    second = plan_study(load_study(write_study(text)))
    assert first.jobs[0].key != second.jobs[0].key


def test_hub_base_is_keyed_by_revision(write_study):
    text = MINIMAL.replace("base: smollm2-135m-instruct",
                           "base: {name: HuggingFaceTB/SmolLM2-360M, revision: abc123}")
    plan = plan_study(load_study(write_study(text)))
    assert plan.jobs[0].spec["base"] == {"hub": "HuggingFaceTB/SmolLM2-360M", "revision": "abc123"}


def test_states_come_from_the_store(write_study, tmp_path):
    plan = plan_study(load_study(write_study()))
    store = Store(tmp_path / "store")
    train, evaluation = plan.train_jobs[0], plan.eval_jobs[0]
    store.start_job(train.key, "train", train.label, train.spec, worker="t")
    store.fail_job(train.key, "boom")
    store.start_job(evaluation.key, "eval", evaluation.label, evaluation.spec, worker="t")
    store.put_cell(evaluation.key, "base", "movie", {}, [{"score": 1.0}], {})
    states = plan.states(store)
    assert states[train.key] == "failed" and states[evaluation.key] == "done"
    assert sum(state == "new" for state in states.values()) == len(plan.jobs) - 2
