"""Profiles on hand-made data, and the explanation on a study with a planted cause."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from traitlens.analysis.explain import explain
from traitlens.data.profile import class_statistics, flesch_reading_ease, mtld, profile, similarity


class WordTokenizer:
    """One token per whitespace-separated word: makes token lengths easy to check by hand."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [text.split() for text in texts]}


def test_class_statistics_exact():
    stats = class_statistics(pd.Series(["a", "a", "a", "b"]))
    entropy = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert stats["class_entropy"] == pytest.approx(entropy) and stats["class_entropy_norm"] == pytest.approx(entropy)
    assert stats["majority_share"] == 0.75 and stats["imbalance_ratio"] == 3 and stats["n_classes"] == 2
    uniform = class_statistics(pd.Series(["x", "y", "z"] * 4))
    assert uniform["class_entropy_norm"] == pytest.approx(1.0) and uniform["imbalance_ratio"] == 1


def test_profile_lengths_and_rates():
    table = pd.DataFrame({"input": ["is it good ?", "not bad at all", "I paid 12 dollars"],
                          "answer": ["yes", "very positive indeed", "no"]})
    result = profile(table, WordTokenizer())
    assert result["size"] == 3
    assert result["input_tokens_mean"] == pytest.approx((4 + 4 + 4) / 3)
    assert result["answer_tokens_mean"] == pytest.approx((1 + 3 + 1) / 3) and result["answer_tokens_median"] == 1
    assert result["question_rate"] == pytest.approx(1 / 3) and result["negation_rate"] == pytest.approx(1 / 3)
    assert result["digit_density"] == pytest.approx(2 / sum(len(t) for t in table["input"]))
    assert result["duplicate_rate"] == 0 and result["n_classes"] == 3


def test_mtld_and_readability_behave():
    varied = "the quick brown fox jumps over a lazy dog while seven wizards hum".split()
    assert mtld(varied) > mtld(["the", "cat"] * 7)  # repetition lowers diversity
    easy = flesch_reading_ease(["The cat sat. The dog ran."])
    hard = flesch_reading_ease(["Institutional considerations necessitate comprehensive reorganization."])
    assert easy > 90 > 0 > hard


def test_similarity():
    a = pd.DataFrame({"input": ["great movie", "awful movie"], "answer": ["p", "n"]})
    b = pd.DataFrame({"input": ["great film", "awful film"], "answer": ["p", "n"]})
    c = pd.DataFrame({"input": ["what is 2 plus 3"], "answer": ["5"]})
    near, far = similarity(a, b), similarity(a, c)
    assert near["vocabulary_jaccard"] == pytest.approx(2 / 4) and far["vocabulary_jaccard"] == 0
    assert near["tfidf_cosine"] > far["tfidf_cosine"] == 0


def planted_study(seed: int, sources: int = 10, targets: int = 6):
    """Transfer planted to follow one hidden statistic (answer length) of each source."""
    rng = np.random.default_rng(seed)
    names = [f"s{i}" for i in range(sources)]
    hidden = pd.DataFrame({"answer_tokens_mean": rng.uniform(1, 30, sources),
                           "mtld": rng.uniform(20, 80, sources), "majority_share": rng.uniform(0.3, 0.9, sources)},
                          index=names)
    weights = rng.uniform(0.5, 1.0, targets)
    cause = (hidden["answer_tokens_mean"] - hidden["answer_tokens_mean"].mean()) / hidden["answer_tokens_mean"].std()
    delta = pd.DataFrame(0.05 * np.outer(cause, weights) + 0.01 * rng.standard_normal((sources, targets)),
                         index=names, columns=[f"t{j}" for j in range(targets)])
    pairs = pd.MultiIndex.from_product([names, delta.columns], names=["source", "target"])
    similar = pd.DataFrame({"tfidf_cosine": rng.uniform(0, 1, len(pairs)),
                            "vocabulary_jaccard": rng.uniform(0, 0.5, len(pairs))}, index=pairs)
    quality = pd.DataFrame({"duplicate_rate": rng.uniform(0, 0.2, sources)}, index=names)
    return delta, {"hidden": hidden, "similarity": similar, "quality": quality}


def test_planted_feature_ranks_first_and_its_group_wins():
    delta, groups = planted_study(0)
    result = explain(delta, groups, None, ["hidden", "similarity", "quality"], samples=200, permutations=50)
    transfer = result.correlations[result.correlations["outcome"] == "transfer"]
    assert transfer.iloc[0]["feature"] == "hidden:answer_tokens_mean"
    assert result.groups.iloc[0]["group"] == "hidden" and result.groups.iloc[0]["low"] > 0
    assert result.verdict.startswith("hidden explains held-out transfer best")


