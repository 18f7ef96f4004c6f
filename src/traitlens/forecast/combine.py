"""The combination (#23): a study's cells forecast from its cheap probes and its pairs' hidden
statistics, by a ridge learned on the cells of finished studies in the store.

A finished study has, for each cell, the probes' stored forecasts and the measured delta; a new
study has only the probes. Studies differ in targets (and metrics), so no column names a
target: each probe enters as its value and its deviation from its target's mean over sources
(the target's level and the source's rank within it), and each hidden statistic
(`analysis.features`: label overlap, format and task match, prior divergence, length ratio) as
its deviation from its target's mean. The interval is split-conformal (`forecast.calibrate`)
on the training cells' errors, each source of each finished study left out in turn.
"""

from __future__ import annotations

from itertools import product

import numpy as np
import pandas as pd

from traitlens.analysis.features import FEATURES, Features
from traitlens.errors import TraitlensError
from traitlens.forecast.calibrate import LEVEL, conformal_width
from traitlens.forecast.profiles import Forecast


def cell_table(probes: dict[str, pd.DataFrame], features: Features | None = None,
               measured: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell the probes cover: source, target, the columns the combination reads
    (see the module docstring) and `delta`, measured or NaN. `probes`: name -> sources x targets."""
    cells = pd.concat({name: matrix.rename_axis(index="source", columns="target").stack(future_stack=True)
                       for name, matrix in probes.items()}, axis=1).dropna(how="all").reset_index()
    by_target = lambda column: cells[column] - cells.groupby("target")[column].transform("mean")
    for name in probes:
        cells[f"{name}:deviation"] = by_target(name)
    if features is not None:
        hidden = features.groups["hidden"][FEATURES["hidden"]].rename(columns=lambda c: f"hidden:{c}")
        cells = cells.join(hidden, on=["source", "target"])
        for column in hidden.columns:
            cells[column] = by_target(column)
    delta = pd.Series(np.nan, index=cells.index)
    if measured is not None:
        stacked = measured.rename_axis(index="source", columns="target").stack(future_stack=True).rename("delta")
        delta = cells.join(stacked, on=["source", "target"])["delta"]
    return cells.assign(delta=delta.to_numpy())


def combine(finished: dict[str, pd.DataFrame], new: pd.DataFrame, alpha: float = 1.0, level: float = LEVEL
            ) -> Forecast:
    """`new`'s cells forecast by a ridge fitted on the measured cells of the `finished` studies'
    tables (study name -> `cell_table`), on the columns all of them share with `new`."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train = pd.concat(finished, names=["study", None]).reset_index(level="study").dropna(subset=["delta"])
    columns = [c for c in new.columns if c not in ("source", "target", "delta") and c in train.columns
               and train[c].notna().any()]
    if len(train) < 2 or not columns:
        raise TraitlensError("no finished study in the store has measured cells and the same probes as this one; "
                             "finish a study forecast with the same probes, or forecast with one probe kind.")
    model = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
    x = train[columns].fillna(0).to_numpy(float)
    model.fit(x, train["delta"])
    groups = train["study"] + "\0" + train["source"]
    width = None
    if groups.nunique() > 1:
        held = cross_val_predict(model, x, train["delta"], groups=groups, cv=LeaveOneGroupOut())
        width = conformal_width(held - train["delta"].to_numpy(), level)
    cells = new.assign(forecast=model.predict(new[columns].fillna(0).to_numpy(float)))
    delta = cells.pivot(index="source", columns="target", values="forecast").rename_axis(index=None, columns=None)
    if width is None:
        none = pd.DataFrame(np.nan, index=delta.index, columns=delta.columns)
        return Forecast(delta, none, none.copy())
    return Forecast(delta, delta - width, delta + width)


COMPONENTS = ("short", "gradient")  # the probe kinds a combination reads


def components(stored: pd.DataFrame, study: str, budget: float) -> list[tuple[str, float, float]]:
    """The stored probes of `study` the combination reads: (probe, budget, spent), at most one
    per kind, each also stored and measured for some other study, their spends summing to at most
    `budget`; as many kinds as fit, then as much spend. `stored`: `Store.forecasts()`."""
    measured = stored[stored["measured"].notna() & (stored["study"] != study)]
    known = set(zip(measured["probe"], measured["budget"].round(6)))
    mine = stored[(stored["study"] == study) & stored["probe"].isin(COMPONENTS)].drop_duplicates(
        ["probe", "budget"])
    options = {kind: [None] + [(kind, b, s) for b, s in zip(rows["budget"], rows["spent"])
                               if (kind, round(b, 6)) in known]
               for kind, rows in mine.groupby("probe")}
    spend = lambda chosen: sum(spent for *_, spent in chosen)
    fits = [chosen for chosen in (tuple(filter(None, choice)) for choice in product(*options.values()))
            if chosen and spend(chosen) <= budget]
    if not fits:
        have = ", ".join(f"{p} {b:g} (spent {s:.3f})" for p, b, s in
                         mine[["probe", "budget", "spent"]].itertuples(index=False)) or "none"
        alone = "" if known else ("no other study in this store has finished after a forecast, and the "
                                  "combination learns from those (studies share a store through `store:`). ")
        raise TraitlensError(
            f"{alone}The combination reads this study's stored probe forecasts that finished studies in the store also "
            f"have (same probe and budget), within --budget {budget:g}; this study's: {have}. Forecast with "
            f"--probe gradient and --probe short at a budget a finished study was forecast at, then combine.")
    return list(max(fits, key=lambda chosen: (len(chosen), spend(chosen))))


def stored_table(stored: pd.DataFrame, study: str, chosen: list[tuple[str, float, float]],
                 features: Features | None = None) -> pd.DataFrame | None:
    """`cell_table` of `study` from its stored forecasts by the `chosen` probes (`components`),
    with the measured deltas stored beside them; None when it lacks one of them."""
    rows = stored[stored["study"] == study]
    probes, measured = {}, None
    for probe, budget, _ in chosen:
        cells = rows[(rows["probe"] == probe) & np.isclose(rows["budget"], budget)]
        if cells.empty:
            return None
        grid = lambda column: cells.pivot(index="source", columns="target", values=column)
        probes[probe] = grid("delta")
        if cells["measured"].notna().any():
            measured = grid("measured")
    return cell_table(probes, features, measured)
