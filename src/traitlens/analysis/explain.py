"""Why transfer happens: which features track transfer, and which feature group predicts
held-out cells better than chance (the paper's claim: hidden statistics beat surface
similarity and quality).

Every cell (source s, target t) gets the declared features of each group (see
`analysis.features`): most are pair-level, so a group can predict which targets a source helps,
not only how much it helps overall. The test is built so a group can win only by predicting
cells it has not seen:
- each target's deltas are put in units of their spread across sources (targets scored in nats
  and in accuracy weigh alike), and the baseline predicts each target's mean from the training
  sources; a group models what the baseline leaves over, with a ridge model;
- folds hold out a whole family of sources (variants of one dataset), so a sibling's cells
  cannot give the answer away; the ridge penalty is chosen inside each training fold, by the
  same leave-one-family-out (nested cross-validation);
- each group's held-out R2 has a bootstrap interval over families, and a permutation null
  (sources' rows of the matrix shuffled, features kept; 1,000 shuffles, or every one where a
  study has so few sources that all fit): its 95th percentile is the R2 this design could tell
  from chance, so "too small to tell" is a measured statement;
- hidden minus similarity (and minus quality) is a paired difference of held-out R2 on the same
  cells, with its interval over the same family resamples;
- the influence table refits without each family in turn: a verdict one family carries shows
  there;
- a cell whose source and target come from one corpus (a catalog corpus, or the same file) is
  masked like the diagonal (`Results.shared_corpus`): a source trained on the target's own
  texts predicts it for a reason no feature group is about.
Behaviour (known only after training) is reported in the correlations, not used to predict.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from traitlens.analysis.features import PREDICTIVE
from traitlens.analysis.plain import json_ready
from traitlens.analysis.views import raw_matrix, view
from traitlens.errors import TraitlensError

if TYPE_CHECKING:
    from traitlens.analysis.features import Features
    from traitlens.analysis.results import Results

MIN_FAMILIES = 4  # below this, leave-one-family-out fits on too few families to trust
ALPHAS = np.logspace(-2, 3, 6)  # ridge penalties the nested cross-validation chooses among
PERMUTATIONS = 1000
INFLUENCE_PERMUTATIONS = 200  # each family's refit: p floor 0.005, enough to see a verdict flip
GROUP_COLUMNS = ["group", "features", "r2", "low", "high", "null_95", "p"]
DIFFERENCE_COLUMNS = ["a", "b", "difference", "low", "high"]
CONTRASTS = (("hidden", "similarity"), ("hidden", "quality"))


@dataclass
class Explanation:
    """Why transfer happens (`Results.explain`): each feature group's held-out R2 against a
    permutation null (`groups`), feature correlations with transfer and with the trait scores,
    a verdict, and held-out recommendations with their quality against trivial rankings.

    Example:
        >>> why = res.explain()
        >>> why.verdict, why.groups.sort_values("r2", ascending=False).head(2)
    """

    correlations: pd.DataFrame  # feature, group, outcome, rho, low, high
    groups: pd.DataFrame  # group, features, r2 (held-out, vs target-mean baseline), low, high, null_95, p
    verdict: str
    # Each target ranked as if it were new, next to the observed transfer; how those rankings
    # compare with trivial ones (empty when `explain` alone made this explanation).
    recommendations: pd.DataFrame = field(default_factory=pd.DataFrame)
    recommendation_quality: pd.DataFrame = field(default_factory=pd.DataFrame)
    recommendation_verdict: str = ""
    differences: pd.DataFrame = field(default_factory=pd.DataFrame)  # a, b, difference of held-out R2, low, high
    influence: pd.DataFrame = field(default_factory=pd.DataFrame)  # family left out, group, r2, p
    masked: list[tuple[str, str]] = field(default_factory=list)  # (source, target) pairs sharing a corpus

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (NaN as null), as stored for the report.

        Example:
            >>> json.dumps(res.explain().to_json())
        """
        return json_ready({"correlations": self.correlations.to_dict("records"),
                           "groups": self.groups.to_dict("records"), "verdict": self.verdict,
                           "recommendations": self.recommendations.to_dict("records"),
                           "recommendation_quality": self.recommendation_quality.to_dict("records"),
                           "recommendation_verdict": self.recommendation_verdict,
                           "differences": self.differences.to_dict("records"),
                           "influence": self.influence.to_dict("records"), "masked": [list(p) for p in self.masked]})


