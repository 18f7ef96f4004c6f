"""Uncertainty of every cell's delta vs the base, from the items both were scored on.

Base and adapter answer the same items, so the comparison is paired: the bootstrap resamples
items (the same draw for both), and the test is McNemar's exact test when scores are 0/1 (a
sign-flip permutation test otherwise). p-values are corrected across the matrix with
Benjamini-Hochberg, since a study tests many cells at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from traitlens.execution.plan import BASE


def bootstrap_mean(values: np.ndarray, samples: int, alpha: float,
                   rng: np.random.Generator) -> tuple[float, float, float]:
    """(mean, low, high): the mean of item scores with a percentile interval over items."""
    values = np.asarray(values, float)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(values.mean()), float(low), float(high)


def paired_bootstrap(base: np.ndarray, adapter: np.ndarray, samples: int, alpha: float,
                     rng: np.random.Generator) -> tuple[float, float, float]:
    """(delta, low, high): mean adapter - base score with a percentile interval."""
    return bootstrap_mean(np.asarray(adapter, float) - np.asarray(base, float), samples, alpha, rng)


def score_intervals(items: dict[str, pd.DataFrame], samples: int = 1000, alpha: float = 0.05,
                    seed: int = 0) -> pd.DataFrame:
    """One row per cell (the base's too): its score with a percentile interval over items."""
    rng = np.random.default_rng(seed)
    rows = []
    for target, table in items.items():
        for model, scores in table.iterrows():
            scores = scores.dropna().to_numpy(float)
            mean, low, high = bootstrap_mean(scores, samples, alpha, rng)
            rows.append({"model": model, "target": target, "score": mean, "low": low, "high": high,
                         "n": len(scores)})
    return pd.DataFrame(rows, columns=["model", "target", "score", "low", "high", "n"])


def paired_test(base: np.ndarray, adapter: np.ndarray, rng: np.random.Generator,
                permutations: int = 10_000) -> float:
    """Two-sided p-value of "adapter and base score the same on these items"."""
    base, adapter = np.asarray(base, float), np.asarray(adapter, float)
    if np.isin(base, (0, 1)).all() and np.isin(adapter, (0, 1)).all():
        gained = int(((adapter == 1) & (base == 0)).sum())
        lost = int(((adapter == 0) & (base == 1)).sum())
        if gained + lost == 0:
            return 1.0
        return float(stats.binomtest(gained, gained + lost, 0.5).pvalue)
    differences = adapter - base
    if not differences.any():
        return 1.0
    signs = rng.choice((-1.0, 1.0), size=(permutations, len(differences)))
    null = np.abs((signs * differences).mean(axis=1))
    return float((1 + (null >= abs(differences.mean()) - 1e-12).sum()) / (permutations + 1))


def cell_uncertainty(cells: pd.DataFrame, items: dict[str, pd.DataFrame], samples: int = 1000,
                     alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """One row per adapter cell: delta vs base, its interval, p, BH q, significant."""
    rng = np.random.default_rng(seed)
    rows = []
    for cell in cells[cells["model"] != BASE].itertuples():
        table = items[cell.target]
        if BASE not in table.index:
            continue  # no base cell yet: nothing to compare with
        base, adapter = table.loc[BASE].to_numpy(), table.loc[cell.model].to_numpy()
        delta, low, high = paired_bootstrap(base, adapter, samples, alpha, rng)
        rows.append({"model": cell.model, "source": cell.source, "seed": cell.seed, "target": cell.target,
                     "delta": delta, "low": low, "high": high, "p": paired_test(base, adapter, rng)})
    out = pd.DataFrame(rows, columns=["model", "source", "seed", "target", "delta", "low", "high", "p"])
    out["q"] = stats.false_discovery_control(out["p"]) if len(out) else []
    out["significant"] = out["q"] < alpha
    return out
