"""Side effects (significant negative transfer) and asymmetry between datasets that are used
both as a source and as a target (A -> B vs B -> A)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from traitlens.analysis.uncertainty import bootstrap_p, delta_draws

if TYPE_CHECKING:
    from traitlens.analysis.results import Results

ASYMMETRY_COLUMNS = ["a", "b", "a_to_b", "b_to_a", "difference", "low", "high", "p"]


def side_effects(uncertainty: pd.DataFrame) -> pd.DataFrame:
    """Cells where an adapter is significantly worse than the base, worst first."""
    hurt = uncertainty[uncertainty["significant"] & (uncertainty["delta"] < 0)]
    return hurt.sort_values("delta").reset_index(drop=True)


def asymmetry(delta: pd.DataFrame, diagonal: set[tuple[str, str]], results: Results | None = None,
              samples: int = 1000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """For each pair of sources A, B whose own datasets are also targets: delta(A on B's
    target) against delta(B on A's target), and their difference; with `results`, the
    difference's bootstrap interval and two-sided p (items of the two targets resampled
    independently, seeds too where a source has several)."""
    home = {}
    for source, target in sorted(diagonal):
        home.setdefault(source, target)  # a source's own dataset, as a target
    rng = np.random.default_rng(seed)
    rows = []
    sources = [s for s in delta.index if s in home]
    for i, a in enumerate(sources):
        for b in sources[i + 1:]:
            if home[a] == home[b]:  # variants of one dataset (e.g. balanced vs skewed): no direction
                continue
            forward, backward = delta.loc[a, home[b]], delta.loc[b, home[a]]
            row = {"a": a, "b": b, "a_to_b": forward, "b_to_a": backward, "difference": forward - backward,
                   "low": np.nan, "high": np.nan, "p": np.nan}
            if results is not None:
                boot = (delta_draws(results.scores[home[b]], _models(results, a, home[b]), samples, rng)
                        - delta_draws(results.scores[home[a]], _models(results, b, home[a]), samples, rng))
                low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
                p = bootstrap_p(boot)
                row |= {"low": float(low), "high": float(high), "p": p}
            rows.append(row)
    return pd.DataFrame(rows, columns=ASYMMETRY_COLUMNS)


def _models(results: Results, source: str, target: str) -> list[str]:
    cells = results.cells
    return list(cells[(cells["source"] == source) & (cells["target"] == target)]["model"])
