"""The trained adapter as the unit of replication: variance components, seed-level intervals and
contrasts, the seed-split trait count, congruence against its chance level, unique trait names."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traitlens.analysis.reliability import COMPONENTS, Deltas, g_study, plan_reliability, reliability, variance_components
from traitlens.analysis.results import Results
from traitlens.errors import TraitlensError
from traitlens.analysis.traits import PCATraits, congruence_null, seed_split_count, unique_names
from traitlens.analysis.uncertainty import ITEMS_ONLY, SEEDS_AND_ITEMS, compare_models, crossed_mean, sign_flip_p, \
    source_uncertainty

TRUE = {"source": 0.04, "seed": 0.02, "item": 0.05, "source_item": 0.03, "residual": 0.1}


def planted_deltas(rng, sources=20, seeds=3, items=200, true=TRUE) -> np.ndarray:
    """Per-item deltas (sources x seeds x items) with these variance components."""
    shape = {"source": (sources, 1, 1), "seed": (sources, seeds, 1), "item": (1, 1, items),
             "source_item": (sources, 1, items), "residual": (sources, seeds, items)}
    return sum(np.sqrt(true[c]) * rng.standard_normal(shape[c]) for c in COMPONENTS)


def test_variance_components_recover_planted_components_within_their_intervals():
    rng = np.random.default_rng(0)
    trials = 60
    covered = {c: 0 for c in COMPONENTS}
    for trial in range(trials):
        row = g_study(Deltas("t", planted_deltas(rng)), draws=1000, seed=trial)
        for c in COMPONENTS:
            covered[c] += row[f"{c}_low"] <= TRUE[c] <= row[f"{c}_high"]
    for c in COMPONENTS:  # 95% intervals: at least 85% of 60 trials (a binomial floor, not a tuned value)
        assert covered[c] / trials >= 0.85, (c, covered[c])
    # The model's reliability agrees with what the seeds themselves show (their split-half step-up).
    rows = [g_study(Deltas("t", planted_deltas(rng, sources=60)), draws=200, seed=t) for t in range(20)]
    assert abs(np.mean([r["split_reliability"] for r in rows]) - np.mean([r["seed_reliability"] for r in rows])) < 0.05
    truth = reliability(np.array([TRUE[c] for c in COMPONENTS]), 3, 200, items_fixed=True)
    assert np.mean([r["seed_reliability"] for r in rows]) == pytest.approx(truth, abs=0.05)


def test_seed_f_is_about_one_without_training_noise_and_large_with_it():
    rng = np.random.default_rng(1)
    quiet = g_study(Deltas("t", planted_deltas(rng, true=TRUE | {"seed": 0.0})), draws=10)
    noisy = g_study(Deltas("t", planted_deltas(rng, true=TRUE | {"seed": 0.05})), draws=10)
    assert 0.4 < quiet["seed_f"] < 1.7 and quiet["seed_f_p"] > 0.01  # F(40, 7960): sd about 0.22
    assert noisy["seed_f"] > 20 and noisy["seed_f_p"] < 1e-6


def test_more_seeds_and_items_raise_the_projected_reliability_and_the_plan_prices_them():
    table = pd.DataFrame([{"target": "t", **TRUE}])
    plan = plan_reliability(table, goal=0.8)
    projected = plan.projections_.set_index(["seeds", "items"])["reliability"]
    assert projected[(4, 200)] > projected[(2, 200)] > projected[(1, 200)]
    assert projected[(2, 500)] > projected[(2, 50)]
    best = plan.designs_.set_index("target").loc["t"]
    assert best["reached"] and best["reliability"] >= 0.8
    # No cheaper design on the grid reaches the goal.
    cheaper = plan.projections_[plan.projections_["seeds"] * plan.projections_["items"] < best["cost"]]
    assert (cheaper["reliability"] < 0.8).all()
    hopeless = plan_reliability(pd.DataFrame([{"target": "t", **TRUE, "source": 0.0}]), goal=0.8)
    assert not hopeless.designs_["reached"].any() and hopeless.unreproduced == []


def seeded_results(rng, seed_noise: float, sources=8, seeds=2, items=120) -> Results:
    """Results on one target scored in margin (a value per item): every source has `seeds`
    adapters whose cells scatter by `seed_noise` around the source's effect."""
    base = rng.normal(0, 1, items)
    outputs, rows = {"base": base}, [{"model": "base", "source": None, "seed": None}]
    for s in range(sources):
        effect = rng.normal(0, 0.3)
        for r in range(seeds):
            outputs[f"s{s}/s{r}"] = base + effect + rng.normal(0, seed_noise) + rng.normal(0, 0.5, items)
            rows.append({"model": f"s{s}/s{r}", "source": f"s{s}", "seed": r})
    records = {m: [{"gold": "a", "prediction": "a", "score": 1.0, "choice_logprobs": {"a": 0.0, "b": -float(v)}}
                   for v in values] for m, values in outputs.items()}
    cells = pd.DataFrame([{**row, "target": "t", "key": row["model"], "n": items, "metrics": {}} for row in rows])
    return Results(cells, {"t": records}, set(), {"t": ["x"]}, labels={"t": ["a", "b"]}).scored("margin")