def explain_results(results: Results, features: Features, scores: pd.DataFrame | None = None,
                    permutations: int = PERMUTATIONS) -> Explanation:
    """The explanation of a study's cells (`explain`, with the adapters' behaviour added to the
    features) and the held-out recommendations scored against trivial rankings. `scores`: the
    sources' trait scores, correlated with the features too. Needs no model: `features` holds
    every dataset statistic (`recipes.features` computes them)."""
    settings = results.settings
    delta = view(raw_matrix(results.cells), "delta", results.diagonal, settings.mask_diagonal)
    masked = sorted((s, t) for s, t in results.shared_corpus if s in delta.index and t in delta.columns)
    for source, target in masked:
        delta.loc[source, target] = np.nan
    delta = delta.dropna(how="all")
    groups = dict(features.groups)
    if results.cells["source"].notna().any():
        groups["behaviour"] = behaviour(results.cells)
    result = explain(delta, groups, scores, PREDICTIVE, settings.bootstrap_samples, settings.seed, results.families,
                     permutations)
    pairs = features.pairs(delta)
    held_out = held_out_recommendations(pairs)
    quality, verdict = recommendation_quality(held_out, pairs)
    return replace(result, recommendations=held_out, recommendation_quality=quality, recommendation_verdict=verdict,
                   masked=masked)


def behaviour(cells: pd.DataFrame) -> pd.DataFrame:
    """Per source (seeds averaged): generated length relative to the base on targets where the
    model writes its answer, and label collapse: the total-variation distance between the
    predicted and the gold label distribution, averaged over classification targets."""
    base = {row.target: row.metrics for row in cells[cells["source"].isna()].itertuples()}
    rows = []
    for row in cells[cells["source"].notna()].itertuples():
        metrics, reference = row.metrics, base.get(row.target, {})
        length = (metrics["generated_tokens"]["mean"] / max(reference["generated_tokens"]["mean"], 1e-9)
                  if "generated_tokens" in metrics and "generated_tokens" in reference else np.nan)
        skew = (0.5 * sum(abs(metrics["predicted_distribution"].get(label, 0.0) - share)
                          for label, share in metrics["gold_distribution"].items())
                if "gold_distribution" in metrics else np.nan)
        rows.append({"source": row.source, "length_vs_base": length, "label_skew": skew})
    return pd.DataFrame(rows).groupby("source").mean()


