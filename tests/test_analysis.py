"""Matrix views, uncertainty, traits, naming, side effects: on synthetic data with known truth."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traitlens.analysis.analyze import analyze
from traitlens.analysis.results import Results
from traitlens.analysis.effects import asymmetry, side_effects
from traitlens.analysis.traits import FactorTraits, PCATraits, match, name_trait, parallel_analysis, promax, varimax
from traitlens.analysis.metrics import ItemScores, paired_values_test
from traitlens.analysis.uncertainty import cell_uncertainty, delta_draws
from traitlens.analysis.views import raw_matrix, seed_spread, view
from traitlens.config.schema import Analysis
from traitlens.errors import TraitlensError
from traitlens.evaluate.metrics import cell_metrics

GOLDEN = json.loads((Path(__file__).parent / "golden" / "factor_analysis.json").read_text())


@pytest.mark.parametrize("rotation", ["varimax", "promax"])
def test_factor_loadings_match_factor_analyzer_golden(rotation):
    data = pd.DataFrame(GOLDEN["data"], columns=[f"t{i}" for i in range(8)])
    ours = FactorTraits(n_traits=2, rotation=rotation).fit(data).loadings_.to_numpy()
    expected = np.array(GOLDEN[rotation])
    aligned, phi = match(expected, ours)
    assert np.abs(aligned - expected).max() < 0.02 and phi.min() > 0.999


def test_varimax_is_orthogonal_and_promax_oblique():
    loadings = np.array(GOLDEN["varimax"]) @ np.array([[0.8, -0.6], [0.6, 0.8]])  # a rotated solution
    rotated, rotation = varimax(loadings)
    assert np.allclose(rotation.T @ rotation, np.eye(2), atol=1e-8)
    assert np.allclose(rotated @ rotated.T, loadings @ loadings.T, atol=1e-8)  # communalities kept
    _, oblique = promax(loadings)
    assert not np.allclose(oblique.T @ oblique, np.eye(2), atol=1e-3)


def planted(rng, adapters=40, noise=0.3):
    """A matrix of 3 planted traits over 9 targets (3 targets each) plus noise."""
    true = np.zeros((9, 3))
    for trait in range(3):
        true[3 * trait:3 * trait + 3, trait] = rng.uniform(0.7, 0.9, 3)
    scores = rng.standard_normal((adapters, 3))
    data = scores @ true.T + noise * rng.standard_normal((adapters, 9))
    return pd.DataFrame(data, columns=[f"t{i}" for i in range(9)]), true


@pytest.mark.parametrize("estimator", [PCATraits, FactorTraits])
def test_planted_traits_are_recovered(estimator):
    rng = np.random.default_rng(0)
    for _ in range(5):
        data, true = planted(rng)
        fitted = estimator(n_traits=3, rotation="varimax").fit(data)
        _, phi = match(true, fitted.loadings_.to_numpy())
        assert phi.min() >= 0.95, phi


def test_parallel_analysis_finds_the_planted_count():
    rng = np.random.default_rng(1)
    picks = [parallel_analysis(planted(rng)[0].to_numpy(), samples=100, seed=i) for i in range(20)]
    assert picks.count(3) >= 16, picks
    noise_only = rng.standard_normal((40, 9))
    assert parallel_analysis(noise_only, samples=100) == 1  # the floor: at least one trait


def test_parallel_analysis_on_the_covariance_permutes_columns():
    rng = np.random.default_rng(4)
    picks = [parallel_analysis(planted(rng)[0].to_numpy(), samples=100, seed=i, standardize=False)
             for i in range(20)]
    assert picks.count(3) >= 16, picks
    # Columns of very different scales but nothing shared: the permutation null keeps each
    # column's variance, so no big column passes for a trait.
    assert parallel_analysis(rng.standard_normal((40, 9)) * np.arange(1, 10), samples=100, standardize=False) == 1


def test_unstandardised_traits_ignore_a_target_that_only_echoes_noise():
    """The smollm2-offline study's case: a target whose deltas are tiny loads as strongly as the
    real ones once standardised, and not at all on the covariance."""
    rng = np.random.default_rng(5)
    trait = rng.standard_normal(12)
    data = pd.DataFrame({f"real{i}": 0.1 * trait + 0.02 * rng.standard_normal(12) for i in range(3)})
    data["echo"] = 0.002 * trait + 0.001 * rng.standard_normal(12)  # correlated, but a hundredth the size
    data["noise"] = 0.03 * rng.standard_normal(12)
    standardised = PCATraits(n_traits=1).fit(data).loadings_["trait 1"]
    centred = PCATraits(n_traits=1, standardize=False).fit(data)
    loadings = centred.loadings_["trait 1"]
    assert abs(standardised["echo"]) > 0.5 * standardised.abs().max()
    assert abs(loadings["echo"]) < 0.05 * loadings.abs().max()
    assert 0.8 < centred.explained_variance_ratio_.iloc[0] <= 1.0  # share of the total variance


def test_auto_trait_count_and_labels():
    data, _ = planted(np.random.default_rng(2))
    data.index = [f"source{i}" for i in range(len(data))]
    fitted = PCATraits().fit(data)
    assert fitted.n_traits_ == 3
    assert list(fitted.loadings_.index) == list(data.columns) and list(fitted.scores_.index) == list(data.index)
    assert fitted.explained_variance_ratio_.is_monotonic_decreasing
    assert 0.6 < fitted.explained_variance_ratio_.sum() <= 1.0


def test_bootstrap_interval_covers_the_true_delta_at_its_nominal_rate():
    rng = np.random.default_rng(3)
    p_base, p_adapter, n = 0.6, 0.68, 150
    covered = 0
    trials = 300
    for _ in range(trials):
        ability = rng.uniform(size=n)  # a shared item difficulty makes the pair correlated
        base = (ability < p_base).astype(float)
        adapter = (rng.uniform(size=n) < np.where(base == 1, 0.9, (p_adapter - 0.9 * p_base) / (1 - p_base))).astype(float)
        scores = ItemScores(["base", "adapter"], "accuracy", values=np.vstack([base, adapter]))
        low, high = np.quantile(delta_draws(scores, ["adapter"], 1000, rng), [0.025, 0.975])  # as the matrix's
        covered += low <= p_adapter - p_base <= high
    assert 0.91 <= covered / trials <= 0.985, covered / trials


def test_paired_test():
    rng = np.random.default_rng(0)
    same = np.array([1, 0, 1, 1, 0] * 20, float)
    assert paired_values_test(same, same, rng) == 1.0
    better = same.copy()
    better[same == 0] = 1
    assert paired_values_test(same, better, rng) < 1e-6  # 40 items gained, none lost
    soft_base, soft = rng.uniform(size=60), rng.uniform(size=60)
    assert 0 < paired_values_test(soft_base, soft, rng) <= 1


def label_items(rng, skill, golds, labels=("negative", "positive"), preference=None):
    """Item records of a model on a label target with these `golds`: the gold label's
    log-probability leads by `skill` on average; `preference` (label -> nats) adds a constant
    preference for labels on every item."""
    items = []
    for gold in golds:
        logits = {label: rng.normal(skill if label == gold else 0.0, 1.0) + (preference or {}).get(label, 0.0)
                  for label in labels}
        prediction = max(logits, key=logits.get)
        items.append({"gold": gold, "prediction": prediction, "score": float(prediction == gold),
                      "choice_logprobs": logits})
    return items


def hand_results(metric="accuracy"):
    """Base + three sources, two seeds for one of them, three targets: two label targets with
    choice log-probabilities and a generated one with 0/1 scores."""
    rng = np.random.default_rng(4)
    outputs, rows = {}, []
    truth = {"base": (0.0, 0.0, 0.3), "movie": (3.0, 2.0, 0.1), "tweets": (2.5, 2.5, 0.1), "math": (0.0, 0.0, 0.7)}
    models = [("base", None, None), ("movie", "movie", 0), ("tweets/s0", "tweets", 0), ("tweets/s1", "tweets", 1),
              ("math", "math", 0)]
    for t_index, target in enumerate(("movie", "amazon", "asdiv")):
        golds = rng.choice(["negative", "positive"], 200)
        by_model = {}
        for model, source, seed in models:
            level = truth[source or "base"][t_index]
            if target == "asdiv":
                by_model[model] = [{"gold": "1", "prediction": "1" if hit else "2", "score": float(hit),
                                    "generated": "1", "generated_tokens": 1} for hit in rng.uniform(size=200) < level]
            else:
                by_model[model] = label_items(rng, level, golds)
            rows.append({"model": model, "source": source, "seed": seed, "target": target,
                         "key": f"{model}-{target}", "n": 200,
                         "metrics": {"accuracy": float(np.mean([i["score"] for i in by_model[model]]))}})
        outputs[target] = by_model
    return Results(pd.DataFrame(rows), outputs, {("movie", "movie"), ("math", "asdiv")},
                   {"movie": ["sentiment"], "amazon": ["sentiment"], "asdiv": ["arithmetic"]},
                   {"movie": ["negative", "positive"], "amazon": ["negative", "positive"], "asdiv": None},
                   {"movie": "movie", "tweets": "tweets", "math": "math"}).scored(metric)


def test_views_and_diagonal():
    results = hand_results()
    raw = raw_matrix(results.cells)
    assert list(raw.index) == ["base", "movie", "tweets", "math"]
    assert raw.loc["tweets", "movie"] == pytest.approx(results.cells.query("source == 'tweets' and target == 'movie'")["score"].mean())
    delta = view(raw, "delta")
    assert delta.loc["movie", "amazon"] == pytest.approx(raw.loc["movie", "amazon"] - raw.loc["base", "amazon"])
    relative = view(raw, "relative_delta")
    assert relative.loc["math", "asdiv"] == pytest.approx(delta.loc["math", "asdiv"] / raw.loc["base", "asdiv"])
    z = view(raw, "zscore")
    assert np.allclose(z.mean(), 0) and np.allclose(z.std(ddof=1), 1)
    masked = view(raw, "delta", results.diagonal, mask_diagonal=True)
    assert np.isnan(masked.loc["movie", "movie"]) and np.isnan(masked.loc["math", "asdiv"])
    assert not np.isnan(masked.loc["tweets", "movie"])
    spread = seed_spread(results.cells)
    assert spread.loc["tweets", "movie"] > 0 and np.isnan(spread.loc["movie", "movie"])


def test_uncertainty_and_side_effects():
    results = hand_results()
    table = cell_uncertainty(results, samples=500, seed=0)
    assert len(table) == 4 * 3 and (table["low"] <= table["delta"]).all() and (table["delta"] <= table["high"]).all()
    assert (table["q"] >= table["p"] - 1e-12).all()
    movie = table.query("model == 'movie' and target == 'movie'").iloc[0]
    assert movie.significant and movie.delta > 0.3
    hurt = side_effects(table)
    assert set(hurt["model"]) == {"movie", "tweets/s0", "tweets/s1"} and set(hurt["target"]) == {"asdiv"}
    assert (hurt["delta"] < 0).all()


def test_asymmetry():
    delta = pd.DataFrame({"movie": [0.4, -0.1], "asdiv": [-0.2, 0.4]}, index=["movie", "math"])
    table = asymmetry(delta, {("movie", "movie"), ("math", "asdiv")})
    row = table.iloc[0]
    assert (row.a, row.b) == ("movie", "math") and row.a_to_b == -0.2 and row.b_to_a == -0.1
    # Two variants of one dataset share their target: a pair of them has no direction to compare.
    delta.loc["movie-skewed"] = [0.1, 0.0]
    table = asymmetry(delta, {("movie", "movie"), ("movie-skewed", "movie"), ("math", "asdiv")})
    assert {(r.a, r.b) for r in table.itertuples()} == {("movie", "math"), ("math", "movie-skewed")}


def test_trait_names():
    loadings = pd.Series({"movie": 0.9, "amazon": 0.8, "boolq": 0.1, "asdiv": -0.7})
    abilities = {"movie": ["sentiment"], "amazon": ["sentiment"], "boolq": ["reading"], "asdiv": ["arithmetic"]}
    assert name_trait(loadings, abilities) == "sentiment (+movie, +amazon; -asdiv)"


def test_analyze_end_to_end_is_json_ready():
    result = analyze(hand_results(), Analysis(bootstrap_samples=50, n_traits=1))
    assert list(result.matrix.index) == ["movie", "tweets", "math"]
    assert result.names_[0].startswith("sentiment") or result.names_[0].startswith("arithmetic")
    stored = result.to_json()
    json.dumps(stored, allow_nan=False)
    assert stored["traits"][0]["refits"] == 50 and 0 <= stored["traits"][0]["median_congruence"] <= 1


def test_stability_skips_refits_that_cannot_be_fitted():
    from traitlens.analysis.stability import trait_stability

    results = hand_results()
    reference = pd.DataFrame({"trait 1": [0.9, 0.8, -0.5]}, index=["movie", "amazon", "asdiv"])
    calls = []

    def refit(cells):
        calls.append(1)
        if len(calls) % 2:
            raise ValueError("too few targets vary in this resample")
        return reference

    matrix = pd.DataFrame(np.eye(3), index=["movie", "tweets", "math"], columns=reference.index)
    table = trait_stability(reference, refit, lambda m: reference, results.cells, matrix, results.scores, samples=10)
    assert table.loc["trait 1", "refits"] == 5 and table.loc["trait 1", "median_congruence"] == pytest.approx(1.0)
    assert table.loc["trait 1", "loso_min"] == pytest.approx(1.0) and table.loc["trait 1", "source_refits"] == 10


def test_congruence_with_a_column_of_zeros_is_zero_not_nan():
    from traitlens.analysis.traits import congruence, match

    reference = np.array([[1.0, 0.2], [0.9, -0.1], [0.1, 1.0]])
    degenerate = np.array([[0.8, 0.0], [1.0, 0.0], [0.0, 0.0]])
    assert np.isfinite(congruence(reference, degenerate)).all()
    aligned, phi = match(reference, degenerate)  # no error: the zero column is matched with 0
    assert phi[1] == 0 and phi[0] > 0.9


def test_split_half_count_beats_parallel_analysis_on_200_planted_matrices():
    """The comparison behind `analysis.trait_count: split_half` (docs/trait-count.md), rerun
    at three matrices per condition: 216 planted studies over trait counts 1-4, trait
    correlations 0 and 0.5, three sizes and three effect sizes."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "trait_count.py"
    run = subprocess.run([sys.executable, str(script), "--repeats", "3", "--seed", "1"],
                         capture_output=True, text=True, check=True)
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[:2]): line.strip("|").split("|")
            for line in run.stdout.splitlines() if line.startswith("| ")}
    matrices, split_half, parallel = (rows[("all", "all")][i].strip() for i in (2, 3, 4))
    assert int(matrices) == 216
    assert int(split_half.rstrip("%")) >= int(parallel.rstrip("%")) + 15 and int(split_half.rstrip("%")) >= 65
    for k in ("1", "2", "3", "4"):  # never worse at any true count
        row = rows[("traits k", k)]
        assert int(row[3].strip().rstrip("%")) >= int(row[4].strip().rstrip("%")), row