def test_a_seed_level_interval_is_wider_than_an_item_only_one_when_seeds_disagree():
    rng = np.random.default_rng(2)
    agree, disagree = seeded_results(rng, 0.0), seeded_results(rng, 0.4)
    for results, wider in ((agree, False), (disagree, True)):
        matrix = source_uncertainty(results, samples=400).set_index("source")
        first_seed = replace(results, cells=results.cells[results.cells["seed"].isna() | (results.cells["seed"] == 0)])
        one = source_uncertainty(first_seed, samples=400).set_index("source")
        assert (matrix["variance"] == SEEDS_AND_ITEMS).all() and (one["variance"] == ITEMS_ONLY).all()
        ratio = ((matrix["high"] - matrix["low"]) / (one["high"] - one["low"])).median()
        assert (ratio > 2) if wider else (ratio < 1.2), ratio
    assert variance_components(first_seed).loc[0, "note"].startswith("one seed per source")


def test_contrasts_paired_by_seed_are_tested_over_adapters():
    rng = np.random.default_rng(3)
    results = seeded_results(rng, 0.5, sources=2, seeds=4)
    row = compare_models(results, "s0", "s1", "t")
    assert row.seed_pairs == 4 and row.variance == SEEDS_AND_ITEMS
    assert row.p >= 1 / 16  # four seed pairs: an exact sign-flip cannot go below 2/16
    one = compare_models(replace(results, cells=results.cells[results.cells["seed"].isna()
                                                             | (results.cells["seed"] == 0)]), "s0", "s1", "t")
    assert one.variance == ITEMS_ONLY and (row.high - row.low) > (one.high - one.low)


def test_sign_flip_is_exact_and_crossed_mean_counts_units_and_items():
    rng = np.random.default_rng(4)
    assert sign_flip_p(np.array([1.0, 2.0, 3.0]), rng) == pytest.approx(2 / 8)
    assert sign_flip_p(np.zeros(5), rng) == 1.0
    x = rng.normal(0, 1, (200, 1)) * 0.5 + rng.normal(0, 1, (1, 300)) * 0.3 + rng.normal(0, 1, (200, 300))
    _, variance, _ = crossed_mean(x)
    assert variance == pytest.approx(0.25 / 200 + 0.09 / 300 + 1 / 60000, rel=0.3)


def planted_seed_matrices(rng, sources, targets, k, seeds, noise):
    loadings = np.zeros((targets, k))
    loadings[np.arange(targets), np.arange(targets) % k] = rng.uniform(0.6, 1.0, targets)
    truth = rng.standard_normal((sources, k)) @ loadings.T
    signal = truth.var(axis=0, ddof=1).mean()
    return truth[None] + np.sqrt(noise * signal) * rng.standard_normal((seeds, sources, targets))


