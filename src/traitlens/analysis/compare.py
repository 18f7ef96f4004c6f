"""Two studies side by side: the same design under two seeds, two settings or two base models.

Both are restricted to the sources and targets they share and fitted under their own analysis
settings, B at A's trait count (congruence compares structures of one size; `traitlens traits`
gives B's own count). B's traits are matched to A's (order and sign) and compared by Tucker's congruence;
each target's loadings are compared after matching; and every shared cell's delta is compared
between the studies. Intervals come from resampling every target's items in each study
independently (the studies' items are not paired: another base model answers the same items,
but its errors are its own), refitting both at their full-data trait counts and matching each
refit to its full-data traits first, so trait k stays trait k across draws. Seeds are averaged
within each draw, not resampled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from traitlens.analysis.analyze import TraitAnalysis, analyze
from traitlens.analysis.stability import resampled_cells
from traitlens.analysis.traits import ESTIMATORS, assignment, congruence, congruence_null, match
from traitlens.analysis.views import raw_matrix, view
from traitlens.config.schema import BASE
from traitlens.errors import TraitlensError

if TYPE_CHECKING:
    from traitlens.analysis.results import Results


@dataclass
class StudyComparison:
    """`traitlens.compare_studies(a, b)`: `traits` (per trait of A: B's matched trait, their
    congruence and its interval, beside chance for this shape: B's matrix with every target's
    column permuted across sources, fitted and matched the same way, `null_median` and
    `null_95`, and the `verdict`), `loadings` (per target and trait: A's, B's matched loading,
    the difference and its interval), `cells` (per shared cell: both deltas, the difference,
    its interval, p, BH q, whether they disagree), the fitted analyses `a` and `b`.

    Example:
        >>> cmp = traitlens.compare_studies(traitlens.load("a.yaml"), traitlens.load("b.yaml"))
        >>> cmp.traits, cmp.cells.query("disagree")
    """

    traits: pd.DataFrame
    loadings: pd.DataFrame
    cells: pd.DataFrame
    a: TraitAnalysis
    b: TraitAnalysis
    sources: list[str]
    targets: list[str]


def compare_studies(a: Results, b: Results, samples: int | None = None, seed: int | None = None) -> StudyComparison:
    """Compare two studies' traits and cells (see the module's description). `samples`: item
    resamples for the intervals (default: A's `analysis.bootstrap_samples`)."""
    sources, targets = _shared(a, b)
    a, b = _restricted(a, sources, targets), _restricted(b, sources, targets)
    fitted = {"a": analyze(a, a.settings)}
    if fitted["a"].no_traits:
        raise TraitlensError(f"study A has no traits on the shared sources and targets: {fitted['a'].no_traits}")
    count = fitted["a"].loadings_.shape[1]
    fitted["b"] = analyze(b, b.settings.model_copy(update={"n_traits": count}))
    if fitted["b"].no_traits:
        raise TraitlensError(f"study B has no traits on the shared sources and targets: {fitted['b'].no_traits}")
    samples = a.settings.bootstrap_samples if samples is None else samples
    rng = np.random.default_rng(a.settings.seed if seed is None else seed)
    # A target no adapter moves is left out of a fit (see _Traits.fit): it loads on nothing.
    ref_a, ref_b = (fitted[k].loadings_.reindex(targets).fillna(0.0) for k in ("a", "b"))
    columns, signs, phi = assignment(ref_a.to_numpy(), ref_b.to_numpy())
    aligned = ref_b.to_numpy()[:, columns] * signs
    matched = pd.DataFrame(aligned, index=targets, columns=ref_a.columns)
    delta_a, delta_b = _delta(a), _delta(b)

    refit_a, refit_b = _refitter(a, fitted["a"], targets), _refitter(b, fitted["b"], targets)
    congruences, differences, cell_draws = [], [], []
    for _ in range(samples):
        cells_a, cells_b = resampled_cells(a.cells, a.scores, rng), resampled_cells(b.cells, b.scores, rng)
        cell_draws.append((_delta(replace(a, cells=cells_a)) - _delta(replace(b, cells=cells_b))).to_numpy())
        try:
            star_a = match(ref_a.to_numpy(), refit_a(cells_a))[0]  # trait k of the draw is trait k of A
            star_b = match(aligned, refit_b(cells_b))[0]
        except ValueError:  # a draw where too few targets vary to fit
            continue
        congruences.append(np.abs(np.diag(congruence(star_a, star_b))))
        differences.append(star_a - star_b)
    alpha = a.settings.alpha
    low_high = lambda draws: np.nanquantile(np.array(draws), [alpha / 2, 1 - alpha / 2], axis=0) if draws else None

    bounds = low_high(congruences)
    null = _chance(b, targets, refit_b, ref_a.to_numpy(), a.settings.seed)
    null_95 = np.nanquantile(null, 0.95, axis=0)
    traits = pd.DataFrame({
        "trait_a": ref_a.columns, "name_a": fitted["a"].names_,
        "name_b": [fitted["b"].names_[c] for c in columns],
        "congruence": phi,
        "low": bounds[0] if bounds is not None else np.nan, "high": bounds[1] if bounds is not None else np.nan,
        "refits": len(congruences), "null_median": np.nanmedian(null, axis=0), "null_95": null_95,
        "verdict": np.where(phi > null_95, "above chance", "indistinguishable from chance")})
    spread = low_high(differences)
    loadings = pd.concat([
        pd.DataFrame({"target": targets, "trait": trait, "a": ref_a[trait].to_numpy(), "b": matched[trait].to_numpy(),
                      "difference": ref_a[trait].to_numpy() - matched[trait].to_numpy(),
                      "low": spread[0][:, k] if spread is not None else np.nan,
                      "high": spread[1][:, k] if spread is not None else np.nan})
        for k, trait in enumerate(matched.columns)], ignore_index=True)

    cells = _cell_differences(delta_a, delta_b, np.array(cell_draws), alpha)
    return StudyComparison(traits, loadings, cells, fitted["a"], fitted["b"], sources, targets)


def _chance(b: Results, targets: list[str], refit_b, reference: np.ndarray, seed: int) -> np.ndarray:
    """Congruence by chance for this shape: B's matrix with every target's column permuted
    across sources, refitted and matched to A's traits."""
    s_b = b.settings
    matrix_b = view(raw_matrix(b.cells), s_b.view, b.diagonal, s_b.mask_diagonal).reindex(columns=targets)
    return congruence_null(lambda m: refit_b.matrix(pd.DataFrame(m, index=matrix_b.index, columns=targets)),
                           [matrix_b.to_numpy(float)], reference, samples=200, seed=seed)


def _cell_differences(delta_a: pd.DataFrame, delta_b: pd.DataFrame, draws: np.ndarray, alpha: float) -> pd.DataFrame:
    """Per shared cell: A's and B's deltas, their difference with its interval from the item
    resamples (`draws`: samples x sources x targets), p, BH q, and whether they disagree."""
    rows = []
    for i, source in enumerate(delta_a.index):
        for j, target in enumerate(delta_a.columns):
            if np.isnan(delta_a.iloc[i, j]) or np.isnan(delta_b.iloc[i, j]):
                continue  # masked on the diagonal
            boot, difference = draws[:, i, j], delta_a.iloc[i, j] - delta_b.iloc[i, j]
            low, high = np.nanquantile(boot, [alpha / 2, 1 - alpha / 2])
            # The studies' items are independent, so the difference is close to normal with the
            # bootstrap's spread; a percentile p could not go below 2 / (samples + 1).
            p = 2 * stats.norm.sf(abs(difference) / max(np.nanstd(boot, ddof=1), 1e-12))
            rows.append({"source": source, "target": target, "a": delta_a.iloc[i, j], "b": delta_b.iloc[i, j],
                         "difference": difference, "low": low, "high": high, "p": p})
    cells = pd.DataFrame(rows, columns=["source", "target", "a", "b", "difference", "low", "high", "p"])
    cells["q"] = stats.false_discovery_control(cells["p"]) if len(cells) else []
    cells["disagree"] = cells["q"] < alpha
    return cells


def _shared(a: Results, b: Results) -> tuple[list[str], list[str]]:
    complete = lambda r: raw_matrix(r.cells).dropna()
    raw_a, raw_b = complete(a), complete(b)
    targets = [t for t in raw_a.columns if t in raw_b.columns]
    sources = [s for s in raw_a.index if s in raw_b.index and s != BASE]
    if BASE not in raw_a.index or BASE not in raw_b.index or len(sources) < 3 or len(targets) < 2:
        raise TraitlensError(f"the two studies share {len(sources)} complete source(s) ({', '.join(sources) or 'none'}) "
                             f"and {len(targets)} target(s) with the base scored: traits need at least three "
                             "sources and two targets in both. Give the sources and targets the same names in both.")
    return sources, targets


def _restricted(results: Results, sources: list[str], targets: list[str]) -> Results:
    cells = results.cells
    keep = cells["target"].isin(targets) & (cells["source"].isin(sources) | (cells["model"] == BASE))
    return replace(results, cells=cells[keep], scores={t: results.scores[t] for t in targets})


def _delta(results: Results) -> pd.DataFrame:
    s = results.settings
    return view(raw_matrix(results.cells), "delta", results.diagonal, s.mask_diagonal)


def _refitter(results: Results, fitted: TraitAnalysis, targets: list[str]):
    """Loadings of a refit on resampled cells, at the full-data trait count, in the order of
    `targets` (0 for a target the refit leaves out because no adapter moves it); `.matrix(m)`
    refits a matrix in the analysed view directly."""
    s = results.settings
    estimator = ESTIMATORS[s.method]

    def fit_matrix(matrix: pd.DataFrame) -> np.ndarray:
        model = estimator(fitted.loadings_.shape[1], s.rotation, random_state=s.seed, standardize=s.standardize)
        return model.fit(matrix).loadings_.reindex(targets).fillna(0.0).to_numpy()

    def refit(cells: pd.DataFrame) -> np.ndarray:
        return fit_matrix(view(raw_matrix(cells), s.view, results.diagonal, s.mask_diagonal))

    refit.matrix = fit_matrix
    return refit
