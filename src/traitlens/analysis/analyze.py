"""The trait analysis of a study, from collected results to one JSON-ready summary."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from traitlens.analysis.diagnostics import own_task, target_diagnostics
from traitlens.analysis.effects import asymmetry, side_effects
from traitlens.analysis.plain import json_ready
from traitlens.analysis.reliability import variance_components
from traitlens.analysis.stability import cells_on_items, seed_stability, trait_stability
from traitlens.analysis.traits import ESTIMATORS, name_trait, seed_split_count, split_half_count, unique_names
from traitlens.analysis.uncertainty import cell_uncertainty, source_uncertainty
from traitlens.analysis.views import raw_matrix, seed_spread, view
from traitlens.config.schema import Analysis
from traitlens.errors import TraitlensError
from traitlens.config.schema import BASE

if TYPE_CHECKING:
    from traitlens.analysis.results import Results


@dataclass
class TraitAnalysis:
    """A fitted trait analysis (`Results.traits()`), in scikit-learn's naming for what was
    learnt (`loadings_`, `scores_`, `explained_variance_ratio_`), with the stability of each
    trait and the matrix's effects and diagnostics beside it.

    Example:
        >>> traits = res.traits()
        >>> traits.loadings_.round(2), traits.stability_["median_congruence"]
    """

    metric: str  # the analysis metric asked for
    used: dict[str, str]  # the metric each target is scored in (generated answers fall back)
    raw: pd.DataFrame  # models (base + sources) x targets
    matrix: pd.DataFrame  # sources x targets, the chosen view, what the traits are fitted on
    uncertainty: pd.DataFrame  # per adapter cell (each seed): delta, interval, p, q, significant
    source_uncertainty: pd.DataFrame  # per matrix cell (seeds averaged): hierarchical interval, p, q
    spread: pd.DataFrame  # sources x targets std across seeds
    targets: pd.DataFrame  # per target: the base's diagnostics and flags
    own_task: pd.DataFrame  # per source with a home target: its delta there, flagged if not > 0
    loadings_: pd.DataFrame  # targets x traits
    scores_: pd.DataFrame  # sources x traits
    explained_variance_ratio_: pd.Series  # per trait
    names_: list[str]  # a name per trait, from its strongest loadings
    stability_: pd.DataFrame  # per trait: congruence over items, sources and seeds, beside its chance level
    side_effects: pd.DataFrame
    asymmetry: pd.DataFrame
    dropped: list[str]  # sources left out for missing cells, targets no adapter moves
    trait_count_: dict[str, Any]  # how the count was chosen, its evidence, whether it is saturated
    reliability: pd.DataFrame  # per target: variance components, ranking reliability (analysis.reliability)
    no_traits: str | None = None  # why there are no traits, when the matrix is too small or flat

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (NaN as null), as stored for the report.

        Example:
            >>> res.traits().to_json()["traits"][0]["name"]
        """
        return json_ready({
            "metric": self.metric, "used": self.used,
            "raw": self.raw.to_dict(), "matrix": self.matrix.to_dict(), "spread": self.spread.to_dict(),
            "uncertainty": self.uncertainty.to_dict("records"),
            "source_uncertainty": self.source_uncertainty.to_dict("records"),
            "diagnostics": {"targets": self.targets.to_dict("records"), "own_task": self.own_task.to_dict("records")},
            "traits": [{"trait": trait, "name": name, "explained": float(self.explained_variance_ratio_[trait]),
                        "loadings": self.loadings_[trait].to_dict(), "scores": self.scores_[trait].to_dict(),
                        **self.stability_.loc[trait].to_dict()}
                       for trait, name in zip(self.loadings_.columns, self.names_)],
            "trait_count": self.trait_count_, "reliability": self.reliability.to_dict("records"),
            "side_effects": self.side_effects.to_dict("records"),
            "asymmetry": self.asymmetry.to_dict("records"), "dropped": self.dropped,
            "no_traits": self.no_traits,
        })