def test_small_study_says_so():
    delta, groups = planted_study(1, sources=3)
    result = explain(delta, groups, None, ["hidden", "similarity"], samples=50, permutations=20)
    assert result.verdict.startswith("too small to tell: 3 source families")
    assert list(result.groups["group"]) and len(result.correlations)  # still reported, with intervals
    tiny = explain(delta.iloc[:2], groups, None, ["hidden"], samples=20)
    assert tiny.verdict.startswith("too small to tell: 2 source families") and tiny.groups.empty
    # Six sources, but only two datasets: folds hold out families, so still too small.
    delta, groups = planted_study(1, sources=6)
    families = {s: "a" if i < 3 else "b" for i, s in enumerate(delta.index)}
    assert explain(delta, groups, None, ["hidden"], samples=20, families=families).verdict.startswith(
        "too small to tell: 2 source families")


FORMATS = ("word", "digit", "letter")


def label_format_study(seed: int, effect: float = 0.1, noise: float = 0.03):
    """Four datasets in three label formats each (12 sources, 4 families) and 9 targets, 3 per
    format: a source helps only the targets written in its label format (by `effect`). Every
    source helps as much overall, so no per-source statistic can tell the cells apart."""
    rng = np.random.default_rng(seed)
    sources = {f"d{d}-{f}": (f"d{d}", f) for d in range(4) for f in FORMATS}
    targets = {f"t{j}": FORMATS[j % 3] for j in range(9)}
    delta = pd.DataFrame({t: [effect * (fmt == targets[t]) + noise * rng.standard_normal()
                              for _, fmt in sources.values()] for t in targets}, index=list(sources))
    pairs = pd.MultiIndex.from_product([list(sources), list(targets)], names=["source", "target"])
    hidden = pd.DataFrame({"format_match": [float(sources[s][1] == targets[t]) for s, t in pairs],
                           "label_overlap": rng.uniform(0, 1, len(pairs))}, index=pairs)
    profile = pd.DataFrame({"answer_tokens": rng.uniform(1, 5, len(sources)),
                            "class_entropy": rng.uniform(0.5, 1, len(sources))}, index=list(sources))
    similar = pd.DataFrame({"tfidf_cosine": rng.uniform(0, 1, len(pairs))}, index=pairs)
    groups = {"hidden": hidden, "profile": profile, "similarity": similar}
    return delta, groups, {s: family for s, (family, _) in sources.items()}


def test_a_planted_pair_level_effect_is_found_by_the_hidden_group():
    delta, groups, families = label_format_study(0)
    result = explain(delta, groups, None, ["hidden", "profile", "similarity"], samples=100, seed=0,
                     families=families, permutations=100)
    table = result.groups.set_index("group")
    assert result.groups.iloc[0]["group"] == "hidden" and table.loc["hidden", "r2"] > 0.5
    assert table.loc["hidden", "r2"] > table.loc["hidden", "null_95"] and table.loc["hidden", "p"] < 0.05
    assert table.loc["profile", "r2"] < table.loc["profile", "null_95"]  # a per-source shift cannot see it
    assert result.verdict.startswith("hidden explains held-out transfer best")


def test_without_an_effect_the_verdict_says_the_design_cannot_tell():
    delta, groups, families = label_format_study(1, effect=0.0)
    result = explain(delta, groups, None, ["hidden", "profile", "similarity"], samples=100, seed=1,
                     families=families, permutations=100)
    assert result.verdict.startswith("too small to tell: no feature group predicts")
    assert (result.groups["null_95"] > 0).all()  # chance alone reaches a positive held-out R2


def test_recommend_ranks_sources_for_an_unseen_target():
    from scipy import stats

    from traitlens.analysis.explain import recommend
    from traitlens.analysis.features import pair_rows

    delta, groups = planted_study(2, sources=10, targets=6)
    truth = delta["t5"].copy()
    target_features = pd.DataFrame({"size": [100.0] * 6}, index=delta.columns)
    rows = pair_rows(delta.drop(columns="t5"), groups["hidden"], target_features, groups["similarity"])
    ranking, quality = recommend(rows, "t5", by="target")
    assert list(ranking.columns) == ["source", "predicted"] and len(ranking) == 10
    assert stats.spearmanr(ranking["predicted"], truth[ranking["source"]].to_numpy()).statistic > 0.8
    assert len(quality) == 5 and quality["spearman"].mean() > 0.8
    source_ranking, _ = recommend(pair_rows(delta.drop(index="s9"), groups["hidden"], target_features,
                                            groups["similarity"]), "s9", by="source")
    assert set(source_ranking["target"]) == set(delta.columns)


def test_spec_file_errors_name_the_field(tmp_path):
    from traitlens.config.load import load_spec
    from traitlens.config.schema import Target
    from traitlens.errors import ConfigError

    path = tmp_path / "t.yaml"
    path.write_text("name: new\ndataset: catalog:boolq\nkind: classification\nlabls: [no, yes]\nabilities: [reading]\n")
    with pytest.raises(ConfigError) as info:
        load_spec(path, Target)
    text = str(info.value)
    assert "t.yaml:4: labls: unknown key. Did you mean 'labels'?" in text
    path.write_text("name: new\ndataset: catalog:boolq\nkind: multiple_choice\nabilities: [reading]\n")
    assert load_spec(path, Target).kind == "multiple_choice"