def test_split_half_count_on_item_halves():
    from traitlens.analysis.traits import split_half_count

    rng = np.random.default_rng(8)
    structure = np.repeat(np.eye(2), 4, axis=1) * rng.uniform(0.5, 1, (2, 8))  # targets 0-3 on one trait, 4-7 on the other
    truth = rng.standard_normal((15, 2)) @ structure
    halves = [(truth + 0.2 * rng.standard_normal(truth.shape), truth + 0.2 * rng.standard_normal(truth.shape))
              for _ in range(10)]
    count, errors = split_half_count(halves)
    assert count == 2 and len(errors) == 9 and errors[2] < errors[1] < errors[0]
    noise = [(rng.standard_normal((15, 8)), rng.standard_normal((15, 8))) for _ in range(10)]
    assert split_half_count(noise)[0] == 1  # nothing shared: the floor of one trait


def test_seeds_that_disagree_widen_the_matrix_interval():
    from dataclasses import replace

    from traitlens.analysis.uncertainty import source_uncertainty

    results = hand_results("calibrated_margin")
    golds = [item["gold"] for item in results.outputs["movie"]["base"]]
    outputs = {t: dict(by_model) for t, by_model in results.outputs.items()}
    outputs["movie"]["tweets/s1"] = label_items(np.random.default_rng(9), 0.0, golds)  # this seed learned nothing
    results = replace(results, outputs=outputs).scored("calibrated_margin")
    cells = cell_uncertainty(results, samples=500, seed=0).set_index(["model", "target"])
    matrix = source_uncertainty(results, samples=500, seed=0).set_index(["source", "target"])
    row = matrix.loc[("tweets", "movie")]
    assert row.seeds == 2 and row.low <= row.delta <= row.high
    s0, s1 = cells.loc[("tweets/s0", "movie")], cells.loc[("tweets/s1", "movie")]
    assert row.delta == pytest.approx((s0.delta + s1.delta) / 2)
    assert row.high - row.low > 1.5 * max(s0.high - s0.low, s1.high - s1.low)  # seed variation counts
    assert matrix.loc[("movie", "movie")].seeds == 1


