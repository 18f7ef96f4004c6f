"""Forecasting (#23): what a study costs in tokens through the model, how good a forecast is, the
feature-only forecasts and the short-training probe."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import traitlens
from traitlens import Study
from conftest import MORE_SOURCES, TINY_TRAIN
from traitlens.analysis.features import FEATURES, Features
from traitlens.config import load_study
from traitlens.config.schema import Target
from traitlens.data.load import prepare_study
from traitlens.execution.plan import plan_study
from traitlens.forecast.cost import TRAIN_PASSES, study_cost
from traitlens.forecast.profiles import feature_forecast
from traitlens.forecast.quality import forecast_quality
from traitlens.forecast.short import probe_study
from traitlens.recipes.recommend import transfer_for_recommending
from traitlens.models.fake import FakeScorer
from traitlens.store import Store


class WordTokenizer:
    """One token per whitespace-separated word, an end token, no special tokens: counts a
    reader can do by hand."""

    eos_token_id = 0
    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": [1] * len(text.split())}


def _word_study(tmp_path):
    """A two-seed study over 8 hand-countable rows: (config, its prepared sources and targets)."""
    rows = [{"input": f"w{i} w w", "answer": ("neg", "pos")[i % 2]} for i in range(8)]  # both labels in each split
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
    return (study, *prepare_study(study))


def test_cost_counts_every_trained_and_scored_token(tmp_path):
    study, sources, targets = _word_study(tmp_path)
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


def test_probe_drops_the_learning_curve_only_when_the_budget_cannot_pay_for_it(tmp_path):
    study, sources, targets = _word_study(tmp_path)
    cost_of = lambda config: study_cost(config, sources, targets, WordTokenizer())
    full = cost_of(study)
    roomy = probe_study(study, 0.9, full, cost_of)
    assert roomy.short is not None and roomy.long.training.seeds == [0]  # one seed: the forecast is of the mean
    assert roomy.short.training.max_steps == roomy.long.training.max_steps // 2
    assert roomy.tokens <= 0.9 * full.total
    # Between the smallest single-length probe (1 step) and the smallest curve (2 and 1 steps).
    single = probe_study(study, 0.9, full, cost_of).long.model_copy(update={
        "training": study.training.model_copy(update={"max_steps": 1, "seeds": [0]})})
    budget = (cost_of(single).total + 1) / full.total
    tight = probe_study(study, budget, full, cost_of)
    assert tight.short is None and tight.long.training.max_steps == 1 and tight.tokens <= budget * full.total
    with pytest.raises(traitlens.TraitlensError, match="smallest probe"):
        probe_study(study, (cost_of(single).total - 1) / full.total, full, cost_of)


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




def _planted(seed: int = 0) -> pd.DataFrame:
    """12 sources x 6 targets from two traits (three targets each), plus a little noise."""
    rng = np.random.default_rng(seed)
    loadings = np.kron(np.eye(2), np.ones((1, 3)))  # 2 traits x 6 targets
    matrix = rng.normal(size=(12, 2)) @ loadings + 0.1 * rng.normal(size=(12, 6))
    return pd.DataFrame(matrix, index=[f"s{i}" for i in range(12)], columns=[f"t{j}" for j in range(6)])


def test_forecast_quality_is_perfect_for_the_truth_and_any_rescaling_of_it():
    measured = _planted()
    for forecast in (measured, 2 * measured + 1):
        quality = forecast_quality(forecast, measured, n_traits=2, low=forecast - 0.01, high=forecast + 0.01)
        assert quality.spearman == pytest.approx(1) and quality.regret == 0
        assert quality.congruence.to_numpy() == pytest.approx([1, 1])
    assert forecast_quality(measured, measured, 2, measured - 0.01, measured + 0.01).coverage == 1
    assert forecast_quality(measured, measured, 2, measured + 0.01, measured + 0.02).coverage == 0
    assert forecast_quality(measured, measured, 2).coverage is None


def test_forecast_quality_counts_the_regret_of_a_wrong_first_pick_and_skips_masked_cells():
    measured = _planted()
    forecast = measured.copy()
    ranked = measured["t0"].sort_values(ascending=False)
    best, second = ranked.index[:2]
    forecast.loc[best, "t0"], forecast.loc[second, "t0"] = ranked.iloc[1], ranked.iloc[0]  # swap the top two
    quality = forecast_quality(forecast, measured, n_traits=2)
    regret = quality.per_target.set_index("target")["regret"]
    assert regret["t0"] == pytest.approx(ranked.iloc[0] - ranked.iloc[1]) and (regret.drop("t0") == 0).all()
    masked = measured.copy()
    masked.loc["s0", "t0"] = np.nan  # a diagonal cell: not in the correlations or the regret
    assert forecast_quality(measured, masked, 2).spearman == pytest.approx(1)


def test_an_unrelated_forecast_scores_low():
    measured, unrelated = _planted(0), _planted(1)
    quality = forecast_quality(unrelated.set_axis(measured.index), measured, n_traits=2)
    assert abs(quality.spearman) < 0.5 and quality.regret > 0


def _features_with_planted_similarity(seed: int = 0):
    """12 sources x 5 targets whose delta is the target's offset plus 0.5 x embedding cosine
    (plus noise); every other feature is noise."""
    rng = np.random.default_rng(seed)
    sources, targets = [f"s{i}" for i in range(12)], [f"t{j}" for j in range(5)]
    index = pd.MultiIndex.from_product([sources, targets], names=["source", "target"])
    noise = lambda names, idx: pd.DataFrame(rng.normal(size=(len(idx), len(names))), index=idx, columns=names)
    groups = {"hidden": noise(FEATURES["hidden"], index), "similarity": noise(FEATURES["similarity"], index),
              "quality": noise(FEATURES["quality"], index),
              "profile": noise(FEATURES["profile"], pd.Index(sources, name="source"))}
    offsets = dict(zip(targets, rng.normal(size=5)))
    delta = (0.5 * groups["similarity"]["embedding_cosine"] + [offsets[t] for _, t in index]
             + 0.05 * rng.normal(size=len(index))).unstack("target")
    target_profiles = pd.DataFrame({"answer_tokens_mean": rng.uniform(2, 20, 5)}, index=targets)
    return Features(pd.DataFrame(index=sources), target_profiles, groups, {}), delta


def test_feature_forecast_recovers_a_planted_similarity_effect_with_calibrated_intervals():
    features, measured = _features_with_planted_similarity()
    similarity = feature_forecast(features, measured, ("similarity",))
    profile = feature_forecast(features, measured, ("profile",))
    good = forecast_quality(similarity.delta, measured, 2, similarity.low, similarity.high)
    bad = forecast_quality(profile.delta, measured, 2, profile.low, profile.high)
    # Within targets, only similarity carries the effect; the target offsets alone order cells
    # across targets, so the per-target correlation tells the two apart.
    assert good.per_target["spearman"].min() > 0.9 and bad.per_target["spearman"].mean() < 0.5
    assert 0.85 <= good.coverage <= 1 and 0.85 <= bad.coverage <= 1  # both intervals honest, of different widths
    assert (similarity.high - similarity.low).mean().mean() < (profile.high - profile.low).mean().mean()


def test_feature_forecast_never_sees_the_row_it_forecasts():
    features, measured = _features_with_planted_similarity()
    changed = measured.copy()
    changed.loc["s3"] = 100.0  # an absurd row: the forecast of s3 must not move with it
    before = feature_forecast(features, measured, ("similarity",)).delta.loc["s3"]
    after = feature_forecast(features, changed, ("similarity",)).delta.loc["s3"]
    assert after.to_numpy() == pytest.approx(before.to_numpy())


def test_short_training_probe_keeps_to_its_budget_and_never_touches_measured_cells(tmp_path, tiny_model):
    path = tmp_path / "study.yaml"
    path.write_text(TINY_TRAIN.format(base=tiny_model).replace("targets:\n", MORE_SOURCES)
                    .replace("evaluation: {limit: 8, dtype: float32}", "evaluation: {limit: 40, dtype: float32}")
                    .replace("max_steps: 6", "max_steps: 12"))  # enough for two probe lengths at half the cost
    study = traitlens.load(path)
    fake = lambda s: FakeScorer()
    assert not study.run(analyze=False, make_scorer=fake).failed
    measured = study.results().cells.set_index(["model", "target"])["metrics"].to_dict()
    full_keys = set(study.plan()["key"])

    probe = study.forecast(budget=0.5, make_scorer=fake)
    assert probe.tokens <= 0.5 * probe.full_tokens and probe.spent == pytest.approx(probe.tokens / probe.full_tokens)
    assert probe.full_tokens == study.cost().total
    config = probe.study.config
    assert 2 <= config.training.max_steps < study.config.training.max_steps
    assert all(16 <= t.limit < 40 for t in config.targets) and config.name == "tiny-train-probe-50"
    # The budget covers both lengths, the base scored once: recount it from the two probe studies.
    half = config.model_copy(update={"name": config.name + "-half", "training": config.training.model_copy(
        update={"max_steps": config.training.max_steps // 2, "warmup_steps": config.training.warmup_steps // 2})})
    counts = [study._ws.cost_of()(c) for c in (config, half)]
    base = counts[1].evaluation.query("model == 'base'")["cost"].sum()
    assert probe.tokens == counts[0].total + counts[1].total - base
    # What the budget left bought items: a tenth more per target would not have fitted.
    grow = lambda c: c.model_copy(update={"targets": [t.model_copy(update={"limit": min(40, -(-11 * t.limit // 10))})
                                                      for t in c.targets]})
    more = [study._ws.cost_of()(grow(c)) for c in (config, half)]
    assert more[0].total + more[1].total - more[1].evaluation.query("model == 'base'")["cost"].sum() \
        > 0.5 * probe.full_tokens
    assert probe.delta.shape == (2, 2) and probe.delta.notna().sum().sum() == 3  # movie on movie is masked
    probe_keys = set(probe.study.plan()["key"]) | set(Study(half).plan()["key"])
    assert not full_keys & probe_keys  # its own jobs, under their own keys
    assert study.results().cells.set_index(["model", "target"])["metrics"].to_dict() == measured
    # Stored in a table of its own, with the measured deltas beside it (the study is finished);
    # no finished study calibrated it, so no interval.
    stored = study.forecasts()
    assert len(stored) == 3 and set(stored["probe"]) == {"short"} and (stored["budget"] == 0.5).all()
    assert stored.set_index(["source", "target"])["delta"].to_dict() == pytest.approx(
        probe.delta.stack().dropna().to_dict())
    assert stored.set_index(["source", "target"])["measured"].to_dict() == pytest.approx(
        study.results().matrix("delta").stack().dropna().to_dict())
    assert stored["low"].isna().all() and probe.low.isna().all().all()
    # The report shows it beside the measured cells and exports its cells.
    page = study.report(tmp_path / "page.html")
    section = page.read_text().split('<section id="forecasts">')[1].split("</section>")[0]
    assert "<td>short</td>" in section and "No forecast" not in section
    assert "<th>interval score</th>" in section  # beside coverage, which wide intervals win alone
    assert len(pd.read_csv(tmp_path / "page-data" / "forecasts.csv")) == 3
    with pytest.raises(traitlens.TraitlensError, match="less than the smallest probe"):
        study.forecast(budget=0.001, make_scorer=fake)
    # The command finds the probe's cells done (same keys), prints the spend and the forecast,
    # and scores it against the finished study.
    done = subprocess.run([sys.executable, "-m", "traitlens", "forecast", str(path), "--budget", "0.5"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.split())
    assert f"spent {probe.tokens:,} of {probe.full_tokens:,} forward tokens" in out
    assert "against the measured matrix: Spearman" in out and "no traits" in out
    wrong = subprocess.run([sys.executable, "-m", "traitlens", "forecast", str(path), "--budget", "1.5"],
                           capture_output=True, text=True)
    assert wrong.returncode == 2 and "--budget" in wrong.stderr and "Traceback" not in wrong.stderr


class PlantedScorer(FakeScorer):
    """A fake scorer whose adapters have a planted skill per (source, target): the gold answer's
    log-probability is raised by it. It knows each prompt's target and gold answer, and each
    adapter key's source, so a probe's adapters (other keys, same sources) share the skill.
    On the targets' answers every adapter starts from the base's scores, so that the skill alone
    orders them (hashed on the adapter's key, their noise would change whenever the keys do);
    elsewhere (the adapter guard's probes) each adapter answers as the fake scorer does."""

    def __init__(self, skill: dict[tuple[str, str], float], sources: dict[str, str], prompts: dict[str, tuple[str, str]]):
        super().__init__()
        self.skill, self.sources, self.prompts = skill, sources, prompts

    def _scores(self, requests):
        out, own, adapter = [], super()._scores(requests), self.adapter
        self.adapter = None
        base = super()._scores(requests)
        self.adapter = adapter
        for request, plain, hashed in zip(requests, base, own):
            target, gold = self.prompts[request.context]
            if gold not in request.continuations:
                out.append(hashed)
                continue
            lift = self.skill.get((self.sources.get(self.adapter), target), 0.0)
            out.append(replace(plain, logprobs=tuple(lp + (lift if c == gold else 0.0)
                                                     for lp, c in zip(plain.logprobs, request.continuations))))
        return out


def test_a_transfer_planted_in_the_probes_is_recovered_by_the_forecast(tmp_path, tiny_model):
    from traitlens.data.template import render

    path = tmp_path / "study.yaml"
    more = MORE_SOURCES.replace("targets:\n", """\
  - name: nyt
    dataset: catalog:sentiment-nyt
    transforms: [{subsample: 16}]
  - name: amazon-reviews
    dataset: catalog:sentiment-amazon
    transforms: [{subsample: 16}]
targets:
  - name: tweets
    dataset: catalog:sentiment-tweets
    kind: classification
    labels: [negative, positive]
    abilities: [sentiment]
""")
    path.write_text(TINY_TRAIN.format(base=tiny_model).replace("targets:\n", more).replace(
        "evaluation: {limit: 8, dtype: float32}", "evaluation: {limit: 48, dtype: float32}\nanalysis: {metric: accuracy}")
        .replace("max_steps: 6", "max_steps: 12"))  # enough for two probe lengths
    study = traitlens.load(path)
    _, targets = prepare_study(study.config)
    prompts = {render(target.template, row).prompt: (target.name, row["answer"])
               for target in study.config.targets for row in targets[target.name].to_dict("records")}
    names = [s.name for s in study.config.sources]
    # A Latin square: every target has a different best source.
    skill = {(source, target.name): 3.0 * ((i + j) % len(names)) / len(names)
             for i, source in enumerate(names) for j, target in enumerate(study.config.targets)}
    adapters = {job.key: job.source for job in study.planned().train_jobs}
    scorer = lambda _: PlantedScorer(skill, adapters, prompts)
    assert not study.run(analyze=False, make_scorer=scorer).failed
    measured = study.results().matrix("delta")

    # The probes train adapters under keys of their own: tell the scorer whose they are.
    planned = probe_study(study.config, 0.4, study.cost(), study._ws.cost_of())
    assert planned.short is not None  # the learning curve is exercised
    for config in (planned.long, planned.short):
        adapters.update({job.key: job.source for job in plan_study(config).train_jobs})
    probe = study.forecast(budget=0.4, make_scorer=scorer)
    assert probe.study.config == planned.long
    assert probe.results.cells["n"].max() < 48  # it scored fewer items than the study
    for forecast in (probe.delta, probe.last):  # extrapolated, and the longer probe's own
        quality = forecast_quality(forecast, measured, n_traits=1)
        # Every target's sources in the planted order; over all cells, targets differ in scale.
        assert quality.per_target["spearman"].min() > 0.8 and quality.regret < 0.05, quality
        assert quality.spearman > 0.6, quality


def test_extrapolation_follows_a_log_learning_curve_and_shrinks_noisy_slopes():
    from traitlens.forecast.short import extrapolate

    sources = [f"s{i}" for i in range(6)]
    rng = np.random.default_rng(0)
    truth = rng.normal(size=6)
    # Target a: every source learns at log-linear pace towards 2x its 2-step delta, noise-free.
    curve = lambda steps: pd.Series(truth * np.log2(steps), index=sources)
    short = pd.DataFrame({"a": curve(2), "b": rng.normal(size=6)}, index=sources)
    long = pd.DataFrame({"a": curve(4), "b": rng.normal(size=6)}, index=sources)
    out = extrapolate(short, long, 2, 4, 16)
    assert out["a"].to_numpy() == pytest.approx(curve(16).to_numpy())
    # Target b: the two probes are unrelated noise, so every source gets the same (mean) slope
    # and the ranking is the longer probe's.
    slope = (long["b"] - short["b"]).mean()
    assert out["b"].to_numpy() == pytest.approx((long["b"] + 2 * slope).to_numpy())


def test_conformal_width_covers_at_its_level_and_refuses_too_few_errors():
    from traitlens.forecast.calibrate import MIN_ERRORS, conformal_width

    rng = np.random.default_rng(1)
    width = conformal_width(rng.normal(size=200))
    fresh = np.abs(rng.normal(size=20000))
    assert 0.93 < (fresh <= width).mean() < 0.98
    assert conformal_width(rng.normal(size=MIN_ERRORS - 1)) is None
    assert conformal_width([np.nan] * 30 + list(range(30))) == 29  # NaNs are not errors


def test_gradient_probe_ranks_a_source_drawn_from_the_target_first_within_budget(tmp_path, tiny_model):
    path = tmp_path / "study.yaml"
    # amazon-train: the target's own distribution (its train split, its template, its labels).
    path.write_text(TINY_TRAIN.format(base=tiny_model).replace("targets:\n", MORE_SOURCES.replace("targets:\n", """\
  - name: amazon-train
    dataset: catalog:sentiment-amazon
    split: train
    labels: [negative, positive]
    transforms: [{subsample: 16}]
targets:
""")).replace("max_length: 64", "max_length: 64\n  loss_mode: completion")
                    + "analysis: {mask_diagonal: false}\n")  # same dataset, so amazon-train would be masked
    study = traitlens.load(path)
    probe = study.forecast(budget=0.3, probe="gradient")
    assert probe.probe == "gradient" and probe.study is None
    assert 0 < probe.tokens <= 0.3 * probe.full_tokens
    affinity = probe.delta
    assert affinity["amazon"].idxmax() == "amazon-train", affinity
    assert affinity.notna().all().all() and (affinity.abs() <= 1 + 1e-6).all().all()
    stored = study.forecasts()
    assert set(stored["probe"]) == {"gradient"} and len(stored) == 6 and stored["measured"].isna().all()
    assert study.plan()["state"].eq("new").all()  # it trained and scored nothing of the study
    with pytest.raises(traitlens.TraitlensError, match="raise --budget"):
        study.forecast(budget=0.0001, probe="gradient")


def test_recommend_fits_on_a_stored_forecast_before_the_study_is_run(tmp_path, tiny_model):
    path = tmp_path / "study.yaml"
    path.write_text(TINY_TRAIN.format(base=tiny_model).replace("targets:\n", MORE_SOURCES.replace("targets:\n", """\
  - name: math
    dataset: catalog:arithmetic
    transforms: [{subsample: 16}]
targets:
""")))
    study = traitlens.load(path)
    new = Target(name="new", dataset="catalog:sentiment-tweets", kind="classification",
                 labels=["negative", "positive"], abilities=["sentiment"])
    with pytest.raises(traitlens.TraitlensError, match="no adapter cells and no forecast"):
        study.recommend(target=new)
    # A forecast as `Study.forecast` stores it (its values planted: tweets helps most).
    cells = pd.DataFrame([{"source": s, "target": t, "delta": d, "low": np.nan, "high": np.nan, "measured": np.nan}
                          for s, d in (("movie", 0.1), ("tweets", 0.5), ("math", -0.2)) for t in ("movie", "amazon")
                          if (s, t) != ("movie", "movie")])
    Store(study.config.store).put_forecast(study.name, "short", 0.2, 0.19, cells)
    recommendation = study.recommend(target=new)
    assert recommendation.forecast_cells == 5
    assert set(recommendation.ranking["source"]) == {"movie", "tweets", "math"}
    assert study.plan()["state"].eq("new").all()  # nothing was trained or scored


def _planted_cells(seed: int, targets: list[str], n_sources: int = 10):
    """A study whose delta is its target's level plus 0.1 x the gradient probe's deviation
    from its target's mean plus 0.05 x label overlap (small noise); the short probe is the
    delta plus large noise. Returns the probes, the features (hidden statistics) and the delta."""
    rng = np.random.default_rng(seed)
    sources = [f"s{seed}-{i}" for i in range(n_sources)]
    index = pd.MultiIndex.from_product([sources, targets], names=["source", "target"])
    gradient = pd.Series(rng.normal(size=len(index)), index=index)
    hidden = pd.DataFrame(rng.normal(size=(len(index), len(FEATURES["hidden"]))), index=index,
                          columns=FEATURES["hidden"])
    level = pd.Series(rng.normal(size=len(targets)), index=targets)
    centred = gradient - gradient.groupby(level="target").transform("mean")
    delta = (level.reindex(index.get_level_values("target")).to_numpy() + 0.1 * centred
             + 0.05 * hidden["label_overlap"] + 0.01 * rng.normal(size=len(index)))
    short = delta + 0.3 * rng.normal(size=len(index))
    features = Features(pd.DataFrame(index=sources), pd.DataFrame(index=targets), {"hidden": hidden}, {})
    grid = lambda series: series.unstack("target")
    return {"gradient": grid(gradient), "short": grid(short)}, features, grid(delta)


def test_combination_learned_on_finished_studies_recovers_a_planted_transfer_on_new_targets():
    from traitlens.forecast.combine import cell_table, combine

    finished = {}
    for seed in range(3):  # finished studies: their own sources and targets, measured
        probes, features, delta = _planted_cells(seed, [f"t{seed}-{j}" for j in range(4)])
        finished[f"study{seed}"] = cell_table(probes, features, delta)
    probes, features, delta = _planted_cells(9, ["new-a", "new-b", "new-c"])
    new = cell_table(probes, features)  # the new study: probes only
    assert new["delta"].isna().all()
    forecast = combine(finished, new)
    quality = forecast_quality(forecast.delta, delta, 1, forecast.low, forecast.high)
    # Targets it never saw: within each, the sources in the planted order. Across targets the
    # level is the short probe's, which is noisy, so intervals are wide but honest.
    assert quality.per_target["spearman"].min() > 0.8, quality
    assert quality.coverage >= 0.85
    alone = forecast_quality(probes["short"], delta, 1)
    assert quality.per_target["spearman"].median() > alone.per_target["spearman"].median() + 0.2


def test_combination_picks_stored_probes_within_budget_that_finished_studies_share():
    from traitlens.forecast.combine import components

    row = lambda study, probe, budget, spent, measured: {
        "study": study, "probe": probe, "budget": budget, "source": "s", "target": "t", "delta": 0.1,
        "low": np.nan, "high": np.nan, "spent": spent, "measured": measured}
    stored = pd.DataFrame([
        row("done", "gradient", 0.05, 0.05, 0.2), row("done", "gradient", 0.2, 0.2, 0.2),
        row("done", "short", 0.2, 0.19, 0.2), row("done", "short", 0.1, 0.1, 0.2),
        row("unfinished", "short", 0.3, 0.3, np.nan),  # not measured: teaches nothing
        row("new", "gradient", 0.05, 0.049, np.nan), row("new", "gradient", 0.2, 0.199, np.nan),
        row("new", "short", 0.2, 0.193, np.nan), row("new", "short", 0.1, 0.098, np.nan),
        row("new", "short", 0.3, 0.29, np.nan)])
    # Both kinds, then the most spend; short 0.3 is no finished study's, so it is never read.
    assert components(stored, "new", 0.3) == [("gradient", 0.2, 0.199), ("short", 0.1, 0.098)]
    assert components(stored, "new", 0.25) == [("gradient", 0.05, 0.049), ("short", 0.2, 0.193)]
    assert components(stored, "new", 0.15) == [("gradient", 0.05, 0.049), ("short", 0.1, 0.098)]
    assert components(stored, "new", 0.195) == [("gradient", 0.05, 0.049), ("short", 0.1, 0.098)]
    assert components(stored, "new", 0.06) == [("gradient", 0.05, 0.049)]
    with pytest.raises(traitlens.TraitlensError, match="within --budget 0.01"):
        components(stored, "new", 0.01)
    with pytest.raises(traitlens.TraitlensError, match="this study's: none"):
        components(stored, "other", 0.5)
    with pytest.raises(traitlens.TraitlensError, match="no other study in this store has finished"):
        components(stored[stored["study"] != "done"], "new", 0.5)


def test_forecast_combined_reads_stored_probes_and_a_finished_study_in_the_same_store(tmp_path, tiny_model):
    path = tmp_path / "study.yaml"
    path.write_text(TINY_TRAIN.format(base=tiny_model).replace("targets:\n", MORE_SOURCES))
    study = traitlens.load(path)
    store = Store(study.config.store)
    # A finished study in the same store, forecast by the gradient probe at 0.1, its cells
    # measured since: delta = 0.5 x affinity, so the ridge learns that slope.
    rng = np.random.default_rng(0)
    done = pd.DataFrame([{"source": f"d{i}", "target": t, "delta": a, "low": np.nan, "high": np.nan,
                          "measured": 0.5 * a} for i in range(8) for t, a in (("x", rng.normal()), ("y", rng.normal()))])
    store.put_forecast("done", "gradient", 0.1, 0.1, done)
    mine = pd.DataFrame([{"source": s, "target": t, "delta": a, "low": np.nan, "high": np.nan, "measured": np.nan}
                         for s, t, a in (("movie", "amazon", 0.4), ("tweets", "movie", -0.2), ("tweets", "amazon", 0.2))])
    store.put_forecast(study.name, "gradient", 0.1, 0.099, mine)
    result = study.forecast(budget=0.2, probe="combined")
    assert result.components == (("gradient", 0.1, 0.099),) and result.learned_on == ("done",)
    assert result.spent == pytest.approx(0.099) and result.tokens == round(0.099 * result.full_tokens)
    # Deviations from each target's mean carry the slope: tweets beats movie on amazon by 0.1.
    gap = result.delta.at["movie", "amazon"] - result.delta.at["tweets", "amazon"]
    assert gap == pytest.approx(0.5 * 0.2, abs=0.03)
    stored = study.forecasts()
    assert set(stored["probe"]) == {"gradient", "combined"}  # the parts stay, the combination beside them
    # recommend reads the combination (in delta units), even beside a short forecast of the same budget
    store.put_forecast(study.name, "short", 0.2, 0.19, mine.assign(delta=9.0))
    matrix, filled = transfer_for_recommending(None, study.forecasts(), "study.yaml")
    assert filled == 3 and matrix.at["movie", "amazon"] == pytest.approx(result.delta.at["movie", "amazon"])
    store.put_forecast(study.name, "short", 0.3, 0.29, mine.assign(delta=9.0))  # a larger budget wins
    assert transfer_for_recommending(None, study.forecasts(), "study.yaml")[0].at["movie", "amazon"] == 9.0
    assert study.plan()["state"].eq("new").all()  # nothing was trained or scored