def test_masked_cells_are_not_observations():
    delta, groups = planted_study(3, sources=6)
    delta.iloc[0, 0] = np.nan  # a masked diagonal cell
    result = explain(delta, groups, None, ["hidden", "similarity"], samples=20, permutations=10)
    assert result.groups["r2"].notna().all()


def test_held_out_recommendations_hide_the_target_they_rank():
    from scipy import stats

    from traitlens.analysis.explain import held_out_recommendations
    from traitlens.analysis.features import pair_rows

    delta, groups = planted_study(4, sources=10, targets=4)
    rows = pair_rows(delta, groups["hidden"], pd.DataFrame({"size": [1.0] * 4}, index=delta.columns),
                     groups["similarity"])
    table = held_out_recommendations(rows)
    assert len(table) == 10 * 4 and set(table["rank"]) == set(range(1, 11))
    for _, ranked in table.groupby("target"):
        assert stats.spearmanr(ranked["predicted"], ranked["observed"]).statistic > 0.7


def test_too_few_pairs_to_learn_from_give_no_ranking_and_a_clear_error():
    from traitlens.analysis.explain import held_out_recommendations, recommend
    from traitlens.analysis.features import pair_rows
    from traitlens.errors import TraitlensError

    delta, groups = planted_study(5, sources=3, targets=1)
    rows = pair_rows(delta, groups["hidden"], pd.DataFrame({"size": [1.0]}, index=delta.columns),
                     groups["similarity"])
    assert held_out_recommendations(rows).empty  # hiding the only target leaves nothing to learn from
    with pytest.raises(TraitlensError, match="too little to predict transfer from: 0 observed"):
        recommend(rows.assign(delta=np.nan), "t0", by="target")


def test_text_statistics_come_from_a_seeded_sample_and_counts_from_every_row(monkeypatch):
    from traitlens.data import profile as profiles

    table = pd.DataFrame({"input": [f"review number {i % 30} " + "good " * (i % 30 % 7) for i in range(40)],
                          "answer": ["positive" if i % 3 else "negative" for i in range(40)]})
    monkeypatch.setattr(profiles, "PROFILE_ROWS", 10)
    tokenizer = lambda texts, add_special_tokens: {"input_ids": [t.split() for t in texts]}  # noqa: E731
    sample = table.sample(n=10, random_state=0)
    whole, of_sample = profiles.profile(table, tokenizer), profiles.profile(sample, tokenizer)
    for name in ("input_tokens_mean", "mtld", "type_token_ratio", "readability", "question_rate", "negation_rate"):
        assert whole[name] == pytest.approx(of_sample[name])
    assert whole["size"] == 40 and whole["duplicate_rate"] == pytest.approx(10 / 40)  # every row counted
    assert whole["majority_share"] == pytest.approx(26 / 40) != of_sample["majority_share"]
    _, _, similar = profiles.profile_study({"s": table}, {"t": table}, tokenizer)
    assert similar.loc[("s", "t")].to_dict() == pytest.approx(profiles.similarity(sample, sample))


def test_recommendations_are_scored_against_trivial_baselines():
    from traitlens.analysis.explain import held_out_recommendations, recommendation_quality
    from traitlens.analysis.features import pair_rows

    # Transfer follows a source feature the recommender sees: it should beat a random pick.
    delta, groups = planted_study(6, sources=10, targets=5)
    rows = pair_rows(delta, groups["hidden"], pd.DataFrame({"size": [1.0] * 5}, index=delta.columns),
                     groups["similarity"])
    table, verdict = recommendation_quality(held_out_recommendations(rows), rows)
    scores = table.set_index("method")
    assert list(scores.index) == ["recommender", "source mean", "similarity", "random"]
    assert (scores["targets"] == 5).all()
    assert scores.loc["recommender", "regret"] < scores.loc["random", "regret"]
    assert scores.loc["recommender", "ndcg3"] > scores.loc["random", "ndcg3"]
    assert 0 <= scores["ndcg3"].min() and scores["ndcg3"].max() <= 1 + 1e-9
    # Transfer that only the sources' own means carry, with features that say nothing: the
    # recommender cannot beat ranking by each source's mean transfer, and the verdict says so.
    rng = np.random.default_rng(7)
    strength = pd.Series(np.linspace(-0.1, 0.1, 10), index=delta.index)
    flat = pd.DataFrame(np.add.outer(strength.to_numpy(), np.zeros(5)) + 0.002 * rng.standard_normal((10, 5)),
                        index=delta.index, columns=delta.columns)
    noise = {"hidden": pd.DataFrame({"x": rng.uniform(size=10)}, index=delta.index),
             "similarity": groups["similarity"]}
    rows = pair_rows(flat, noise["hidden"], pd.DataFrame({"size": [1.0] * 5}, index=flat.columns),
                     noise["similarity"])
    table, verdict = recommendation_quality(held_out_recommendations(rows), rows)
    assert table.set_index("method").loc["source mean", "regret"] == pytest.approx(0)
    assert verdict.startswith("the recommender is NOT better than the trivial baselines")