def test_asymmetry_has_intervals_and_compare_models_tests_a_contrast():
    from traitlens.analysis.uncertainty import compare_models

    results = hand_results("accuracy")
    delta = view(raw_matrix(results.cells), "delta")
    table = asymmetry(delta, results.diagonal, results, samples=300)
    row = table.iloc[0]
    assert (row.a, row.b) == ("movie", "math") and row.low <= row.difference <= row.high and 0 <= row.p <= 1
    assert row.difference == pytest.approx(row.a_to_b - row.b_to_a) and row.high > row.low
    contrast = compare_models(results, "math", "movie", "movie", samples=300)
    assert contrast.difference > 0.3 and contrast.low > 0 and contrast.p < 0.001
    assert contrast.seeds_a == 1 and compare_models(results, "base", "tweets", "amazon", samples=300).seeds_b == 2
    with pytest.raises(ValueError, match="neither a source nor a model"):
        compare_models(results, "base", "nosuch", "movie")


def _planted(rng, loadings, scores, items=150):
    """Results whose sources' skill on each target is `scores` (sources x traits) times
    `loadings` (targets x traits), their items drawn from `rng`."""
    targets, sources = [f"t{j}" for j in range(len(loadings))], len(scores)
    outputs, rows = {}, []
    for j, target in enumerate(targets):
        golds = rng.choice(["negative", "positive"], items)
        by_model = {"base": label_items(rng, 0.0, golds)}
        by_model |= {f"s{i}": label_items(rng, 1.0 + scores[i] @ loadings[j], golds) for i in range(sources)}
        for model, records in by_model.items():
            rows.append({"model": model, "source": None if model == "base" else model, "seed": None if model == "base"
                         else 0, "target": target, "key": f"{model}-{target}", "n": items,
                         "metrics": cell_metrics(records, ["negative", "positive"])})
        outputs[target] = by_model
    labels = {t: ["negative", "positive"] for t in targets}
    return Results(pd.DataFrame(rows), outputs, set(), {t: [] for t in targets}, labels,
                   {f"s{i}": f"s{i}" for i in range(sources)},
                   settings=Analysis(bootstrap_samples=30, n_traits=2, metric="margin")).scored("margin")


