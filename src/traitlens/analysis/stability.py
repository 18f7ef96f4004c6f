"""How stable the traits are: refits on resampled items, without each source, and on resampled
sources, each compared with the full-data loadings.

Item resampling: one draw of items per target, shared by every model (the comparison stays
paired); the matrix is rebuilt from the drawn items. Source resampling: leave-one-source-out
and a bootstrap over the matrix's rows. The trait count is held at the full-data solution's,
and each refit's traits are matched to the full-data ones (order and sign) before Tucker's
congruence is taken. Congruence of 0.85 or more is conventionally "fair" similarity, 0.95 or
more "good" (Lorenzo-Seva & ten Berge 2006).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from traitlens.analysis.metrics import ItemScores
from traitlens.analysis.traits import match


def cells_on_items(cells: pd.DataFrame, scores: dict[str, ItemScores], index: dict[str, np.ndarray]) -> pd.DataFrame:
    """`cells` with every score recomputed on `index[target]`, the same items for every model
    of a target (a bootstrap draw, or one half of the items)."""
    values = {}
    for target, table in scores.items():
        drawn = table.score(list(range(len(table.models))), index[target])[:, 0]
        values.update({(model, target): value for model, value in zip(table.models, drawn)})
    return cells.assign(score=[values[(m, t)] for m, t in zip(cells["model"], cells["target"])])


def resampled_cells(cells: pd.DataFrame, scores: dict[str, ItemScores], rng: np.random.Generator) -> pd.DataFrame:
    """`cells` with every score recomputed on one bootstrap draw of each target's items."""
    return cells_on_items(cells, scores, {target: rng.integers(0, table.n_items, table.n_items)
                                          for target, table in scores.items()})


def trait_stability(reference: pd.DataFrame, refit_cells: Callable[[pd.DataFrame], pd.DataFrame],
                    refit_matrix: Callable[[pd.DataFrame], pd.DataFrame], cells: pd.DataFrame,
                    matrix: pd.DataFrame, scores: dict[str, ItemScores], samples: int, seed: int = 0
                    ) -> pd.DataFrame:
    """Per trait: over item resamples, the median congruence with the reference loadings, the
    share of refits at or above 0.85 and how many refits succeeded; leaving each source out,
    the lowest and median congruence; over source resamples, the median congruence and share at
    or above 0.85. `refit_cells(cells)` and `refit_matrix(matrix)` return a refit's loadings."""
    rng = np.random.default_rng(seed)
    items = _congruences(reference, (lambda: refit_cells(resampled_cells(cells, scores, rng))
                                     for _ in range(samples)))
    leave_one_out = _congruences(reference, (lambda s=s: refit_matrix(matrix.drop(index=s)) for s in matrix.index))
    source_draws = (lambda: refit_matrix(matrix.iloc[rng.integers(0, len(matrix), len(matrix))])
                    for _ in range(samples))
    sources = _congruences(reference, source_draws)
    return pd.DataFrame({
        "median_congruence": np.median(items, axis=0), "share_at_least_0.85": (items >= 0.85).mean(axis=0),
        "refits": _count(items),
        "loso_min": np.min(leave_one_out, axis=0), "loso_median": np.median(leave_one_out, axis=0),
        "source_median": np.median(sources, axis=0), "source_share_at_least_0.85": (sources >= 0.85).mean(axis=0),
        "source_refits": _count(sources)}, index=reference.columns)


def _congruences(reference: pd.DataFrame, refits) -> np.ndarray:
    """Congruence of each refit's matched traits with the reference (refits x traits); refits
    that fail (too few varying targets) or find another trait count are skipped."""
    values = []
    for refit in refits:
        try:
            loadings = refit().reindex(reference.index).fillna(0.0)
        except ValueError:  # a resample where too few targets or sources vary: no traits to compare
            continue
        if loadings.shape[1] == reference.shape[1]:
            values.append(match(reference.to_numpy(), loadings.to_numpy())[1])
    return np.array(values) if values else np.full((1, reference.shape[1]), np.nan)


def _count(values: np.ndarray) -> int:
    return 0 if np.isnan(values).all() else len(values)
