"""How far to trust a forecast: split-conformal intervals from the errors of earlier forecasts.

A forecast cell's interval is its delta plus or minus the `level` quantile of absolute errors
(forecast minus measured) of other forecasts of the same kind: the other sources' cells of the
same study (`forecast.profiles`, and the benchmark's leave-one-source-out check), or the stored
forecasts of finished studies in the store (`Study.forecast`). Its coverage holds when the new
cells' errors are exchangeable with those; `benchmarks/forecast.py` checks it on finished studies.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

LEVEL = 0.95
MIN_ERRORS = 20  # fewer calibration errors than this give no interval: its quantile would be a guess


def conformal_width(errors, level: float = LEVEL) -> float | None:
    """The half-width covering a new error with probability >= `level` when it is exchangeable
    with `errors` (absolute values): their ceil((n + 1) level)-th smallest. None with fewer than
    MIN_ERRORS errors, or when that rank is past the largest (the interval would be unbounded)."""
    errors = np.sort(np.abs(np.asarray(errors, float)[~np.isnan(np.asarray(errors, float))]))
    rank = math.ceil((len(errors) + 1) * level)
    if len(errors) < MIN_ERRORS or rank > len(errors):
        return None
    return float(errors[rank - 1])


def stored_width(stored: pd.DataFrame, probe: str, budget: float, study: str, level: float = LEVEL) -> float | None:
    """The conformal half-width for a new forecast of `study` by `probe` at `budget`, from the
    stored forecasts (`Store.forecasts()`) of other studies whose cells were measured since."""
    same = stored[(stored["probe"] == probe) & np.isclose(stored["budget"], budget) & (stored["study"] != study)]
    return conformal_width((same["delta"] - same["measured"]).dropna(), level)
