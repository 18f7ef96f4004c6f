"""Uncertainty of every delta vs the base, from the items both were scored on, and across seeds.

Every table says which variance its intervals count (`variance`):
- "items only: training noise not measured": one adapter per source (or a single adapter's
  cell). Base and adapter answer the same items, so comparisons are paired: a bootstrap draw of
  items is shared by every model of a target. Tests: McNemar's exact test for 0/1 item scores,
  a sign-flip test for continuous ones, a swap permutation test for count metrics (see
  `analysis.metrics.ItemScores.paired_test`).
- "seeds + items": with two or more seeds the trained adapter is the unit of replication. A
  matrix cell's error is the G-study's (`analysis.reliability`): its seeds' training noise, the
  item sampling of its delta and the residual, from variance components pooled over the
  target's sources (one source's two seeds alone give one degree of freedom); a t interval and
  test at the Satterthwaite degrees of freedom.
- "seeds (bootstrap) + items": metrics with no per-item value (balanced accuracy, macro-F1)
  cannot be decomposed; their intervals resample seeds, then items.
Designed contrasts (`compare_models`) between sources with the same seeds are paired by seed:
each seed's difference is a unit, tested by an exact sign-flip over seeds and a crossed
seeds x items interval. p-values are corrected across the matrix with Benjamini-Hochberg,
since a study tests many cells at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from traitlens.analysis.metrics import ItemScores
from traitlens.analysis.reliability import cell_error, variance_components
from traitlens.config.schema import BASE

if TYPE_CHECKING:
    from traitlens.analysis.results import Results

ITEMS_ONLY = "items only: training noise not measured"
SEEDS_AND_ITEMS = "seeds + items"
SEEDS_BOOTSTRAP = "seeds (bootstrap) + items"


def score_intervals(results: Results, samples: int = 1000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """One row per cell (the base's too): its score with a percentile interval over items."""
    rng = np.random.default_rng(seed)
    rows = []
    for target, scores in results.scores.items():
        draws = rng.integers(0, scores.n_items, (samples, scores.n_items))
        values = scores.score(list(range(len(scores.models))), draws)
        full = scores.full()
        for model, boot in zip(scores.models, values):
            low, high = np.nanquantile(boot, [alpha / 2, 1 - alpha / 2])
            rows.append({"model": model, "target": target, "metric": scores.metric, "score": full[model],
                         "low": low, "high": high, "n": scores.n_items})
    return pd.DataFrame(rows, columns=["model", "target", "metric", "score", "low", "high", "n"])


def cell_uncertainty(results: Results, samples: int = 1000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """One row per adapter cell (each seed its own): delta vs base, its interval, p, BH q."""
    rng = np.random.default_rng(seed)
    rows = []
    for cell in results.cells[results.cells["model"] != BASE].itertuples():
        scores = results.scores[cell.target]
        if BASE not in scores.models:
            continue  # no base cell yet: nothing to compare with
        delta, low, high = _interval(delta_draws(scores, [cell.model], samples, rng), scores, [cell.model], alpha)
        rows.append({"model": cell.model, "source": cell.source, "seed": cell.seed, "target": cell.target,
                     "delta": delta, "low": low, "high": high, "p": scores.paired_test(BASE, cell.model, rng),
                     "variance": "items only (one adapter)"})
    columns = ["model", "source", "seed", "target", "delta", "low", "high", "p", "variance"]
    return _corrected(pd.DataFrame(rows, columns=columns), alpha)


def source_uncertainty(results: Results, samples: int = 1000, alpha: float = 0.05, seed: int = 0,
                       components: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell of the matrix (a source, its seeds averaged, on a target): delta vs
    base with an interval, p, BH q, significant, and `variance`: what the interval counts
    (see the module docstring). `components`: these results' `variance_components`, where the
    caller has them."""
    rng = np.random.default_rng(seed)
    rows = []
    adapters = results.cells[results.cells["source"].notna()]
    if components is None:
        components = variance_components(results, draws=1)  # the point estimates need no draws
    pooled = {row["target"]: row for row in components.to_dict("records") if row.get("seeds", 0) > 1}
    for (source, target), group in adapters.groupby(["source", "target"], sort=False):
        scores = results.scores[target]
        if BASE not in scores.models:
            continue
        models = list(group["model"])
        full = scores.full()
        if len(models) > 1 and target in pooled:
            delta = float(np.mean([full[m] for m in models]) - full[BASE])
            variance, df = cell_error(pooled[target], len(models), scores.n_items)
            half = stats.t.ppf(1 - alpha / 2, df) * np.sqrt(variance)
            low, high, what = delta - half, delta + half, SEEDS_AND_ITEMS
            p = float(2 * stats.t.sf(abs(delta) / np.sqrt(variance), df)) if variance > 0 else float(delta == 0)
        else:
            boot = delta_draws(scores, models, samples, rng)
            delta, low, high = _interval(boot, scores, models, alpha)
            if len(models) == 1:
                p, what = scores.paired_test(BASE, models[0], rng), ITEMS_ONLY
            else:  # the hierarchical bootstrap's two-sided p
                p, what = bootstrap_p(boot), SEEDS_BOOTSTRAP
        rows.append({"model": source, "source": source, "target": target, "seeds": len(models),
                     "delta": delta, "low": low, "high": high, "p": p, "variance": what})
    columns = ["model", "source", "target", "seeds", "delta", "low", "high", "p", "variance"]
    return _corrected(pd.DataFrame(rows, columns=columns), alpha)


def delta_draws(scores: ItemScores, models: list[str], samples: int, rng: np.random.Generator,
                reference: str = BASE) -> np.ndarray:
    """`samples` bootstrap draws of (mean over `models` - `reference`) on one target: items
    resampled (the same draw for every model), and `models` (a source's seeds) resampled too
    when there are several."""
    rows = [scores.row(reference), *(scores.row(m) for m in models)]
    draws = rng.integers(0, scores.n_items, (samples, scores.n_items))
    values = scores.score(rows, draws)  # (1 + seeds) x samples
    return _seed_mean(values[1:], rng) - values[0]


def _seed_mean(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per bootstrap draw (a column of `values`, seeds x draws), the mean over a resample of the
    seeds; with one seed, its values (resampling one changes nothing)."""
    if len(values) == 1:
        return values[0]
    picks = rng.integers(0, len(values), (values.shape[1], len(values)))
    return values[picks, np.arange(values.shape[1])[:, None]].mean(axis=1)


def bootstrap_p(boot: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from bootstrap draws of a difference: twice the
    share of draws on the far side of zero (add-one corrected)."""
    return min(1.0, 2 * (1 + min((boot <= 0).sum(), (boot >= 0).sum())) / (len(boot) + 1))


def _interval(boot: np.ndarray, scores: ItemScores, models: list[str], alpha: float) -> tuple[float, float, float]:
    full = scores.full()
    delta = float(np.mean([full[m] for m in models]) - full[BASE])
    low, high = np.nanquantile(boot, [alpha / 2, 1 - alpha / 2])
    return delta, float(low), float(high)


def _corrected(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    table["q"] = stats.false_discovery_control(table["p"]) if len(table) else []
    table["significant"] = table["q"] < alpha
    return table


@dataclass(frozen=True)
class Contrast:
    """A paired test of B against A on one target (`Results.compare`): their scores under
    `metric` on `items` items, `difference` (B minus A) with its interval (`low`, `high`) and
    `p`, the adapters on each side (`seeds_a`, `seeds_b`), the seed pairs it was tested over
    (0: resampled instead) and what the interval counts (`variance`).

    Example:
        >>> res.compare("movie-balanced", "movie-skewed", target="amazon").p
    """

    a: str
    b: str
    target: str
    metric: str
    a_score: float
    b_score: float
    difference: float
    low: float
    high: float
    p: float
    items: int
    seeds_a: int
    seeds_b: int
    seed_pairs: int
    variance: str


def compare_models(results: Results, a: str, b: str, target: str, samples: int = 1000, alpha: float = 0.05,
                   seed: int = 0) -> Contrast:
    """A paired test of two rows of the matrix on one target (b - a), for designed contrasts
    such as balanced vs skewed: `a` and `b` are sources (their seeds averaged) or single models
    ("movie/s1", or "base"). Sources trained with the same two or more seeds are paired by seed
    and tested over adapters (`seed_pairs`, `variance` "seeds + items"); otherwise seeds are
    resampled before items, or items alone with one adapter a side."""
    if target not in results.scores:
        raise ValueError(f"no cells on target {target!r}; targets: {', '.join(results.scores)}")
    scores = results.scores[target]
    groups, seeds = {}, {}
    for name in (a, b):
        rows = results.cells.query("source == @name and target == @target")
        models = [m for m in scores.models if m == name] or list(rows["model"])
        if not models:
            raise ValueError(f"{name!r} is neither a source nor a model with a cell on {target!r}; "
                             f"models there: {', '.join(scores.models)}")
        groups[name] = models
        seeds[name] = dict(zip(rows["seed"].astype("Int64"), rows["model"])) if name not in scores.models else {}
    full = scores.full()
    a_score, b_score = (float(np.mean([full[m] for m in groups[name]])) for name in (a, b))
    out = {"a": a, "b": b, "target": target, "metric": scores.metric, "a_score": a_score, "b_score": b_score,
           "difference": b_score - a_score, "items": scores.n_items, "seeds_a": len(groups[a]),
           "seeds_b": len(groups[b])}
    named = lambda **rest: Contrast(**(out | rest))
    shared = sorted(set(seeds[a]) & set(seeds[b]))
    rng = np.random.default_rng(seed)
    if len(shared) > 1 and scores.values is not None:
        differences = np.array([scores.values[scores.row(seeds[b][s])] - scores.values[scores.row(seeds[a][s])]
                                for s in shared])  # seeds x items, each seed's pair a unit
        difference, variance, df = crossed_mean(differences)
        half = stats.t.ppf(1 - alpha / 2, df) * np.sqrt(variance)
        p = sign_flip_p(differences.mean(axis=1), rng)
        return named(difference=float(difference), low=float(difference - half), high=float(difference + half),
                     p=p, seed_pairs=len(shared), variance=SEEDS_AND_ITEMS)
    draws = rng.integers(0, scores.n_items, (samples, scores.n_items))
    values = scores.score([scores.row(m) for m in groups[a] + groups[b]], draws)
    boot = _seed_mean(values[len(groups[a]):], rng) - _seed_mean(values[:len(groups[a])], rng)
    if len(groups[a]) == len(groups[b]) == 1:
        p, what = scores.paired_test(groups[a][0], groups[b][0], rng), ITEMS_ONLY
    else:
        p, what = bootstrap_p(boot), SEEDS_BOOTSTRAP
    low, high = np.nanquantile(boot, [alpha / 2, 1 - alpha / 2])
    return named(low=float(low), high=float(high), p=p, seed_pairs=0, variance=what)


def crossed_mean(x: np.ndarray) -> tuple[float, float, float]:
    """(mean, its variance, Satterthwaite df) of a units x items table whose units (trained
    adapters, or pairs of them) and items are both random and crossed: the variance counts the
    units' spread, the items' spread and their interaction, each once."""
    r_, i_ = x.shape
    grand = x.mean()
    ms_r = i_ * x.mean(axis=1).var(ddof=1)
    ms_i = r_ * x.mean(axis=0).var(ddof=1) if i_ > 1 else 0.0
    residual = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand
    ms_e = (residual ** 2).sum() / max((r_ - 1) * (i_ - 1), 1)
    # Components truncated at 0: sigma2_unit / R + sigma2_item / I + sigma2_residual / (R I).
    variance = (max(ms_r - ms_e, 0.0) + max(ms_i - ms_e, 0.0) + ms_e) / (r_ * i_)
    terms = np.array([ms_r, ms_i]) / (r_ * i_)
    dfs = np.array([r_ - 1, max(i_ - 1, 1)], float)
    df = terms.sum() ** 2 / (terms ** 2 / dfs).sum() if terms.any() else np.inf
    return float(grand), float(variance), float(df)


def sign_flip_p(units: np.ndarray, rng: np.random.Generator, draws: int = 100_000) -> float:
    """Two-sided p of "mean zero" for independent units (per-seed or matched-pair differences):
    exact over every sign assignment up to 2^16 of them, else `draws` random ones."""
    units = np.asarray(units, float)
    n = len(units)
    if not units.any():
        return 1.0
    if n <= 16:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
        null = np.abs(signs @ units) / n
        return float((null >= abs(units.mean()) - 1e-12).mean())
    signs = rng.choice((-1.0, 1.0), size=(draws, n))
    null = np.abs(signs @ units) / n
    return float((1 + (null >= abs(units.mean()) - 1e-12).sum()) / (draws + 1))
