"""Uncertainty of every delta vs the base, from the items both were scored on, and across seeds.

Base and adapter answer the same items, so comparisons are paired: a bootstrap draw of items is
shared by every model of a target. Where a source was trained with several seeds, its row of the
matrix is the mean over seeds, and its intervals are hierarchical: each draw resamples the seeds
too, so seed-to-seed variation widens them. Tests: McNemar's exact test for 0/1 item scores, a
sign-flip test for continuous ones, a swap permutation test for count metrics (see
`analysis.metrics.ItemScores.paired_test`), and with several seeds the hierarchical bootstrap's
two-sided p. p-values are corrected across the matrix with Benjamini-Hochberg, since a study
tests many cells at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from traitlens.analysis.results import Results
from traitlens.analysis.metrics import ItemScores
from traitlens.config.schema import BASE


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
                     "delta": delta, "low": low, "high": high, "p": scores.paired_test(BASE, cell.model, rng)})
    return _corrected(pd.DataFrame(rows, columns=["model", "source", "seed", "target", "delta", "low", "high", "p"]),
                      alpha)


def source_uncertainty(results: Results, samples: int = 1000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """One row per cell of the matrix (a source, its seeds averaged, on a target): delta vs
    base with an interval over seeds and items, p, BH q, significant."""
    rng = np.random.default_rng(seed)
    rows = []
    adapters = results.cells[results.cells["source"].notna()]
    for (source, target), group in adapters.groupby(["source", "target"], sort=False):
        scores = results.scores[target]
        if BASE not in scores.models:
            continue
        models = list(group["model"])
        boot = delta_draws(scores, models, samples, rng)
        delta, low, high = _interval(boot, scores, models, alpha)
        if len(models) == 1:
            p = scores.paired_test(BASE, models[0], rng)
        else:  # the hierarchical bootstrap's two-sided p
            p = bootstrap_p(boot)
        rows.append({"model": source, "source": source, "target": target, "seeds": len(models),
                     "delta": delta, "low": low, "high": high, "p": p})
    columns = ["model", "source", "target", "seeds", "delta", "low", "high", "p"]
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


def compare_models(results: Results, a: str, b: str, target: str, samples: int = 1000, alpha: float = 0.05,
                   seed: int = 0) -> dict[str, float | str | int]:
    """A paired test of two rows of the matrix on one target (b - a), for designed contrasts
    such as balanced vs skewed: `a` and `b` are sources (their seeds averaged, and resampled
    in the interval) or single models ("movie/s1", or "base")."""
    if target not in results.scores:
        raise ValueError(f"no cells on target {target!r}; targets: {', '.join(results.scores)}")
    scores = results.scores[target]
    groups = {}
    for name in (a, b):
        models = [m for m in scores.models if m == name] or list(
            results.cells.query("source == @name and target == @target")["model"])
        if not models:
            raise ValueError(f"{name!r} is neither a source nor a model with a cell on {target!r}; "
                             f"models there: {', '.join(scores.models)}")
        groups[name] = models
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, scores.n_items, (samples, scores.n_items))
    values = scores.score([scores.row(m) for m in groups[a] + groups[b]], draws)
    boot = _seed_mean(values[len(groups[a]):], rng) - _seed_mean(values[:len(groups[a])], rng)
    full = scores.full()
    a_score, b_score = (float(np.mean([full[m] for m in groups[name]])) for name in (a, b))
    if len(groups[a]) == len(groups[b]) == 1:
        p = scores.paired_test(groups[a][0], groups[b][0], rng)
    else:
        p = bootstrap_p(boot)
    low, high = np.nanquantile(boot, [alpha / 2, 1 - alpha / 2])
    return {"a": a, "b": b, "target": target, "metric": scores.metric, "a_score": a_score, "b_score": b_score,
            "difference": b_score - a_score, "low": float(low), "high": float(high), "p": p,
            "items": scores.n_items, "seeds_a": len(groups[a]), "seeds_b": len(groups[b])}