def test_two_studies_of_one_structure_match_and_a_different_structure_does_not():
    from traitlens.analysis.compare import compare_studies

    two = np.array([[1.0, 0], [1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9], [0, 1.0]])
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(16, 2))
    a, again = _planted(rng, two, scores), _planted(rng, two, scores)  # the same sources on new items
    same = compare_studies(a, again, samples=40)
    assert same.traits["congruence"].min() > 0.95
    assert (same.traits["low"] <= same.traits["congruence"]).all() and (same.traits["congruence"] <= same.traits["high"]).all()
    assert len(same.cells) == 16 * 6 and same.cells["disagree"].mean() < 0.1
    other = compare_studies(a, _planted(rng, np.array([[1.0, 0], [0, 1.0]] * 3), scores), samples=40)
    assert other.traits["congruence"].max() < same.traits["low"].min()  # outside the interval of a true match
    moved = other.cells[other.cells["disagree"]]
    assert len(moved) > 5 and moved["target"].isin(["t1", "t4"]).mean() > 0.75  # the two targets whose trait changed
    with pytest.raises(TraitlensError, match="share 0 complete source"):
        rename = {m: (m if s is None or s != s else s + "x") for m, s in zip(a.cells["model"], a.cells["source"])}
        renamed = a.cells.assign(model=a.cells["model"].map(rename),
                                 source=a.cells["source"].map(lambda s: s + "x" if isinstance(s, str) else s))
        outputs = {t: {rename[m]: items for m, items in by_model.items()} for t, by_model in a.outputs.items()}
        compare_studies(a, replace(a, cells=renamed, outputs=outputs, scores={}))