def cell_features(delta: pd.DataFrame, groups: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per observed cell: source, target, delta, and every feature with its group as a
    column prefix ("hidden:format_match"). Group frames are indexed by source, or by (source, target)."""
    # Masked (diagonal) and missing cells are not observations.
    rows = delta.stack().dropna().rename("delta").reset_index()
    rows.columns = ["source", "target", "delta"]
    for group, frame in groups.items():
        frame = frame.add_prefix(f"{group}:")
        keys = ["source", "target"] if isinstance(frame.index, pd.MultiIndex) else ["source"]
        rows = rows.merge(frame, left_on=keys, right_index=True, how="left")
    return rows


def correlations(cells: pd.DataFrame, scores: pd.DataFrame | None, samples: int, seed: int) -> pd.DataFrame:
    """Spearman rho of each feature with cell transfer and with each trait score, with
    intervals from resampling sources."""
    rng = np.random.default_rng(seed)
    features = [c for c in cells.columns if ":" in c and cells[c].nunique() > 1]
    sources = cells["source"].unique()
    draws = [rng.choice(sources, len(sources)) for _ in range(samples)]
    out = []
    for feature in features:
        group = feature.split(":")[0]
        out.append(_rho(cells[feature], cells["delta"], cells["source"], draws) | {
            "feature": feature, "group": group, "outcome": "transfer"})
        if scores is not None:
            per_source = cells.groupby("source")[feature].mean()
            for trait in scores.columns:
                x = per_source.reindex(scores.index)
                out.append(_rho(x, scores[trait], pd.Series(scores.index, index=scores.index), draws)
                           | {"feature": feature, "group": group, "outcome": trait})
    table = pd.DataFrame(out, columns=["feature", "group", "outcome", "rho", "low", "high"])
    return table.sort_values("rho", key=lambda r: -r.abs().fillna(0)).reset_index(drop=True)


def _rho(x: pd.Series, y: pd.Series, cluster: pd.Series, draws: list[np.ndarray]) -> dict[str, float]:
    valid = x.notna() & y.notna()
    x, y, cluster = x[valid].to_numpy(float), y[valid].to_numpy(float), cluster[valid].to_numpy()
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": np.nan, "low": np.nan, "high": np.nan}
    rho = _spearman(x, y)
    members = {s: np.flatnonzero(cluster == s) for s in np.unique(cluster)}
    boot = []
    for draw in draws:
        index = np.concatenate([members.get(s, np.array([], int)) for s in draw])
        if len(index) >= 3 and np.ptp(x[index]) > 0 and np.ptp(y[index]) > 0:
            boot.append(_spearman(x[index], y[index]))
    low, high = np.quantile(boot, [0.025, 0.975]) if boot else (np.nan, np.nan)
    return {"rho": float(rho), "low": float(low), "high": float(high)}


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (average ranks for ties), as scipy's, without its per-call checks: the
    source bootstrap computes it tens of thousands of times."""
    return float(np.corrcoef(stats.rankdata(x), stats.rankdata(y))[0, 1])


def _ridge_path(x: np.ndarray, y: np.ndarray, x_new: np.ndarray, alphas: np.ndarray = ALPHAS) -> np.ndarray:
    """Predictions (alphas x new rows) of ridge regressions of y on x, one per penalty, with
    features standardised on the training rows (missing values at their mean). Written out
    with one SVD for every penalty: nested cross-validation and the permutation null fit tens
    of thousands of these tiny models, where scikit-learn's per-fit overhead would dominate."""
    mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    z, z_new = np.nan_to_num((x - mean) / std), np.nan_to_num((x_new - mean) / std)
    u, singular, vt = np.linalg.svd(z, full_matrices=False)
    shrink = singular / (singular ** 2 + alphas[:, None])  # alphas x rank
    coefficients = (shrink * (u.T @ (y - y.mean()))) @ vt  # alphas x features
    return y.mean() + coefficients @ z_new.T


def _held_out(x: np.ndarray | None, y: np.ndarray, target: np.ndarray, family: np.ndarray) -> np.ndarray:
    """Leave-one-family-out predictions of y: each target's mean over the training families,
    plus (when `x` is given) a ridge model of what those means leave over, its penalty chosen
    by leave-one-family-out within the training families."""
    prediction = np.empty_like(y)
    for held in np.unique(family):
        test, train = family == held, family != held
        prediction[test] = _target_means(y, target, train, test)
        if x is None:
            continue
        residual = y[train] - _target_means(y, target, train, train)
        alpha = _choose_alpha(x[train], residual, family[train])
        prediction[test] += _ridge_path(x[train], residual, x[test], np.array([alpha]))[0]
    return prediction


def _target_means(y: np.ndarray, target: np.ndarray, train: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each of `rows`' target's mean y over the `train` rows (targets as integer codes); the
    overall training mean for a target with no training row."""
    sums = np.bincount(target[train], y[train], minlength=target.max() + 1)
    counts = np.bincount(target[train], minlength=target.max() + 1)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), y[train].mean())
    return means[target[rows]]


def _choose_alpha(x: np.ndarray, residual: np.ndarray, family: np.ndarray) -> float:
    """The ridge penalty with the smallest leave-one-family-out error on these rows."""
    if len(np.unique(family)) < 3:  # too few families to hold one out inside the fold: thirds of the rows
        family = np.arange(len(residual)) % 3
    errors = np.zeros(len(ALPHAS))
    for held in np.unique(family):
        test, train = family == held, family != held
        if train.sum() < 2:
            continue
        errors += ((_ridge_path(x[train], residual[train], x[test]) - residual[test]) ** 2).sum(axis=1)
    return float(ALPHAS[int(np.argmin(errors))])


def compare_groups(cells: pd.DataFrame, predictive: list[str], families: dict[str, str], samples: int,
                   seed: int, permutations: int = PERMUTATIONS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per feature group: held-out R2 over the target-mean baseline (leave-one-family-out,
    nested penalty choice), its interval over families, and a permutation null: its 95th
    percentile (`null_95`, the R2 this design could tell from chance) and p. Second: the paired
    differences of CONTRASTS, with intervals over the same family resamples."""
    y = _standardised(cells)
    target = pd.factorize(cells["target"])[0]
    family = cells["source"].map(lambda s: families.get(s, s)).to_numpy()
    source = cells["source"].to_numpy()
    rng = np.random.default_rng(seed)
    columns = {group: [c for c in cells.columns if c.startswith(f"{group}:") and cells[c].nunique() > 1]
               for group in predictive}
    baseline = (_held_out(None, y, target, family) - y) ** 2
    unique = np.unique(family)
    boot_families = [rng.choice(unique, len(unique)) for _ in range(samples)]
    members = {f: np.flatnonzero(family == f) for f in unique}
    names = np.unique(source)
    exact = math.factorial(len(names)) <= permutations  # every shuffle, the identity among them
    orders = itertools.permutations(names) if exact else (rng.permutation(names) for _ in range(permutations))
    shuffled = [dict(zip(names, order)) for order in orders]
    nulls = [_permuted(cells, y, shuffle) for shuffle in shuffled]  # each source takes another's outcomes
    null_baselines = [((_held_out(None, y_null, target, family) - y_null) ** 2).sum() for y_null in nulls]
    rows, errors_of = [], {}
    for group in predictive:
        if not columns[group]:
            rows.append({"group": group, "features": "", "r2": np.nan, "low": np.nan, "high": np.nan,
                         "null_95": np.nan, "p": np.nan})
            continue
        x = cells[columns[group]].to_numpy(float)
        errors = errors_of[group] = (_held_out(x, y, target, family) - y) ** 2
        r2 = 1 - errors.sum() / max(baseline.sum(), 1e-12)
        boot = []
        for draw in boot_families:
            index = np.concatenate([members[f] for f in draw])
            boot.append(1 - errors[index].sum() / max(baseline[index].sum(), 1e-12))
        null = np.array([1 - ((_held_out(x, y_null, target, family) - y_null) ** 2).sum() / max(b, 1e-12)
                         for y_null, b in zip(nulls, null_baselines)])
        low, high = np.quantile(boot, [0.025, 0.975])
        beaten = (null >= r2 - 1e-12).sum()
        rows.append({"group": group, "features": ", ".join(c.split(":", 1)[1] for c in columns[group]),
                     "r2": float(r2), "low": float(low), "high": float(high),
                     "null_95": float(np.quantile(null, 0.95)) if len(null) else np.nan,
                     "p": float(beaten / len(null) if exact else (1 + beaten) / (len(null) + 1))})
    differences = []
    for a, b in CONTRASTS:
        if a in errors_of and b in errors_of:
            gap = errors_of[b] - errors_of[a]  # R2(a) - R2(b) = (errors b - errors a) / baseline
            draws = [gap[i].sum() / max(baseline[i].sum(), 1e-12)
                     for i in (np.concatenate([members[f] for f in draw]) for draw in boot_families)]
            low, high = np.quantile(draws, [0.025, 0.975])
            differences.append({"a": a, "b": b, "difference": float(gap.sum() / max(baseline.sum(), 1e-12)),
                                "low": float(low), "high": float(high)})
    ranked = pd.DataFrame(rows, columns=GROUP_COLUMNS).sort_values("r2", ascending=False, na_position="last")
    return ranked.reset_index(drop=True), pd.DataFrame(differences, columns=DIFFERENCE_COLUMNS)


def influence(cells: pd.DataFrame, predictive: list[str], families: dict[str, str], seed: int,
              permutations: int = INFLUENCE_PERMUTATIONS) -> pd.DataFrame:
    """Each group's held-out R2 and p with one family's sources left out, for every family:
    a verdict one family carries shows as a collapse in its row."""
    rows = []
    for left_out in sorted(set(families.values())):
        kept = cells[cells["source"].map(families) != left_out]
        if kept["source"].map(families).nunique() < 3:
            continue
        ranked, _ = compare_groups(kept, predictive, families, 1, seed, permutations)
        rows += [{"left_out": left_out, "group": r.group, "r2": r.r2, "p": r.p} for r in ranked.itertuples()]
    return pd.DataFrame(rows, columns=["left_out", "group", "r2", "p"])


def _standardised(cells: pd.DataFrame) -> np.ndarray:
    """Each target's deltas in units of their spread across sources."""
    spread = cells.groupby("target")["delta"].transform(lambda d: d.std(ddof=1) if len(d) > 1 else 1.0)
    return (cells["delta"] / spread.where(spread > 1e-12, 1.0)).to_numpy(float)


def _permuted(cells: pd.DataFrame, y: np.ndarray, shuffle: dict[str, str]) -> np.ndarray:
    """y with every source's cells given another source's outcome on the same target (0 where
    that source has no cell there, e.g. its masked diagonal: the target's mean in these units
    is near 0 after the baseline, so it adds no signal)."""
    lookup = dict(zip(zip(cells["source"], cells["target"]), y))
    return np.array([lookup.get((shuffle[s], t), 0.0) for s, t in zip(cells["source"], cells["target"])])


def explain(delta: pd.DataFrame, groups: dict[str, pd.DataFrame], scores: pd.DataFrame | None,
            predictive: list[str], samples: int = 500, seed: int = 0, families: dict[str, str] | None = None,
            permutations: int = PERMUTATIONS) -> Explanation:
    """`families`: source -> family (default: every source its own family)."""
    cells = cell_features(delta, groups)
    table = correlations(cells, scores, samples, seed)
    families = {s: (families or {}).get(s, s) for s in cells["source"].unique()}
    n_families = len(set(families.values()))
    if n_families < 3:
        return Explanation(table, pd.DataFrame(columns=GROUP_COLUMNS),
                           f"too small to tell: {n_families} source families; holding one out needs at least 3.")
    ranked, differences = compare_groups(cells, predictive, families, samples, seed, permutations)
    return Explanation(table, ranked, _verdict(ranked, n_families), differences=differences,
                       influence=influence(cells, predictive, families, seed))


def _verdict(ranked: pd.DataFrame, n_families: int) -> str:
    scored = ranked.dropna(subset=["r2"])
    if scored.empty:
        return "too small to tell: no feature group has features that vary across the sources."
    best = scored.iloc[0]
    second = scored.iloc[1] if len(scored) > 1 else None
    shown = lambda row: f"{row.group} R2 {row.r2:+.2f} [{row.low:+.2f}, {row.high:+.2f}]"  # noqa: E731
    if n_families < MIN_FAMILIES:
        return (f"too small to tell: {n_families} source families (each fold fits on {n_families - 1}; trust a "
                f"comparison from {MIN_FAMILIES} on). Best: {shown(best)}.")
    if best.r2 <= best.null_95:
        return (f"too small to tell: no feature group predicts held-out transfer better than chance (best: "
                f"{shown(best)}; shuffling sources gives up to {best.null_95:+.2f} in 95% of shuffles, so "
                f"only a group above that would show).")
    if second is not None and best.low <= second.r2:
        return (f"{shown(best)} beats chance (p={best.p:.3f}) but is not clearly ahead of {second.group} "
                f"({second.r2:+.2f}); the study is too small to rank them.")
    return (f"{best.group} explains held-out transfer best: {shown(best)} over the target-mean baseline, "
            f"above chance (95% of shuffles <= {best.null_95:+.2f}, p={best.p:.3f})"
            + (f", ahead of {second.group} ({second.r2:+.2f})." if second is not None else "."))


def _ridge(train: pd.DataFrame, test: pd.DataFrame, alpha: float = 1.0) -> np.ndarray:
    from sklearn.linear_model import Ridge

    columns = [c for c in train.columns if ":" in c and train[c].nunique() > 1]
    if len(train) < 2 or not columns:
        raise TraitlensError(
            f"too little to predict transfer from: {len(train)} observed (source, target) pair(s) with "
            f"{len(columns)} feature(s) that vary across them. Add sources or targets and run them.")
    x_train, x_test = train[columns].to_numpy(float), test[columns].to_numpy(float)
    mean, std = np.nanmean(x_train, axis=0), np.nanstd(x_train, axis=0) + 1e-9
    model = Ridge(alpha=alpha).fit(np.nan_to_num((x_train - mean) / std), train["delta"].to_numpy())
    return model.predict(np.nan_to_num((x_test - mean) / std))


def recommend(rows: pd.DataFrame, new: str, by: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rank the pairs of a new dataset (`by` = "target": a new target, ranked over sources; or
    "source") by predicted transfer, with the ranking quality measured by holding out each
    existing dataset of the same side in turn (Spearman of predicted vs observed transfer)."""
    known = rows[rows["delta"].notna()]
    ranking = rows[rows[by] == new].assign(predicted=lambda r: _ridge(known, r))
    other = "source" if by == "target" else "target"
    ranking = ranking[[other, "predicted"]].sort_values("predicted", ascending=False).reset_index(drop=True)
    quality = []
    for held in known[by].unique():
        train, test = known[known[by] != held], known[known[by] == held]
        if len(test) >= 3 and test["delta"].nunique() > 1:
            try:
                predicted = _ridge(train, test)
            except TraitlensError:  # the rest are too few to learn from: this one is not scored
                continue
            quality.append({by: held, "spearman": stats.spearmanr(predicted, test["delta"]).statistic})
    return ranking, pd.DataFrame(quality, columns=[by, "spearman"])


def held_out_recommendations(rows: pd.DataFrame) -> pd.DataFrame:
    """For every target, the ranking of sources the model would have given had that target been
    new (its cells hidden), next to the observed transfer: one row per (target, source)."""
    out = []
    for target in rows.loc[rows["delta"].notna(), "target"].unique():
        hidden = rows.assign(delta=rows["delta"].where(rows["target"] != target))
        try:
            ranking, _ = recommend(hidden, target, by="target")
        except TraitlensError:  # the other targets are too few to learn from
            continue
        observed = rows[rows["target"] == target].set_index("source")["delta"]
        out += [{"target": target, "rank": rank + 1, "source": row.source, "predicted": row.predicted,
                 "observed": observed.get(row.source)} for rank, row in enumerate(ranking.itertuples())]
    return pd.DataFrame(out, columns=["target", "rank", "source", "predicted", "observed"])


BASELINES = ("recommender", "source mean", "similarity", "random")


def recommendation_quality(held_out: pd.DataFrame, rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """How good the held-out rankings (`held_out_recommendations`) are next to trivial ones, per
    method: mean top-1 regret (the best source's transfer minus the top pick's, in units of the
    target's spread across sources) and NDCG@3 (gains: transfer above the target's worst
    source), over targets. Baselines: ranking by each source's mean transfer on the other
    targets, by sentence-embedding similarity to the target alone, and a random pick (its
    expected value). Returns the table and a plain sentence on whether the recommender wins."""
    similarity = next((c for c in ("pair:embedding_cosine", "pair:tfidf_cosine") if c in rows), None)
    per_target = {method: {"regret": [], "ndcg3": []} for method in BASELINES}
    for target, ranked in held_out.groupby("target"):
        observed = ranked.set_index("source")["observed"].dropna()
        if len(observed) < 3 or observed.std(ddof=1) <= 1e-12:
            continue
        gain = (observed - observed.min()) / observed.std(ddof=1)
        others = rows[(rows["target"] != target) & rows["delta"].notna()].groupby("source")["delta"].mean()
        pair = rows[rows["target"] == target].set_index("source")
        rankings = {"recommender": ranked.set_index("source")["predicted"],
                    "source mean": others, "similarity": pair[similarity] if similarity else None}
        for method, score in rankings.items():
            if score is None:
                continue
            order = score.reindex(gain.index).fillna(-np.inf).sort_values(ascending=False, kind="stable").index
            per_target[method]["regret"].append(gain.max() - gain[order[0]])
            per_target[method]["ndcg3"].append(_dcg(gain[order].to_numpy()) / _dcg(np.sort(gain.to_numpy())[::-1]))
        per_target["random"]["regret"].append(gain.max() - gain.mean())
        per_target["random"]["ndcg3"].append(_dcg(np.full(len(gain), gain.mean())) / _dcg(np.sort(gain.to_numpy())[::-1]))
    table = pd.DataFrame([{"method": method, "regret": np.mean(v["regret"]) if v["regret"] else np.nan,
                           "ndcg3": np.mean(v["ndcg3"]) if v["ndcg3"] else np.nan, "targets": len(v["regret"])}
                          for method, v in per_target.items()])
    if table["targets"].iloc[0] == 0:
        return table, "too few targets with three or more sources to score the recommender."
    ours, rest = table.iloc[0], table.iloc[1:].dropna(subset=["regret"])
    best_regret, best_ndcg = rest.loc[rest["regret"].idxmin()], rest.loc[rest["ndcg3"].idxmax()]
    regret = (f"top-1 regret {ours.regret:.2f} vs {best_regret.regret:.2f} for the best baseline "
              f"({best_regret.method}, {'worse' if ours.regret >= best_regret.regret else 'better'})")
    ndcg = (f"NDCG@3 {ours.ndcg3:.2f} vs {best_ndcg.ndcg3:.2f} ({best_ndcg.method}, "
            f"{'worse' if ours.ndcg3 <= best_ndcg.ndcg3 else 'better'})")
    where = f"over {int(ours.targets)} held-out targets"
    if ours.regret < best_regret.regret and ours.ndcg3 > best_ndcg.ndcg3:
        return table, f"the recommender beats every baseline {where}: {regret}, {ndcg}."
    return table, (f"the recommender is NOT better than the trivial baselines {where}: {regret}, {ndcg}. "
                   "Use its rankings with care.")


def _dcg(gains: np.ndarray, k: int = 3) -> float:
    top = gains[:k]
    return float((top / np.log2(np.arange(2, len(top) + 2))).sum())
