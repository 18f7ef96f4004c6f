"""How reliable is this matrix: variance components of a target's cells (a G-study) and the
reliability other designs would reach (a D-study).

A cell is a source's delta vs the base on a target, averaged over the source's trained adapters
(seeds) and the target's items. Both are random draws: another training run gives another
adapter, another sample of the task gives other items. Per target, the per-item deltas
y[source, seed, item] (each adapter's item score minus the base's on the same item) follow the
crossed design (seed:source) x item, with every effect random:

    y = mu + source + seed:source + item + source x item + residual (seed x item within source)

and the ANOVA (expected mean squares, Brennan 2001, ch. 3) estimates each variance. Their
intervals come from a parametric bootstrap of the mean squares (each MS redrawn as MS x
chi2(df) / df, the normal-theory sampling distribution), so a component estimated below zero
gets an interval too; estimates are truncated at 0 as usual.

From the components:
- `reliability`: how well the study's ranking of sources on the target would be reproduced by a
  study with new adapters (seeds) *and* new items, sigma2_source over itself plus the error
  sigma2_seed/R + sigma2_source_item/I + sigma2_residual/(R I);
- `seed_reliability`: the same with the items held fixed (a retrained study scored on these
  items): sigma2_source_item/I counts as signal, not error. Which targets' rankings a retrained
  study would not reproduce is read off this one;
- with two or more seeds, the observed agreement of disjoint seed halves (`split_correlation`,
  Pearson across sources) and its Spearman-Brown step-up to the study's seed count
  (`split_reliability`), a check on the model that assumes nothing about it;
- `seed_f`: MS_seed / MS_residual, how many times more adapters of one source differ than item
  sampling predicts (1 when training noise is nil), with its F-test p.

Only metrics with a value per item (accuracy, calibrated accuracy, margin, calibrated margin)
decompose this way; balanced accuracy and macro-F1 are whole-target statistics and get a row
saying so. Sources masked on a target (their own dataset, when `mask_diagonal`) are left out
of that target's components. The design must be balanced: where sources have different seed
counts, each source's first R seeds are used, R the smallest count.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from traitlens.config.schema import BASE

if TYPE_CHECKING:
    from traitlens.analysis.results import Results

COMPONENTS = ("source", "seed", "item", "source_item", "residual")
DRAWS = 2000  # parametric-bootstrap draws of the mean squares
SEED_GRID = (1, 2, 3, 4, 6, 8)
ITEM_GRID = (50, 100, 200, 300, 500, 1000)


@dataclass(frozen=True)
class Deltas:
    """One target's per-item deltas vs the base: values[source, seed, item]."""

    target: str
    values: np.ndarray


def target_deltas(results: Results, target: str) -> Deltas | None:
    """The balanced (seed:source) x item array of one target, or None when its metric has no
    per-item values, the base is missing, or fewer than two sources are scored there."""
    scores = results.scores.get(target)
    if scores is None or scores.values is None or BASE not in scores.models:
        return None
    masked = results.diagonal if results.settings.mask_diagonal else set()
    adapters = results.cells[(results.cells["target"] == target) & results.cells["source"].notna()]
    seeds = {source: sorted(group["seed"].astype(int))
             for source, group in adapters.groupby("source", sort=False) if (source, target) not in masked}
    if len(seeds) < 2:
        return None
    r = min(len(s) for s in seeds.values())
    models = adapters.set_index(["source", adapters["seed"].astype(int)])["model"]
    base = scores.values[scores.row(BASE)]
    values = np.array([[scores.values[scores.row(models[(source, seed)])] - base for seed in kept[:r]]
                       for source, kept in seeds.items()])
    return Deltas(target, values)