def test_a_target_no_adapter_moves_does_not_break_the_comparison():
    """A target where every model answers alike (all wrong, say) is left out of the fits; it
    used to turn the congruence into 0 and every refit into an error."""
    from traitlens.analysis.compare import compare_studies

    two = np.array([[1.0, 0], [1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9], [0, 1.0]])
    rng = np.random.default_rng(1)
    a = _planted(rng, two, rng.normal(size=(12, 2)))
    records = label_items(rng, 0.0, rng.choice(["negative", "positive"], 150))
    flat = a.cells[a.cells["target"] == "t0"].assign(target="flat", key=lambda c: c["model"] + "-flat",
                                                    metrics=[cell_metrics(records, ["negative", "positive"])] * 13)
    a = replace(a, cells=pd.concat([a.cells, flat], ignore_index=True),
                outputs={**a.outputs, "flat": {model: records for model in a.outputs["t0"]}},
                labels={**a.labels, "flat": ["negative", "positive"]}, abilities={**a.abilities, "flat": []}).scored("margin")
    same = compare_studies(a, a, samples=20)
    assert "flat" in same.targets and same.traits["congruence"].to_numpy() == pytest.approx([1, 1])
    assert (same.traits["refits"] == 20).all() and (same.traits["low"] > 0.9).all()


