"""Bootstrap stability of traits: resample items, rebuild the matrix, refit, compare loadings.

Items are resampled once per target and shared by every model (the comparison stays paired),
the trait count is held at the full-data solution's, and each refit's traits are matched to
the full-data ones (order and sign) before Tucker's congruence is taken. Congruence of 0.85 or
more is conventionally "fair" similarity, 0.95 or more "good" (Lorenzo-Seva & ten Berge 2006).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from traitlens.analysis.traits import match


def resampled_cells(cells: pd.DataFrame, items: dict[str, pd.DataFrame], rng: np.random.Generator) -> pd.DataFrame:
    scores = {}
    for target, table in items.items():
        draw = rng.integers(0, table.shape[1], table.shape[1])
        means = table.to_numpy()[:, draw].mean(axis=1)
        scores.update({(model, target): value for model, value in zip(table.index, means)})
    return cells.assign(score=[scores[(m, t)] for m, t in zip(cells["model"], cells["target"])])


def trait_stability(reference: pd.DataFrame, refit: Callable[[pd.DataFrame], pd.DataFrame],
                    cells: pd.DataFrame, items: dict[str, pd.DataFrame], samples: int, seed: int = 0
                    ) -> pd.DataFrame:
    """Per trait: median congruence with the reference loadings, the share of refits at or
    above 0.85, and how many refits succeeded. `refit(cells)` returns the loadings of a refit
    on resampled cells."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        try:
            loadings = refit(resampled_cells(cells, items, rng)).reindex(reference.index).fillna(0.0)
        except ValueError:  # a resample where too few targets vary: no traits to compare
            continue
        if loadings.shape[1] != reference.shape[1]:
            continue
        _, phi = match(reference.to_numpy(), loadings.to_numpy())
        values.append(phi)
    values = np.array(values) if values else np.full((1, reference.shape[1]), np.nan)
    return pd.DataFrame({"median_congruence": np.median(values, axis=0),
                         "share_at_least_0.85": (values >= 0.85).mean(axis=0),
                         "refits": len(values)}, index=reference.columns)
