"""Forecasts fitted on measured cells: transfer predicted from the datasets' features (#23's
profile-only and similarity-only baselines, no training) and, given probe matrices, the
combination of probes and features.

Each source's row is forecast as if it were new: a ridge fitted on the other sources' measured
cells, from the target (its mean delta) plus the chosen feature groups' pair features and any
probe matrices (`extra`: a probe's forecast or affinity per cell, which the ridge puts in delta
units). The interval
around a forecast is split-conformal (`forecast.calibrate`) on the other sources' held-out
errors, so its coverage can be checked on a finished study.

The explanation's own held-out ranking (`analysis.explain`) answers a narrower question: which
source is best for a new target. This one forecasts every cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from traitlens.analysis.features import FEATURES, Features
from traitlens.forecast.calibrate import conformal_width

GROUPS = ("profile", "similarity", "hidden", "quality")


@dataclass(frozen=True)
class Forecast:
    """Sources x targets: the forecast deltas and their interval bounds."""

    delta: pd.DataFrame
    low: pd.DataFrame
    high: pd.DataFrame


def feature_forecast(features: Features, measured: pd.DataFrame, groups: tuple[str, ...],
                     alpha: float = 1.0, level: float = 0.95, extra: dict[str, pd.DataFrame] | None = None
                     ) -> Forecast:
    """Every source's row forecast from the other sources' cells, the `groups`' features and
    the `extra` probe matrices (see the module docstring). `measured`: sources x targets deltas
    (NaN where masked)."""
    from sklearn.linear_model import Ridge

    pairs = features.pairs(measured)
    columns = [c for c in pairs.columns if ":" in c and c.split(":", 1)[1] in
               {name for group in groups for name in FEATURES[group]}]
    for name, matrix in (extra or {}).items():
        cells = matrix.rename_axis(index="source", columns="target").stack(future_stack=True).rename(name)
        pairs = pairs.join(cells, on=["source", "target"])
        columns.append(name)
    targets = pd.get_dummies(pairs["target"], dtype=float)
    x = np.hstack([targets.to_numpy(), pairs[columns].to_numpy(float)])
    forecast = pd.Series(np.nan, index=pairs.index)
    for source in measured.index:
        held = (pairs["source"] == source).to_numpy()
        train = ~held & pairs["delta"].notna().to_numpy()
        features_in = x[train]
        mean, std = np.nanmean(features_in, axis=0), np.nanstd(features_in, axis=0) + 1e-9
        mean[: targets.shape[1]], std[: targets.shape[1]] = 0, 1  # target indicators stay 0/1
        scale = lambda rows: np.nan_to_num((rows - mean) / std)
        model = Ridge(alpha=alpha).fit(scale(features_in), pairs.loc[train, "delta"].to_numpy())
        forecast[held] = model.predict(scale(x[held]))
    frame = pairs.assign(forecast=forecast.to_numpy(), error=(forecast - pairs["delta"]).abs().to_numpy())
    width = {source: conformal_width(frame.loc[frame["source"] != source, "error"], level)
             for source in measured.index}
    frame["width"] = frame["source"].map(width).astype(float)
    grid = lambda column: frame.pivot(index="source", columns="target", values=column).reindex_like(measured)
    delta = grid("forecast")
    return Forecast(delta, delta - grid("width"), delta + grid("width"))