def test_promax_refuses_a_trait_with_no_loadings():
    loadings = np.array([[0.9, 0.0], [0.8, 0.0], [0.7, 0.0], [0.6, 0.0]])
    with pytest.raises(ValueError, match="lower analysis.n_traits or use rotation: varimax"):
        promax(loadings)
    rotated, _ = promax(np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.7]]))
    assert np.isfinite(rotated).all()


def test_the_raw_matrix_is_pandas_pivot_of_mean_scores():
    """`raw_matrix` is written by hand for speed: it must give what `pivot_table` gives (seeds
    averaged, a missing score skipped, an all-missing row or column left out, first-seen order)."""
    from traitlens.analysis.views import raw_matrix

    rng = np.random.default_rng(7)
    for _ in range(50):
        models = [None, *rng.choice(["movie", "tweets", "boolq", "nyt"], size=rng.integers(1, 4), replace=False)]
        targets = list(rng.choice(["a", "b", "c", "d"], size=rng.integers(1, 4), replace=False))
        rows = [{"source": m, "target": t, "score": rng.random() if rng.random() > 0.15 else np.nan}
                for m in models for t in targets for _ in range(1 if m is None else rng.integers(1, 4))
                if rng.random() > 0.1]
        cells = pd.DataFrame(rows, columns=["source", "target", "score"]).sample(frac=1, random_state=1)
        expected = cells.assign(row=cells["source"].fillna("base")).pivot_table(
            index="row", columns="target", values="score", aggfunc="mean", sort=False)
        expected.index.name, expected.columns.name = None, None
        pd.testing.assert_frame_equal(raw_matrix(cells), expected, check_exact=False, rtol=1e-12)