@pytest.mark.parametrize("seeds", [2, 3])
def test_seed_split_count_is_right_in_nine_of_ten_planted_studies_where_the_data_allow(seeds):
    """Seed noise of 50-200% of the signal variance, 2-3 seeds; 24 sources x 12 targets (where
    the weakest trait stands far enough above that noise: `benchmarks/trait_count.py
    --seed-noise` measures where it does not)."""
    rng = np.random.default_rng(5)
    right = []
    for k in (1, 2, 3):
        for noise in (0.5, 1.0, 2.0):
            for _ in range(4):
                count, _ = seed_split_count(planted_seed_matrices(rng, 24, 12, k, seeds, noise), samples=100,
                                            seed=int(rng.integers(1 << 30)))
                right.append(count == k)
    assert np.mean(right) >= 0.9, np.mean(right)


def test_seed_split_count_is_zero_for_pure_training_noise():
    rng = np.random.default_rng(6)
    zero = [seed_split_count(rng.standard_normal((2, 16, 6)), samples=100, seed=i)[0] == 0 for i in range(20)]
    assert np.mean(zero) >= 0.8


def test_the_seed_split_benchmark_runs_and_beats_the_item_split():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "trait_count.py"
    run = subprocess.run([sys.executable, str(script), "--seed-noise", "--repeats", "1", "--seed", "2"],
                         capture_output=True, text=True, check=True)
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): [c.strip() for c in line.strip("|").split("|")]
            for line in run.stdout.splitlines() if line.startswith("| ")}
    allowed = rows[("allowed (detectability >= 8)", "True")]
    assert int(allowed[3].rstrip("%")) >= 90 and int(allowed[3].rstrip("%")) > int(allowed[4].rstrip("%"))


def test_congruence_of_structureless_matrices_is_high_for_few_targets():
    """The reason every congruence stands beside its null: 16 x 6 matrices with nothing shared
    still reach a median congruence near 0.4 and a 95th percentile above 0.75."""
    rng = np.random.default_rng(7)
    matrix = rng.standard_normal((16, 6))
    fit = lambda m: PCATraits(2).fit(pd.DataFrame(m)).loadings_.to_numpy()  # noqa: E731
    null = congruence_null(fit, [matrix, matrix], samples=150, seed=1)
    assert 0.25 < np.median(null) < 0.6 and np.quantile(null, 0.95) > 0.75


def test_trait_names_are_never_given_twice():
    loadings = pd.DataFrame({"trait 1": [0.9, 0.2], "trait 2": [0.1, 0.95]}, index=["movie", "amazon"])
    names = unique_names(["sentiment (+movie)", "sentiment (+amazon)"], loadings)
    assert names == ["sentiment [movie] (+movie)", "sentiment [amazon] (+amazon)"]
    assert len({n.split(" (")[0] for n in names}) == 2
    assert unique_names(["a (+x)", "b (+y)"], loadings) == ["a (+x)", "b (+y)"]


def test_planted_metric_comparison_shows_uncalibrated_metrics_reproduce_the_preference():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "metric_choice.py"
    run = subprocess.run([sys.executable, str(script), "--planted", "--studies", "3", "--seed", "1"],
                         capture_output=True, text=True, check=True)
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): [float(c) for c in line.strip("|").split("|")[2:]]
            for line in run.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()}
    reliable, valid = zip(*(rows[("2", m)] for m in ("accuracy", "calibrated_margin")))
    assert valid[1] > valid[0] + 0.2  # calibrated margin tracks the planted skill; accuracy the preference
    assert min(reliable) > 0.6  # both reproduce across seeds: reproducibility alone cannot tell them apart


