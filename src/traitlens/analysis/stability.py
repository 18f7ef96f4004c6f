"""How stable the traits are: refits on resampled items, without each source, and on resampled
sources, each compared with the full-data loadings.

Item resampling: one draw of items per target, shared by every model (the comparison stays
paired); the matrix is rebuilt from the drawn items. Source resampling: leave-one-source-out
and a bootstrap over the matrix's rows. The trait count is held at the full-data solution's,
and each refit's traits are matched to the full-data ones (order and sign) before Tucker's
congruence is taken. Congruence of 0.85 or more is conventionally "fair" similarity, 0.95 or
more "good" (Lorenzo-Seva & ten Berge 2006), but with few targets chance alone reaches such
values: every figure here stands beside its null (`analysis.traits.congruence_null`: traits
fitted on the matrix with each column permuted across sources, matched the same way), and a
trait is called stable only above the null's 95th percentile.

Seeds (`seed_stability`): where every source has two or more seeds, traits fitted on each
seed's adapters alone are matched to each other: would a retrained study find these traits?
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from traitlens.analysis.metrics import ItemScores
from traitlens.analysis.traits import congruence, congruence_null, match


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
    null = congruence_null(lambda m: refit_matrix(_frame(m, matrix)).reindex(reference.index).fillna(0.0)
                           .to_numpy(), [matrix.to_numpy(float)], reference.to_numpy(), samples=200, seed=seed)
    null_95 = np.nanquantile(null, 0.95, axis=0)
    return pd.DataFrame({
        "null_median": np.nanmedian(null, axis=0), "null_95": null_95,
        "share_above_null": (items > null_95).mean(axis=0),
        "source_share_above_null": (sources > null_95).mean(axis=0),
        "median_congruence": np.median(items, axis=0), "share_at_least_0.85": (items >= 0.85).mean(axis=0),
        "refits": _count(items),
        "loso_min": np.min(leave_one_out, axis=0), "loso_median": np.median(leave_one_out, axis=0),
        "source_median": np.median(sources, axis=0), "source_share_at_least_0.85": (sources >= 0.85).mean(axis=0),
        "source_refits": _count(sources)}, index=reference.columns)


def seed_stability(reference: pd.DataFrame, refit_matrix: Callable[[pd.DataFrame], pd.DataFrame],
                   by_seed: dict[int, pd.DataFrame], samples: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per trait (in `reference`'s order): the median congruence between the traits fitted on
    two seeds' matrices (each pair of seeds; each fit matched to `reference`, so a trait is
    compared with the same trait), the same congruence when every seed matrix has its columns
    permuted across sources (the null for this shape: median and 95th percentile), and the
    verdict: "above chance" or "indistinguishable from chance"."""
    rng = np.random.default_rng(seed)
    like = next(iter(by_seed.values()))

    def across(matrices: list[np.ndarray]) -> np.ndarray:
        fits = []
        for m in matrices:
            try:
                loadings = refit_matrix(_frame(m, like)).reindex(reference.index).fillna(0.0).to_numpy()
            except ValueError:  # a matrix too flat to fit
                continue
            if loadings.shape[1] == reference.shape[1]:
                fits.append(match(reference.to_numpy(), loadings)[0])
        pairs = [np.abs(np.diag(congruence(a, b))) for i, a in enumerate(fits) for b in fits[i + 1:]]
        return np.median(pairs, axis=0) if pairs else np.full(reference.shape[1], np.nan)

    matrices = [m.to_numpy(float) for m in by_seed.values()]
    observed = across(matrices)
    null = np.array([across([rng.permuted(m, axis=0) for m in matrices]) for _ in range(samples)])
    null_95 = np.nanquantile(null, 0.95, axis=0)
    return pd.DataFrame({"seed_congruence": observed, "seed_null_median": np.nanmedian(null, axis=0),
                         "seed_null_95": null_95, "seeds": len(matrices),
                         "across_seeds": np.where(observed > null_95, "above chance",
                                                  "indistinguishable from chance")},
                        index=reference.columns)


def _frame(values: np.ndarray, like: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(values, index=like.index, columns=like.columns)


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
