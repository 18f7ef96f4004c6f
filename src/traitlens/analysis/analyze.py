"""The trait analysis of a study, from collected results to one JSON-ready summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from traitlens.analysis.collect import Results
from traitlens.analysis.effects import asymmetry, side_effects
from traitlens.analysis.stability import trait_stability
from traitlens.analysis.traits import ESTIMATORS, name_trait
from traitlens.analysis.uncertainty import cell_uncertainty
from traitlens.analysis.views import raw_matrix, seed_spread, view
from traitlens.config.schema import Analysis
from traitlens.errors import TraitlensError
from traitlens.execution.plan import BASE


@dataclass
class TraitAnalysis:
    raw: pd.DataFrame  # models (base + sources) x targets
    matrix: pd.DataFrame  # sources x targets, the chosen view, what the traits are fitted on
    uncertainty: pd.DataFrame  # per adapter cell: delta, interval, p, q, significant
    spread: pd.DataFrame  # sources x targets std across seeds
    loadings: pd.DataFrame  # targets x traits
    scores: pd.DataFrame  # sources x traits
    explained: pd.Series
    names: list[str]
    stability: pd.DataFrame
    side_effects: pd.DataFrame
    asymmetry: pd.DataFrame
    dropped: list[str]  # sources left out for missing cells, targets no adapter moves
    no_traits: str | None = None  # why there are no traits, when the matrix is too small or flat

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (NaN as null), as stored for the report."""
        return json_ready({
            "raw": self.raw.to_dict(), "matrix": self.matrix.to_dict(), "spread": self.spread.to_dict(),
            "uncertainty": self.uncertainty.to_dict("records"),
            "traits": [{"trait": trait, "name": name, "explained": float(self.explained[trait]),
                        "loadings": self.loadings[trait].to_dict(), "scores": self.scores[trait].to_dict(),
                        **self.stability.loc[trait].to_dict()}
                       for trait, name in zip(self.loadings.columns, self.names)],
            "side_effects": self.side_effects.to_dict("records"),
            "asymmetry": self.asymmetry.to_dict("records"), "dropped": self.dropped,
            "no_traits": self.no_traits,
        })


def json_ready(value: Any) -> Any:
    """Plain JSON values: NaN as null, numpy scalars as Python ones, keys as strings."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "item"):  # numpy scalars
        return json_ready(value.item())
    return value


def analyze(results: Results, settings: Analysis) -> TraitAnalysis:
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
    estimator = ESTIMATORS[settings.method]
    matrix_of = lambda cells_: view(raw_matrix(cells_), settings.view, results.diagonal, settings.mask_diagonal)
    model = lambda n_traits: estimator(n_traits, settings.rotation, random_state=settings.seed,
                                       standardize=settings.standardize)
    matrix = matrix_of(cells)
    uncertainty = cell_uncertainty(cells, results.items, settings.bootstrap_samples, settings.alpha, settings.seed)
    delta = view(complete, "delta")
    effects = {"raw": complete, "matrix": matrix, "uncertainty": uncertainty, "spread": seed_spread(cells),
               "side_effects": side_effects(uncertainty), "asymmetry": asymmetry(delta, results.diagonal)}
    try:
        if len(sources) < 3:
            raise ValueError(f"traits need at least three adapters scored on every target; "
                             f"{len(sources)} are ({', '.join(sources)})")
        traits = model(settings.n_traits).fit(matrix)
    except ValueError as exc:  # the effects still stand; the report shows them without traits
        return TraitAnalysis(
            **effects, loadings=pd.DataFrame(index=matrix.columns), scores=pd.DataFrame(index=matrix.index),
            explained=pd.Series(dtype=float), names=[], stability=pd.DataFrame(), dropped=dropped,
            no_traits=f"{exc}. Add sources or targets, or more items per target.")
    # Refits keep the full-data trait count, so their traits can be matched one to one.
    refit = lambda cells_: model(traits.n_traits_).fit(matrix_of(cells_)).loadings_
    stability = trait_stability(traits.loadings_, refit, cells, results.items, settings.bootstrap_samples, settings.seed)
    return TraitAnalysis(
        **effects, loadings=traits.loadings_, scores=traits.scores_,
        explained=traits.explained_variance_ratio_,
        names=[name_trait(traits.loadings_[t], results.abilities) for t in traits.loadings_.columns],
        stability=stability, dropped=dropped + traits.dropped_targets_)