def test_forecast_scores_give_width_interval_score_and_the_seed_mean_ceiling():
    from traitlens.forecast.quality import ceiling, forecast_quality

    measured = pd.DataFrame({"a": [0.1, 0.2, 0.3, 0.4], "b": [0.4, 0.1, 0.2, 0.3]}, index=list("wxyz"))
    forecast = measured * 0.5
    quality = forecast_quality(forecast, measured, 0, forecast - 0.1, forecast + 0.1)
    assert quality.width == pytest.approx(0.2)
    misses = ((measured - forecast - 0.1).clip(lower=0)).to_numpy().mean()
    assert quality.winkler == pytest.approx(0.2 + 2 / 0.05 * misses)
    wide = forecast_quality(measured * 0, measured, 0, measured * 0 - 1, measured * 0 + 1)
    assert wide.coverage == 1.0 and wide.winkler > quality.winkler  # covering everything is not a good forecast
    assert ceiling(0.37, 2) == pytest.approx(np.sqrt(2 * 0.37 / 1.37))  # about 0.73, not 0.37
    assert ceiling(1.0, 2) == 1.0 and ceiling(-0.2, 2) == 0.0


def test_the_forecast_benchmark_scores_trivial_forecasts_beside_the_probes():
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, str(root / "benchmarks" / "forecast.py"),
                          str(root / "studies" / "traits-offline" / "smollm2-report-data")],
                         capture_output=True, text=True, check=True)
    lines = run.stdout.splitlines()
    assert any(" target means " in line for line in lines) and any(" gradient " in line for line in lines)
    zeros = next(line.split() for line in lines if " zeros " in line)
    assert float(zeros[-3]) > 0.9 and float(zeros[-1]) > 0  # zeros cover too: coverage is not skill


def test_the_reliability_verdict_says_what_was_and_was_not_measured():
    from traitlens.analysis.plain import json_ready
    from traitlens.report.page import reliability_summary

    rng = np.random.default_rng(8)
    two = json_ready(variance_components(seeded_results(rng, 0.6), draws=50).to_dict("records"))
    assert "would not reproduce the source ranking of t" in reliability_summary(two)["verdict"]
    one = seeded_results(rng, 0.0, seeds=1)
    assert reliability_summary(json_ready(variance_components(one).to_dict("records")))["one_seed"]
    counted = json_ready(variance_components(one.scored("balanced_accuracy")).to_dict("records"))
    assert reliability_summary(counted)["verdict"].startswith("No target's cells could be decomposed")


def test_the_matrix_follows_the_study_s_view_unless_told_otherwise():
    results = seeded_results(np.random.default_rng(5), 0.1)
    zscore = replace(results, settings=results.settings.model_copy(update={"view": "zscore"}))
    pd.testing.assert_frame_equal(zscore.matrix(), zscore.matrix("zscore"))
    pd.testing.assert_frame_equal(results.matrix(), results.matrix("delta"))
    assert not zscore.matrix().equals(zscore.matrix("delta"))


def test_results_built_by_hand_are_scored_at_once_and_refuse_cells_without_items():
    rng = np.random.default_rng(6)
    scored = seeded_results(rng, 0.1)
    plain = Results(scored.cells.drop(columns="score"), scored.outputs, set(), {"t": ["x"]}, labels={"t": ["a", "b"]})
    assert plain.metric == "accuracy" and set(plain.scores) == {"t"} and "score" in plain.cells
    plain.matrix()  # no KeyError on the first analysis
    with pytest.raises(TraitlensError, match="1 cell\\(s\\) have no item records in `outputs`, e.g. model 's0/s0'"):
        Results(scored.cells, {"t": {k: v for k, v in scored.outputs["t"].items() if k != "s0/s0"}}, set(), {"t": ["x"]})
    with pytest.raises(TraitlensError, match="cells lack column\\(s\\) metrics"):
        Results(scored.cells.drop(columns="metrics"), scored.outputs, set(), {"t": ["x"]})
