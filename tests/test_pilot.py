"""The pilot: its choice of sources and targets, its cost check, its measurements by length and
its recommendation, on planted results and end to end on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import traitlens
from conftest import MORE_SOURCES, TINY_TRAIN
from traitlens.analysis.pilot import PilotPart, recommend, summarise_pilot
from traitlens.analysis.results import Results
from traitlens.config.schema import Study
from traitlens.errors import TraitlensError
from traitlens.models.fake import FakeScorer
from traitlens.recipes.pilot import pick_sources, pick_targets, pilot_parts
from traitlens.train import loop


def planted_part(rng, steps: int, home_gain: float, seed_noise: float, sources=6, seeds=3, items=150) -> PilotPart:
    """Two targets scored in margin; source s0 is trained on target "home"'s dataset and gains
    `home_gain` there; every adapter's cell scatters by `seed_noise`; validation loss falls with
    the steps."""
    rows, outputs = [{"model": "base", "source": None, "seed": None}], {}
    base = {t: rng.normal(0, 1, items) for t in ("home", "other")}
    for t in base:
        outputs[t] = {"base": base[t]}
    adapters = []
    for s in range(sources):
        effect = {t: rng.normal(0, 0.3) for t in base}
        for r in range(seeds):
            model = f"s{s}/s{r}"
            rows.append({"model": model, "source": f"s{s}", "seed": r})
            for t in base:
                gain = home_gain if (s == 0 and t == "home") else effect[t]
                outputs[t][model] = base[t] + gain + rng.normal(0, seed_noise) + rng.normal(0, 0.5, items)
            adapters.append({"source": f"s{s}", "seed": r, "meta": {"validation": {
                "initial_loss": 2.0, "kept_loss": 2.0 - 0.01 * steps, "curve": [[0, 2.0], [steps, 2.0 - 0.01 * steps]]}}})
    records = {t: {m: [{"gold": "a", "prediction": "a", "score": 1.0, "choice_logprobs": {"a": 0.0, "b": -float(v)}}
                       for v in values] for m, values in by_model.items()} for t, by_model in outputs.items()}
    cells = pd.DataFrame([{**row, "target": t, "key": f"{row['model']}@{t}", "n": items,
                           "metrics": {"accuracy": 0.5}} for row in rows for t in base])
    results = Results(cells, records, {("s0", "home")}, {"home": ["x"], "other": ["y"]},
                      labels={"home": ["a", "b"], "other": ["a", "b"]}).scored("margin")
    return PilotPart(steps, results, adapters)


def test_the_pilot_measures_learning_and_noise_by_length_and_recommends_the_cheapest_design():
    rng = np.random.default_rng(0)
    parts = [planted_part(rng, 4, home_gain=0.0, seed_noise=0.4), planted_part(rng, 16, home_gain=1.0, seed_noise=0.1)]
    cost = lambda steps, seeds, items: (steps * seeds + seeds * items / 10) / 100
    pilot = summarise_pilot(parts, goal=0.8, cost=cost)
    own = pilot.own_task_.set_index("steps")
    assert list(own["source"]) == ["s0", "s0"] and (own["variance"] == "seeds + items").all()
    assert not own.loc[4, "learned"] and own.loc[16, "learned"] and own.loc[16, "low"] > 0
    assert own.loc[16, "validation_drop"] == pytest.approx(0.16)
    lengths = pilot.lengths_.set_index("steps")
    assert lengths.loc[4, "seed"] > 5 * lengths.loc[16, "seed"]  # planted 0.16 against 0.01
    rec = pilot.recommendation
    assert rec["reached"] and rec["steps"] == 16 and rec["reliability"] >= 0.8  # the only length that learned
    at_16 = pilot.designs_[pilot.designs_["steps"] == 16]
    worst = at_16.groupby(["seeds", "items"]).agg(reliability=("reliability", "min"), cost=("cost", "first"))
    assert (worst.loc[worst["cost"] < rec["cost"], "reliability"] < 0.8).all()  # nothing cheaper reaches it

    tight = recommend(pilot.designs_, pilot.lengths_, 0.8, budget=rec["cost"] / 2)
    assert not tight["reached"] and tight["cost"] <= rec["cost"] / 2
    assert f"costs {rec['cost']:.2f}: the budget would have to be that" in tight["note"]


def test_a_pilot_where_no_source_learns_says_so():
    rng = np.random.default_rng(1)
    parts = [planted_part(rng, steps, home_gain=0.0, seed_noise=0.2) for steps in (4, 16)]
    pilot = summarise_pilot(parts)
    assert not pilot.own_task_["learned"].any()
    assert "no pilot length did every source measurably learn its own task" in pilot.recommendation["note"]


@pytest.fixture
def pilot_study(tmp_path, tiny_model):
    path = tmp_path / "study.yaml"
    path.write_text(TINY_TRAIN.format(base=tiny_model).replace("targets:\n", MORE_SOURCES.replace(
        "targets:\n", "  - name: nyt\n    dataset: catalog:sentiment-nyt\n    transforms: [{subsample: 16}]\ntargets:\n"))
        .replace("evaluation: {limit: 8, dtype: float32}", "evaluation: {limit: 12, dtype: float32}"))
    return path


def test_sources_and_targets_are_spread_out_and_named_ones_are_checked(pilot_study):
    config = traitlens.load(pilot_study).config
    assert pick_sources(config, 2) == ["movie", "tweets"]  # the one with a home target first
    assert pick_targets(config, ["movie", "tweets"], 2) == ["movie", "amazon"]
    parts = pilot_parts(config, ["movie"], ["movie"], [4, 2], [0, 1], items=6)
    assert [p.training.max_steps for p in parts] == [2, 4] and [p.name for p in parts] == [
        "tiny-train-pilot-2", "tiny-train-pilot-4"]
    assert all(p.targets[0].limit == 6 and p.training.validation.holdout == 16 for p in parts)
    with pytest.raises(TraitlensError, match="--source 'movi' is not a source of the study; did you mean 'movie'"):
        pilot_parts(config, ["movi"], ["movie"], [2], [0, 1], None)
    with pytest.raises(TraitlensError, match="--seeds must be 2 or more"):
        pilot_parts(config, ["movie"], ["movie"], [2], [0], None)
    with pytest.raises(TraitlensError, match="--lengths / --seeds: seeds: Value error, seeds must be distinct"):
        pilot_parts(config, ["movie"], ["movie"], [2], [0, 0], None)
    with pytest.raises(TraitlensError, match="--lengths / --seeds: max_steps: Input should be less than or equal"):
        pilot_parts(config, ["movie"], ["movie"], [20_000_000], [0, 1], None)
    assert isinstance(parts[0], Study)


def test_the_pilot_runs_end_to_end_within_its_budget_and_resumes(pilot_study, tmp_path, monkeypatch):
    study = traitlens.load(pilot_study)
    fake = lambda _: FakeScorer()
    with pytest.raises(TraitlensError, match=r"this pilot costs .* over --budget 0.01; raise --budget to"):
        study.pilot(lengths=[1, 2, 3], seeds=[0, 1], items=8, budget=0.01, make_scorer=fake)
    pilot = study.pilot(lengths=[1, 2, 3], seeds=[0, 1], items=8, budget=50, make_scorer=fake,
                        out=tmp_path / "pilot.html")
    assert sorted(pilot.lengths_["steps"]) == [1, 2, 3]
    assert set(pilot.own_task_["source"]) == {"movie"}  # the only source with a home target
    assert (pilot.own_task_["validation_drop"].notna()).all()
    data = tmp_path / "pilot-data"
    saved = json.loads((data / "recommendation.json").read_text())
    assert saved["plan"]["sources"] == ["movie", "tweets", "nyt"] and saved["plan"]["share"] <= 50
    assert (data / "tiny-train-pilot-2" / "items.parquet").exists()
    assert "Recommendation" in pilot.page.read_text() and pilot.page == tmp_path / "pilot.html"
    # A second run trains nothing: every part is in the store under its own keys.
    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(loop, "_train_files", no_training)
    again = study.pilot(lengths=[1, 2, 3], seeds=[0, 1], items=8, budget=50, make_scorer=fake,
                        out=tmp_path / "pilot.html")
    pd.testing.assert_frame_equal(again.own_task_, pilot.own_task_)


def test_the_pilot_command_prints_the_recommendation_and_refuses_bad_lengths(pilot_study):
    bad = subprocess.run([sys.executable, "-m", "traitlens", "pilot", str(pilot_study), "--lengths", "2,x"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--lengths" in bad.stderr and "Traceback" not in bad.stderr
    unknown = subprocess.run([sys.executable, "-m", "traitlens", "pilot", str(pilot_study), "--source", "movi"],
                             capture_output=True, text=True)
    assert unknown.returncode == 2 and "did you mean 'movie'" in unknown.stderr and "Traceback" not in unknown.stderr
    over = subprocess.run([sys.executable, "-m", "traitlens", "pilot", str(pilot_study), "--lengths", "1,2",
                           "--seeds", "0,1", "--budget", "0.01"], capture_output=True, text=True)
    assert over.returncode == 2 and "raise --budget to" in over.stderr and "Traceback" not in over.stderr


def test_the_common_random_numbers_benchmark_finds_a_planted_common_share():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "common_random_numbers.py"
    run = subprocess.run([sys.executable, str(script), "--planted", "0.6"], capture_output=True, text=True, check=True)
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in run.stdout.splitlines()
            if line.startswith(("shared ", "per_source "))}
    share, low, high = rows["shared"][3:6]
    assert low <= 0.6 <= high and share > 0.4
    share, low, high = rows["per_source"][3:6]
    assert low <= 0 <= high and abs(share) < 0.2