def analyze(results: Results, settings: Analysis) -> TraitAnalysis:
    if results.metric != settings.metric:
        results = results.scored(settings.metric)
    raw_all = raw_matrix(results.cells)
    if BASE not in raw_all.index:
        raise TraitlensError("no base cells in the store yet: run the study first (`traitlens run`).")
    complete = raw_all.dropna()  # an adapter needs every target scored to enter the traits
    dropped = [row for row in raw_all.index if row not in complete.index]
    if BASE in dropped or len(complete) < 2:
        raise TraitlensError(f"the analysis needs the base and an adapter scored on every target; "
                             f"complete rows now: {', '.join(complete.index) or 'none'}. Run the study first.")
    sources = [row for row in complete.index if row != BASE]
    cells = results.cells[results.cells["source"].isin(sources) | (results.cells["model"] == BASE)]
    kept = replace(results, cells=cells)
    estimator = ESTIMATORS[settings.method]
    matrix_of = lambda cells_: view(raw_matrix(cells_), settings.view, results.diagonal, settings.mask_diagonal)
    model = lambda n_traits: estimator(n_traits, settings.rotation, random_state=settings.seed,
                                       standardize=settings.standardize)
    matrix = matrix_of(cells)
    samples, alpha, seed = settings.bootstrap_samples, settings.alpha, settings.seed
    uncertainty = cell_uncertainty(kept, samples, alpha, seed)
    reliability = variance_components(kept, seed=seed)  # also the pooled errors of seed-level intervals
    by_source = source_uncertainty(kept, samples, alpha, seed, components=reliability)
    delta = view(complete, "delta")
    effects = {"metric": settings.metric, "used": results.used, "raw": complete, "matrix": matrix,
               "uncertainty": uncertainty, "source_uncertainty": by_source, "spread": seed_spread(cells),
               "targets": target_diagnostics(kept), "own_task": own_task(kept, by_source),
               "side_effects": side_effects(by_source),
               "asymmetry": asymmetry(delta, results.diagonal, kept, samples, alpha, seed),
               "reliability": reliability}
    try:
        if len(sources) < 3:
            raise ValueError(f"traits need at least three adapters scored on every target; "
                             f"{len(sources)} are ({', '.join(sources)})")
        by_seed = _seed_matrices(kept, matrix_of, matrix)
        count = _trait_count(settings, kept, matrix_of, matrix, by_seed)
        traits = model(count["n_traits"]).fit(matrix)
    except ValueError as exc:  # the effects still stand; the report shows them without traits
        return TraitAnalysis(
            **effects, loadings_=pd.DataFrame(index=matrix.columns), scores_=pd.DataFrame(index=matrix.index),
            explained_variance_ratio_=pd.Series(dtype=float), names_=[], stability_=pd.DataFrame(), dropped=dropped,
            trait_count_={}, no_traits=f"{exc}. Add sources or targets, or more items per target.")
    # Refits keep the full-data trait count, so their traits can be matched one to one.
    refit = lambda matrix_: model(traits.n_traits_).fit(matrix_).loadings_
    stability = trait_stability(traits.loadings_, lambda cells_: refit(matrix_of(cells_)), refit, cells,
                                matrix, kept.scores, samples, seed)
    if by_seed is not None:
        stability = stability.join(seed_stability(traits.loadings_, refit, by_seed, seed=seed))
    limit = min(len(traits.loadings_), len(matrix) - 1)
    saturated = traits.n_traits_ >= limit
    return TraitAnalysis(
        **effects, loadings_=traits.loadings_, scores_=traits.scores_,
        explained_variance_ratio_=traits.explained_variance_ratio_,
        names_=unique_names([name_trait(traits.loadings_[t], results.abilities) for t in traits.loadings_.columns],
                           traits.loadings_),
        stability_=stability, dropped=dropped + traits.dropped_targets_,
        trait_count_=count | {"n_traits": traits.n_traits_, "largest_possible": limit, "saturated": saturated})


def _seed_matrices(results: Results, matrix_of, matrix: pd.DataFrame) -> dict[int, pd.DataFrame] | None:
    """Each seed's matrix (its adapters against the base, in the analysed view), where every
    source has that seed and there are two or more such seeds; else None."""
    adapters = results.cells[results.cells["source"].notna()]
    if adapters.empty:
        return None
    shared = set.intersection(*(set(g["seed"].dropna().astype(int)) for _, g in adapters.groupby("source")))
    if len(shared) < 2:
        return None
    base = results.cells["source"].isna()
    return {s: matrix_of(results.cells[base | (results.cells["seed"] == s)]).reindex(
        index=matrix.index, columns=matrix.columns) for s in sorted(shared)}


SPLITS = 20  # random halvings of the items for the split-half trait count


def _trait_count(settings: Analysis, results: Results, matrix_of, matrix: pd.DataFrame,
                 by_seed: dict[int, pd.DataFrame] | None) -> dict[str, Any]:
    """How many traits, and how that was decided: the configured number, or under `auto` a
    split of the study (by seeds where `by_seed` has two or more, else by items) or parallel
    analysis."""
    if settings.n_traits != "auto":
        return {"method": "fixed", "n_traits": int(settings.n_traits)}
    if settings.trait_count == "parallel_analysis":
        return {"method": "parallel_analysis", "n_traits": "auto"}
    varying = matrix.std(ddof=1).to_numpy() > 1e-12
    if settings.trait_count in ("split", "seed_split"):
        if by_seed is not None:
            stacked = np.stack([m.to_numpy(float)[:, varying] for m in by_seed.values()])
            found, spectrum = seed_split_count(stacked, settings.standardize, seed=settings.seed)
            return {"method": "seed_split", "n_traits": max(1, found), "reproducible": found,
                    "seeds": list(by_seed), **spectrum}
    count = _item_split(settings, results, matrix_of, matrix, varying)
    if settings.trait_count in ("split", "seed_split"):
        count["fallback"] = "items only: fewer than two seeds per source, so training noise is not measured"
    return count


SPLITS = 20  # random halvings of the items for the split-half trait count


def _item_split(settings: Analysis, results: Results, matrix_of, matrix: pd.DataFrame,
                varying: np.ndarray) -> dict[str, Any]:
    """The split-half choice: the matrix rebuilt from two halves of every target's items,
    SPLITS times."""
    rng = np.random.default_rng(settings.seed)
    def matrix_on(index: dict[str, np.ndarray]) -> np.ndarray:
        cells = cells_on_items(results.cells, results.scores, index)
        return matrix_of(cells).reindex(index=matrix.index, columns=matrix.columns).to_numpy(float)

    halves = []
    for _ in range(SPLITS):
        orders = {target: rng.permutation(scores.n_items) for target, scores in results.scores.items()}
        halves.append((matrix_on({t: o[: len(o) // 2] for t, o in orders.items()}),
                       matrix_on({t: o[len(o) // 2:] for t, o in orders.items()})))
    halves = [(a[:, varying], b[:, varying]) for a, b in halves]
    count, errors = split_half_count(halves, settings.standardize)
    return {"method": "split_half", "n_traits": count, "splits": SPLITS,
            "errors": [float(e) for e in errors]}
