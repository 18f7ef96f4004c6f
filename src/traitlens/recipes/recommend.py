"""A new dataset's predicted transfer (`Study.recommend`, `traitlens recommend`), read top to
bottom: the matrix to learn from (measured cells, the rest filled from the stored forecast in
delta units of the largest budget), the new dataset prepared beside the study's, every dataset
profiled, and a ridge over pair features ranking the new dataset's pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from traitlens.analysis.explain import recommend as rank
from traitlens.analysis.results import Results
from traitlens.config.jobs import Plan
from traitlens.config.load import load_spec
from traitlens.config.schema import Source, Target
from traitlens.data.load import prepare, prepare_study
from traitlens.errors import TraitlensError
from traitlens.execution.local import default_scorer
from traitlens.recipes.features import study_features
from traitlens.recipes.workspace import Workspace

DELTA_PROBES = ("short", "combined")  # forecasts in delta units (the gradient probe's is a cosine)


@dataclass
class Recommendation:
    """A new dataset's predicted transfer (`Study.recommend`): `ranking` of the study's
    sources (for a new target) or targets (for a new source), best first; `quality`: the
    Spearman correlation of predicted and observed transfer with each existing one held out.

    Example:
        >>> rec = study.recommend(target="new-target.yaml")
        >>> rec.ranking.head(3)
    """

    name: str
    by: str  # "target" or "source": which side the new dataset is on
    ranking: pd.DataFrame
    quality: pd.DataFrame
    forecast_cells: int = 0  # cells of the fitted matrix that came from a stored forecast, not a measurement


def transfer_for_recommending(results: Results | None, stored: pd.DataFrame, file: str) -> tuple[pd.DataFrame, int]:
    """The measured delta matrix with its missing cells filled from the stored forecast in
    delta units (short or combined) of the largest budget, and how many cells that filled."""
    measured = results.matrix("delta") if results is not None and results.cells["source"].notna().any() else None
    stored = stored[stored["probe"].isin(DELTA_PROBES)]
    if stored.empty:
        if measured is None:
            raise TraitlensError(f"no adapter cells and no forecast yet: run `traitlens run {file}` or "
                                 f"`traitlens forecast {file}` first.")
        return measured, 0
    # The largest budget; at equal budgets the combination, fitted on measured cells.
    probe, budget = max(zip(stored["probe"], stored["budget"]), key=lambda pair: (pair[1], pair[0] == "combined"))
    latest = stored[(stored["probe"] == probe) & (stored["budget"] == budget)]
    forecast = latest.pivot(index="source", columns="target", values="delta").rename_axis(index=None, columns=None)
    if measured is None:
        return forecast, int(forecast.notna().sum().sum())
    filled = measured.combine_first(forecast)
    return filled, int((filled.notna() & measured.reindex_like(filled).isna()).sum().sum())


def recommend_for(ws: Workspace, target: str | Path | Target | None, source: str | Path | Source | None
                  ) -> Recommendation:
    """`Study.recommend`: exactly one of `target` or `source`, ranked on the measured matrix
    with its missing cells filled from the stored forecast."""
    if (target is None) == (source is None):
        raise TraitlensError("give exactly one of target (a target spec) or source (a source spec).")
    by, given = ("target", target) if target is not None else ("source", source)
    results = ws.results() if ws.store() is not None else None
    matrix, filled = transfer_for_recommending(results, ws.forecasts(), ws.file)
    return recommend(ws.plan(), given, by, matrix, filled)


def recommend(plan: Plan, given: str | Path | Target | Source, by: str, matrix: pd.DataFrame,
              forecast_cells: int) -> Recommendation:
    """Rank the pairs of the new dataset `given` (a spec or a YAML file holding one; `by`:
    "target" or "source") by transfer predicted from `matrix`. Loads the base model and an
    embedding model to profile every dataset."""
    kind = Target if by == "target" else Source
    spec = given if isinstance(given, kind) else load_spec(given, kind)
    sources, targets = prepare_study(plan.study)
    side = targets if by == "target" else sources
    if spec.name in side:
        raise TraitlensError(f"{by} {spec.name!r} is already in the study; give the new one another name.")
    side[spec.name] = prepare(spec, f"{by} {spec.name}")
    scorer = default_scorer(plan.eval_jobs[0].settings, plan.placements["features"])
    features = study_features(plan.study, sources, targets, scorer, extra=[spec])
    ranking, quality = rank(features.pairs(matrix), spec.name, by)
    return Recommendation(spec.name, by, ranking, quality, forecast_cells)
