"""Why transfer happens: which source features track transfer, and which feature group predicts
held-out cells best (the paper's claim: hidden statistics beat surface similarity and quality).

Every cell (source s, target t) gets the features of its group: s's profile (hidden
statistics), s-to-t similarity, s's quality proxies, and the adapter's behaviour (generated
length vs the base, label collapse; known only after training, so reported, not for prediction).
Prediction is scored leave-one-source-out against a baseline that predicts each target's mean
transfer; uncertainty comes from resampling sources, since a source's cells share its features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from traitlens.errors import TraitlensError

MIN_SOURCES = 5  # below this, leave-one-source-out has too few sources to fit on


@dataclass
class Explanation:
    correlations: pd.DataFrame  # feature, group, outcome, rho, low, high
    groups: pd.DataFrame  # group, r2 (held-out, vs target-mean baseline), low, high
    verdict: str

    def to_json(self) -> dict[str, Any]:
        from traitlens.analysis.analyze import json_ready

        return json_ready({"correlations": self.correlations.to_dict("records"),
                           "groups": self.groups.to_dict("records"), "verdict": self.verdict})


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
    column prefix ("hidden:mtld"). Group frames are indexed by source, or by (source, target)."""
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
    rho = stats.spearmanr(x, y).statistic
    boot = []
    for draw in draws:
        index = np.concatenate([np.flatnonzero(cluster == s) for s in draw])
        if len(index) >= 3 and np.ptp(x[index]) > 0 and np.ptp(y[index]) > 0:
            boot.append(stats.spearmanr(x[index], y[index]).statistic)
    low, high = np.quantile(boot, [0.025, 0.975]) if boot else (np.nan, np.nan)
    return {"rho": float(rho), "low": float(low), "high": float(high)}


def compare_groups(cells: pd.DataFrame, predictive: list[str], samples: int, seed: int,
                   alpha: float = 1.0) -> pd.DataFrame:
    """Leave-one-source-out held-out R^2 of a ridge model per feature group, over the baseline
    that predicts each target's mean transfer from the other sources."""
    sources = cells["source"].unique()
    errors: dict[str, list[float]] = {"baseline": []}
    held: list[str] = []
    for source in sources:
        train, test = cells[cells["source"] != source], cells[cells["source"] == source]
        target_mean = train.groupby("target")["delta"].mean()
        base_train = train["target"].map(target_mean).to_numpy()
        base_test = test["target"].map(target_mean).fillna(train["delta"].mean()).to_numpy()
        errors["baseline"] += list((test["delta"].to_numpy() - base_test) ** 2)
        held += [source] * len(test)
        for group in predictive:
            columns = [c for c in cells.columns if c.startswith(f"{group}:") and train[c].nunique() > 1]
            prediction = base_test
            if columns:  # the group models what the target means leave over
                residual = train[columns].assign(delta=train["delta"].to_numpy() - base_train)
                prediction = base_test + _ridge(residual, test[columns], alpha)
            errors.setdefault(group, []).extend((test["delta"].to_numpy() - prediction) ** 2)
    held_arr = np.array(held)
    rng = np.random.default_rng(seed)
    baseline = np.array(errors["baseline"])
    rows = []
    for group in predictive:
        group_errors = np.array(errors[group])
        boot = []
        for _ in range(samples):
            index = np.concatenate([np.flatnonzero(held_arr == s) for s in rng.choice(sources, len(sources))])
            boot.append(1 - group_errors[index].sum() / max(baseline[index].sum(), 1e-12))
        r2 = 1 - group_errors.sum() / max(baseline.sum(), 1e-12)
        low, high = np.quantile(boot, [0.025, 0.975])
        rows.append({"group": group, "r2": float(r2), "low": float(low), "high": float(high)})
    return pd.DataFrame(rows).sort_values("r2", ascending=False).reset_index(drop=True)


def explain(delta: pd.DataFrame, groups: dict[str, pd.DataFrame], scores: pd.DataFrame | None,
            predictive: list[str], samples: int = 500, seed: int = 0) -> Explanation:
    cells = cell_features(delta, groups)
    table = correlations(cells, scores, samples, seed)
    n_sources = cells["source"].nunique()
    if n_sources < 3:
        return Explanation(table, pd.DataFrame(columns=["group", "r2", "low", "high"]),
                           f"too small to tell: {n_sources} sources; leave-one-source-out needs at least 3.")
    ranked = compare_groups(cells, predictive, samples, seed)
    best, second = ranked.iloc[0], ranked.iloc[1] if len(ranked) > 1 else None
    if n_sources < MIN_SOURCES:
        verdict = (f"too small to tell: {n_sources} sources (the held-out scores below fit on "
                   f"{n_sources - 1} at a time; trust a comparison from {MIN_SOURCES} sources on).")
    elif best.r2 <= 0 or best.low <= 0:
        verdict = (f"no feature group predicts held-out transfer better than each target's mean "
                   f"(best: {best.group}, R2 {best.r2:+.2f} [{best.low:+.2f}, {best.high:+.2f}]).")
    elif second is not None and best.low <= second.r2:
        verdict = (f"{best.group} predicts best (R2 {best.r2:+.2f} [{best.low:+.2f}, {best.high:+.2f}]) but "
                   f"not clearly ahead of {second.group} ({second.r2:+.2f}); the study is too small to tell.")
    else:
        verdict = (f"{best.group} explains held-out transfer best: R2 {best.r2:+.2f} [{best.low:+.2f}, "
                   f"{best.high:+.2f}] over the target-mean baseline"
                   + (f", ahead of {second.group} ({second.r2:+.2f})." if second is not None else "."))
    return Explanation(table, ranked, verdict)


def pair_rows(delta: pd.DataFrame | None, sources: pd.DataFrame, targets: pd.DataFrame,
              similar: pd.DataFrame) -> pd.DataFrame:
    """One row per (source, target) pair in `similar`, with source, target and pair features
    (prefixed source:, target:, pair:) and the observed delta where there is one."""
    rows = similar.add_prefix("pair:").reset_index()
    rows = rows.merge(sources.add_prefix("source:"), left_on="source", right_index=True, how="left")
    rows = rows.merge(targets.add_prefix("target:"), left_on="target", right_index=True, how="left")
    if delta is not None:
        observed = delta.stack().rename("delta").reset_index()
        observed.columns = ["source", "target", "delta"]
        rows = rows.merge(observed, on=["source", "target"], how="left")
    return rows


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
