"""Forecasting (#23): what a study costs, counted in tokens through the model."""

from __future__ import annotations

import json
import textwrap

import pytest

import traitlens
from traitlens.config import load_study
from traitlens.data.load import prepare_study
from traitlens.execution.plan import plan_study
from traitlens.forecast.cost import TRAIN_PASSES, study_cost
from traitlens.store import Store


class WordTokenizer:
    """One token per whitespace-separated word, an end token, no special tokens: counts a
    reader can do by hand."""

    eos_token_id = 0
    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": [1] * len(text.split())}


def test_cost_counts_every_trained_and_scored_token(tmp_path):
    rows = [{"input": f"w{i} w w", "answer": "pos"} for i in range(8)]
    for split, part in (("train", rows[:5]), ("test", rows[5:])):
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    (tmp_path / "study.yaml").write_text(textwrap.dedent("""\
        name: cost
        base: smollm2-135m-instruct
        sources:
          - {name: words, dataset: ./data, labels: [neg, pos], template: {instruction: Say, trigger: Label}}
        targets:
          - {name: label, dataset: ./data, kind: classification, labels: [neg, pos], abilities: [a],
             template: {instruction: Say, trigger: Label}}
          - {name: say, dataset: ./data, kind: generative, abilities: [b], limit: 2,
             template: {instruction: Say, trigger: Label}, generation: {max_new_tokens: 10}}
        training: {max_steps: 4, batch_size: 2, gradient_accumulation: 1, seeds: [0, 1]}
        """))
    study = load_study(tmp_path / "study.yaml")
    sources, targets = prepare_study(study)
    cost = study_cost(study, sources, targets, WordTokenizer())
    # An example is "Say / wN w w / Label:" (5 words) + "pos" + the end token: 7 tokens. Five
    # examples in steps of 2 make epochs of 2 + 2 + 1, so 4 steps see 2 + 2 + 1 + 2 = 7 examples.
    assert cost.training[["seed", "steps", "examples", "tokens"]].values.tolist() == [[0, 4, 7, 49], [1, 4, 7, 49]]
    assert (cost.training["cost"] == TRAIN_PASSES * 49).all()
    # Each of the 3 models (base, two seeds) scores 3 label items (5 prompt words + 2 one-word
    # labels) and generates for 2 items (5 prompt words + 10 new tokens).
    by_target = cost.evaluation.groupby("target")
    assert by_target["cost"].sum().to_dict() == {"label": 3 * 3 * 7, "say": 3 * 2 * 15}
    assert sorted(cost.evaluation["model"].unique()) == ["base", "words@0", "words@1"]
    assert cost.total == 2 * 3 * 49 + 63 + 90


def test_cost_matches_what_training_actually_saw(report):
    """The count's training tokens are the trainer's own (`tokens_seen` beside each adapter)."""
    path = report.with_name("study.yaml")
    cost = traitlens.load(path).cost()
    study = load_study(path)
    store = Store(study.store)
    seen = {(job.source, job.seed): store.adapter_meta(job.key)["tokens_seen"] for job in plan_study(study).train_jobs}
    counted = {(r.source, r.seed): r.tokens for r in cost.training.itertuples()}
    assert counted == seen and all(v > 0 for v in seen.values())


def test_plan_cost_prints_the_count(report, capsys):
    from traitlens.cli import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["plan", "--cost", str(report.with_name("study.yaml"))])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "forward tokens" in out and "train movie" in out and "evaluate amazon" in out


