"""How good a forecast of a transfer matrix is, against the measured one: what
`benchmarks/forecast.py` reports for every probe kind and budget (#23).

- Spearman correlation between forecast and measured deltas, over all cells and per target.
- Top-1 regret: per target, the measured delta of the best source minus that of the source the
  forecast ranks first (0 when the forecast picks the best one).
- Trait congruence: PCA traits fitted on both matrices with the same settings and trait count,
  matched by Tucker congruence.
- Interval coverage: the share of measured cells inside the forecast's intervals, where it
  has them. Coverage alone shows little (wide intervals around zeros cover too), so the mean
  interval width and the interval (Winkler) score stand beside it: width plus 2/alpha times
  how far a measured cell falls outside, averaged; lower is better.
- `ceiling`: the most a forecast can agree with a matrix that is itself a mean of noisy seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from traitlens.analysis.traits import PCATraits, assignment, congruence_null


@dataclass(frozen=True)
class ForecastQuality:
    spearman: float  # over every cell both matrices have
    per_target: pd.DataFrame  # target, spearman, regret
    congruence: pd.Series  # per measured trait: Tucker congruence of its matched forecast trait
    coverage: float | None  # share of measured cells inside [low, high] where it has them; None without any
    width: float | None = None  # mean interval width over those cells
    winkler: float | None = None  # mean interval score (Winkler) at `alpha`: lower is better
    congruence_null_95: pd.Series | None = None  # per trait: what a forecast of this shape with no structure reaches

    @property
    def regret(self) -> float:
        return float(self.per_target["regret"].mean())


def forecast_quality(forecast: pd.DataFrame, measured: pd.DataFrame, n_traits: int,
                     low: pd.DataFrame | None = None, high: pd.DataFrame | None = None,
                     rotation: str = "varimax", standardize: bool = True, alpha: float = 0.05) -> ForecastQuality:
    """`forecast`, `measured` (and the interval bounds `low`, `high`): sources x targets of
    deltas. Cells missing from either matrix (a masked diagonal) are left out of the
    correlations and the regret; the traits treat them as the fit does. `n_traits` 0: no trait
    congruence."""
    forecast = forecast.reindex(index=measured.index, columns=measured.columns)
    both = forecast.notna() & measured.notna()
    cells = both.to_numpy()
    spearman = _spearman(forecast.to_numpy()[cells], measured.to_numpy()[cells])
    rows = []
    for target in measured.columns:
        keep = both[target]
        f, m = forecast.loc[keep, target], measured.loc[keep, target]
        rows.append({"target": target,
                     "spearman": _spearman(f.to_numpy(), m.to_numpy()) if keep.sum() > 2 else np.nan,
                     "regret": float(m.max() - m[f.idxmax()]) if keep.any() else np.nan})
    congruence = null_95 = pd.Series(dtype=float)
    if n_traits:  # 0: the measured matrix has no traits (too few sources), so none to compare
        fit = lambda matrix: PCATraits(n_traits, rotation, standardize=standardize).fit(matrix).loadings_
        try:
            ours, theirs = fit(measured), fit(forecast)
        except ValueError:  # a forecast that does not vary (all zeros) has no traits to compare
            ours = theirs = None
        if ours is not None:
            shared = ours.index.intersection(theirs.index)
            _, _, phi = assignment(ours.loc[shared].to_numpy(), theirs.loc[shared].to_numpy())
            congruence = pd.Series(phi, index=ours.columns[:len(phi)])
            # Chance: the forecast's columns each permuted across sources, fitted and matched alike.
            refit = lambda m: fit(pd.DataFrame(m, index=forecast.index, columns=forecast.columns)).reindex(  # noqa: E731
                shared).fillna(0.0).to_numpy()
            null = congruence_null(refit, [forecast.to_numpy(float)], ours.loc[shared].to_numpy(), samples=100)
            null_95 = pd.Series(np.nanquantile(null, 0.95, axis=0)[:len(phi)], index=congruence.index)
    coverage = width = winkler = None
    if low is not None and high is not None:
        low, high = low.reindex_like(measured), high.reindex_like(measured)
        inside = ((low <= measured) & (measured <= high)).to_numpy()
        bounded = cells & (low.notna() & high.notna()).to_numpy()  # too few errors calibrate no interval
        if bounded.any():
            lo, hi, y = (frame.to_numpy(float)[bounded] for frame in (low, high, measured))
            coverage, width = float(inside[bounded].mean()), float((hi - lo).mean())
            winkler = float((hi - lo + 2 / alpha * (np.maximum(lo - y, 0) + np.maximum(y - hi, 0))).mean())
    return ForecastQuality(float(spearman), pd.DataFrame(rows), congruence, coverage, width, winkler,
                           null_95)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho, NaN where either side is constant (a forecast of zeros ranks nothing)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def ceiling(seed_agreement: float, seeds: int) -> float:
    """The correlation a perfect forecast (each source's true effect) can reach with a matrix
    averaged over `seeds` adapters per source, when two single seeds agree at `seed_agreement`:
    the square root of the mean's reliability, sqrt(S r / (1 + (S - 1) r)) (Spearman-Brown).
    One seed against another is not the ceiling of a forecast scored on their mean."""
    r = max(seed_agreement, 0.0)
    return float(np.sqrt(seeds * r / (1 + (seeds - 1) * r))) if r > 0 else 0.0