def mean_squares(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(MS, df) of the effects s, r:s, i, si, e of a balanced S x R x I array."""
    s_, r_, i_ = y.shape
    grand = y.mean()
    source = y.mean(axis=(1, 2))
    seed = y.mean(axis=2)
    item = y.mean(axis=(0, 1))
    source_item = y.mean(axis=1)
    sums = np.array([
        r_ * i_ * ((source - grand) ** 2).sum(),
        i_ * ((seed - source[:, None]) ** 2).sum(),
        s_ * r_ * ((item - grand) ** 2).sum(),
        r_ * ((source_item - source[:, None] - item[None, :] + grand) ** 2).sum(),
        ((y - seed[:, :, None] - source_item[:, None, :] + source[:, None, None]) ** 2).sum()])
    df = np.array([s_ - 1, s_ * (r_ - 1), i_ - 1, (s_ - 1) * (i_ - 1), s_ * (r_ - 1) * (i_ - 1)], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(df > 0, sums / np.maximum(df, 1), np.nan), df


def components(ms: np.ndarray, s_: int, r_: int, i_: int) -> np.ndarray:
    """Variance components (source, seed, item, source_item, residual) from mean squares
    (..., 5), by their expected values; with one seed the seed and residual variances cannot
    be told apart and the seed's is NaN."""
    ms_s, ms_r, ms_i, ms_si, ms_e = np.moveaxis(ms, -1, 0)
    if r_ < 2:  # MS_si then holds seed x item and residual together
        ms_e, ms_r = ms_si, np.full_like(ms_s, np.nan)
        source_item = np.zeros_like(ms_s)
        source = (ms_s - ms_si) / i_
        return np.stack([source, ms_r, (ms_i - ms_si) / s_, source_item, ms_e], axis=-1)
    return np.stack([(ms_s - ms_si - ms_r + ms_e) / (r_ * i_), (ms_r - ms_e) / i_, (ms_i - ms_si) / (s_ * r_),
                     (ms_si - ms_e) / r_, ms_e], axis=-1)


def reliability(comp: np.ndarray, seeds: int | np.ndarray, items: int | np.ndarray,
                items_fixed: bool = False) -> np.ndarray:
    """Reliability of a source ranking with `seeds` adapters per source and `items` items
    (components truncated at 0; `items_fixed`: the same items in the replication)."""
    c = np.maximum(np.nan_to_num(comp, nan=0.0), 0.0)
    source, seed, _, source_item, residual = np.moveaxis(c, -1, 0)
    signal = source + (source_item / items if items_fixed else 0.0)
    error = seed / seeds + residual / (seeds * items) + (0.0 if items_fixed else source_item / items)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(signal + error > 0, signal / (signal + error), np.nan)


def g_study(deltas: Deltas, draws: int = DRAWS, seed: int = 0) -> dict:
    """Components with intervals, reliabilities with intervals, and the seed checks, for one target."""
    y = deltas.values
    s_, r_, i_ = y.shape
    ms, df = mean_squares(y)
    rng = np.random.default_rng(seed)
    drawn = ms * rng.chisquare(np.maximum(df, 1), (draws, 5)) / np.maximum(df, 1)
    point, sampled = components(ms, s_, r_, i_), components(drawn, s_, r_, i_)
    row = {"sources": s_, "seeds": r_, "items": i_}
    for name, value, column in zip(COMPONENTS, point, sampled.T):
        low, high = (np.nanquantile(np.maximum(column, 0), [0.025, 0.975]) if np.isfinite(column).any()
                     else (np.nan, np.nan))
        row |= {name: max(float(value), 0.0) if np.isfinite(value) else np.nan, f"{name}_low": float(low),
                f"{name}_high": float(high)}
    for name, fixed in (("reliability", False), ("seed_reliability", True)):
        if r_ < 2:  # training noise unmeasured: no reliability that counts it
            row |= {name: np.nan, f"{name}_low": np.nan, f"{name}_high": np.nan}
            continue
        low, high = np.nanquantile(reliability(sampled, r_, i_, fixed), [0.025, 0.975])
        row |= {name: float(reliability(point, r_, i_, fixed)), f"{name}_low": float(low), f"{name}_high": float(high)}
    row |= _seed_checks(y, ms, df)
    return row


def _seed_checks(y: np.ndarray, ms: np.ndarray, df: np.ndarray) -> dict:
    """Observed agreement across seeds, and how far seeds differ beyond item noise."""
    r_ = y.shape[1]
    if r_ < 2:
        return {"split_correlation": np.nan, "split_reliability": np.nan, "seed_f": np.nan, "seed_f_p": np.nan}
    cells = y.mean(axis=2)  # sources x seeds
    pairs = [np.corrcoef(cells[:, a], cells[:, b])[0, 1] for a, b in itertools.combinations(range(r_), 2)]
    r = float(np.nanmean(pairs))
    f = ms[1] / ms[4]
    denominator = 1 + (r_ - 1) * r  # 0 where seeds disagree perfectly (two sources, two seeds: r = -1)
    return {"split_correlation": r, "split_reliability": r_ * r / denominator if denominator > 0 else np.nan,
            "seed_f": float(f), "seed_f_p": float(stats.f.sf(f, df[1], df[4]))}


def variance_components(results: Results, draws: int = DRAWS, seed: int = 0) -> pd.DataFrame:
    """One row per target: the design (sources, seeds, items), each variance component with its
    interval, the ranking reliabilities with theirs, the seed checks, and `note` where a
    target cannot be decomposed."""
    rows = []
    for target in results.scores:
        deltas = target_deltas(results, target)
        metric = results.scores[target].metric
        if deltas is None:
            why = ("its metric has no per-item values" if results.scores[target].values is None
                   else "fewer than two sources, or no base, are scored on it")
            rows.append({"target": target, "metric": metric, "note": f"not decomposed: {why}"})
            continue
        note = "" if deltas.values.shape[1] > 1 else "one seed per source: training noise not measured"
        rows.append({"target": target, "metric": metric, **g_study(deltas, draws, seed), "note": note})
    return pd.DataFrame(rows)


def projections(table: pd.DataFrame, seeds: tuple[int, ...] = SEED_GRID,
                items: tuple[int, ...] = ITEM_GRID) -> pd.DataFrame:
    """The D-study: per target, each design's reliability (new adapters and items) and seed
    reliability (new adapters, these items), from the estimated components."""
    rows = []
    for row in table.dropna(subset=["seed"]).itertuples():
        comp = np.array([getattr(row, c) for c in COMPONENTS])
        for r, n in itertools.product(seeds, items):
            rows.append({"target": row.target, "seeds": r, "items": n,
                         "reliability": float(reliability(comp, r, n)),
                         "seed_reliability": float(reliability(comp, r, n, items_fixed=True))})
    return pd.DataFrame(rows, columns=["target", "seeds", "items", "reliability", "seed_reliability"])


def cheapest_design(projected: pd.DataFrame, goal: float = 0.8, cost=None,
                    which: str = "reliability") -> pd.DataFrame:
    """Per target, the least costly design in `projected` reaching `goal` on `which` (or the best
    one, with `reached` False). `cost(seeds, items)` counts a design's compute (default:
    seeds x items, the evaluation-and-training proxy when no count is given)."""
    cost = cost or (lambda seeds, items: seeds * items)
    priced = projected.assign(cost=[cost(s, n) for s, n in zip(projected["seeds"], projected["items"])])
    rows = []
    for target, group in priced.groupby("target", sort=False):
        good = group[group[which] >= goal]
        pick = good.nsmallest(1, "cost") if len(good) else group.nlargest(1, which)
        rows.append(pick.iloc[0].to_dict() | {"reached": bool(len(good))})
    return pd.DataFrame(rows)


def cell_error(row: pd.Series | dict, seeds: int, items: int) -> tuple[float, float]:
    """(variance, Satterthwaite df) of one source's cell mean on a target with these components:
    its seeds' training noise, the item sampling of its delta, and the residual."""
    c = {name: max(float(row[name]), 0.0) if row[name] == row[name] else 0.0 for name in COMPONENTS}
    terms = np.array([c["seed"] / seeds, (c["item"] + c["source_item"]) / items, c["residual"] / (seeds * items)])
    dfs = np.array([row["sources"] * (row["seeds"] - 1), items - 1, row["sources"] * (row["seeds"] - 1) * (items - 1)],
                   float)
    total = terms.sum()
    keep = (terms > 0) & (dfs > 0)
    df = total ** 2 / (terms[keep] ** 2 / dfs[keep]).sum() if keep.any() else np.inf
    return float(total), float(df)


def unreproduced(table: pd.DataFrame, goal: float = 0.8) -> list[str]:
    """Targets whose source ranking a retrained study (new seeds, same items) would not
    reproduce at `goal`: seed reliability below it."""
    if "seed_reliability" not in table:
        return []
    return list(table.loc[table["seed_reliability"] < goal, "target"])


@dataclass(frozen=True)
class Reliability:
    """How reliable a study's matrix is (`Results.reliability`, `Study.reliability`):
    `components_` (a row per target: the G-study), `projections_` (the D-study: each design's
    reliability), `designs_` (per target, and for all targets together, the least costly design
    reaching `goal`, or the best one with `reached` False), `unreproduced` (targets a retrained
    study would not reproduce at `goal`)."""

    goal: float
    components_: pd.DataFrame
    projections_: pd.DataFrame
    designs_: pd.DataFrame
    unreproduced: list[str]


def plan_reliability(table: pd.DataFrame, goal: float = 0.8, cost=None, seeds: tuple[int, ...] = SEED_GRID,
                     items: tuple[int, ...] = ITEM_GRID) -> Reliability:
    """The D-study of a G-study table: projections over `seeds` x `items`, and the cheapest
    design per target and for all targets at once (every target at `goal`). `cost(seeds, items)`
    prices a design (e.g. from `forecast.cost.design_cost`); default seeds x items."""
    projected = projections(table, seeds, items)
    designs = cheapest_design(projected, goal, cost) if len(projected) else pd.DataFrame()
    if len(projected):
        worst = projected.groupby(["seeds", "items"], as_index=False)[["reliability", "seed_reliability"]].min()
        together = cheapest_design(worst.assign(target="all targets"), goal, cost)
        designs = pd.concat([designs, together], ignore_index=True)
    return Reliability(goal, table, projected, designs, unreproduced(table, goal))
