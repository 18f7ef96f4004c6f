"""Latent traits of the transfer matrix: PCA and factor analysis as scikit-learn-style estimators.

Both work on the adapters x targets matrix with targets standardised by default (so loadings
read as correlations and no target dominates by scale) or only centred (`standardize=False`, so
targets weigh by how much the adapters move them), keep the labels (loadings per target, scores
per source), take the number of traits they are told (`analysis.trait_count` chooses it: see
`seed_split_count`, `split_half_count`, `parallel_analysis`), and rotate with
varimax (orthogonal) or promax (oblique). Rotations are written here because scikit-learn has
no promax; they follow the standard definitions (Kaiser 1958; Hendrickson & White 1964, as in
R's stats::varimax / stats::promax) and are checked against factor_analyzer in the tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.base import BaseEstimator
from sklearn.decomposition import FactorAnalysis

from traitlens.errors import TraitlensError

ROTATIONS = ("none", "varimax", "promax")


def varimax(loadings: np.ndarray, tol: float = 1e-6, max_iter: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(rotated loadings, rotation matrix), with Kaiser row normalisation."""
    p, k = loadings.shape
    if k < 2:
        return loadings.copy(), np.eye(k)
    norms = np.sqrt((loadings ** 2).sum(axis=1, keepdims=True))
    norms[norms == 0] = 1
    x = loadings / norms
    rotation = np.eye(k)
    criterion = 0.0
    for _ in range(max_iter):
        z = x @ rotation
        u, s, vt = np.linalg.svd(x.T @ (z ** 3 - z @ np.diag((z ** 2).sum(axis=0)) / p))
        rotation = u @ vt
        previous, criterion = criterion, s.sum()
        if criterion < previous * (1 + tol):
            break
    return (x @ rotation) * norms, rotation


def promax(loadings: np.ndarray, power: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(rotated loadings, rotation matrix): varimax, then an oblique fit to a sharpened target."""
    rotated, rotation = varimax(loadings)
    if loadings.shape[1] < 2:
        return rotated, rotation
    target = rotated * np.abs(rotated) ** (power - 1)
    coefficients = np.linalg.lstsq(rotated, target, rcond=None)[0]
    gram = coefficients.T @ coefficients
    if np.linalg.cond(gram) > 1e12:  # a trait with (almost) no loadings: no oblique fit exists
        raise ValueError("promax needs every trait to load on some target; this fit has a trait with none "
                         "(too many traits for the matrix): lower analysis.n_traits or use rotation: varimax")
    coefficients = coefficients @ np.diag(np.sqrt(np.diag(np.linalg.inv(gram))))
    return rotated @ coefficients, rotation @ coefficients


def rotate(loadings: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    if method == "none":
        return loadings.copy(), np.eye(loadings.shape[1])
    if method == "varimax":
        return varimax(loadings)
    if method == "promax":
        return promax(loadings)
    raise ValueError(f"unknown rotation {method!r}; use one of {ROTATIONS}")


def parallel_analysis(x: np.ndarray, samples: int = 200, quantile: float = 0.95, seed: int = 0,
                      standardize: bool = True) -> int:
    """Horn's parallel analysis: how many leading eigenvalues beat those of data with no shared
    structure (at the given quantile). At least 1. Standardised: the correlation matrix against
    random normal data of the same shape. Otherwise: the covariance matrix against the data with
    each column permuted independently (Buja & Eyuboglu 1992), which keeps every target's
    variance and breaks only what the targets share."""
    n, p = x.shape
    rng = np.random.default_rng(seed)
    if standardize:
        spectrum = lambda m: np.sort(np.linalg.eigvalsh(np.corrcoef(m, rowvar=False)))[::-1]
        null = lambda: rng.standard_normal((n, p))
    else:
        spectrum = lambda m: np.sort(np.linalg.eigvalsh(np.cov(m, rowvar=False)))[::-1]
        null = lambda: rng.permuted(x, axis=0)
    observed = spectrum(x)
    random = np.array([spectrum(null()) for _ in range(samples)])
    threshold = np.quantile(random, quantile, axis=0)
    above = observed > threshold
    return max(1, int(np.argmin(above)) if not above.all() else p)


def split_half_count(halves: list[tuple[np.ndarray, np.ndarray]], standardize: bool = True,
                     max_rank: int | None = None) -> tuple[int, np.ndarray]:
    """The trait count the items themselves support: (count, error per rank 0..max).

    Each pair holds two matrices (sources x targets) built from disjoint halves of every
    target's items, so their noise is independent and only shared structure carries over. For
    each rank k, the rank-k fit of one half (centred, and scaled by the targets' pooled spread
    when standardising) predicts the other, both ways round; the count is the rank with the
    smallest prediction error, at least 1. Masked cells (NaN) are filled with the target's mean
    in the fitted half and left out of the error.
    """
    first = halves[0][0]
    limit = min(first.shape[1], first.shape[0] - 1) if max_rank is None else max_rank
    errors = np.zeros(limit + 1)
    for a, b in halves:
        scale = np.nanstd(np.vstack([a, b]), axis=0, ddof=1) if standardize else np.ones(a.shape[1])
        scale = np.where(scale > 1e-12, scale, np.inf)  # a target no half moves carries nothing
        for fitted, held in ((a, b), (b, a)):
            x = np.where(np.isnan(fitted), np.nanmean(fitted, axis=0), fitted)
            x = (x - x.mean(axis=0)) / scale
            y = (held - np.nanmean(held, axis=0)) / scale
            u, singular, vt = np.linalg.svd(x, full_matrices=False)
            for k in range(limit + 1):
                approximation = (u[:, :k] * singular[:k]) @ vt[:k]
                errors[k] += np.nansum((y - approximation) ** 2)
    return max(1, int(np.argmin(errors))), errors


def seed_split_count(seeds: np.ndarray, standardize: bool = True, samples: int = 200, quantile: float = 0.95,
                     seed: int = 0) -> tuple[int, dict[str, list[float]]]:
    """The trait count that survives retraining: (count, {"observed", "threshold"} eigenvalues).

    `seeds` holds the matrix of each seed's adapters (seeds x sources x targets; masked cells
    NaN). The seed-mean matrix carries the sources' effects plus training and item noise. How
    much noise a mean of R seeds carries is measured by the seeds themselves: the covariance
    (across targets) of each adapter's deviation from its source's mean, pooled over sources,
    over R. Null matrices are normal draws with that covariance, so the null is estimated from
    the study rather than assumed. Traits are counted one at a time: the k-th eigenvalue of the
    mean matrix's covariance (targets scaled by its spread when standardising) must beat the
    `quantile` of the k-th eigenvalue of data made of the k-1 traits already found plus a draw
    of that noise (a parametric bootstrap of "k-1 traits", so what the first traits leak into
    the next eigenvalue is in the null too). The count can be 0: then no trait is
    reproducible. `docs/trait-count.md` measures it on planted studies."""
    r_, s_, t_ = seeds.shape
    filled = np.where(np.isnan(seeds), np.nanmean(seeds, axis=(0, 1), keepdims=True), seeds)
    mean = filled.mean(axis=0)
    centred = mean - mean.mean(axis=0)
    scale = centred.std(axis=0, ddof=1) if standardize else np.ones(t_)
    scale = np.where(scale > 1e-12, scale, np.inf)
    x = centred / scale
    u, singular, vt = np.linalg.svd(x, full_matrices=False)
    observed = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    # The noise of a seed mean: the pooled within-source covariance of the seeds, over R.
    within = (filled - mean[None]).transpose(1, 0, 2).reshape(-1, t_) / scale
    noise = within.T @ within / (s_ * (r_ - 1)) / r_
    # A tiny ridge keeps the factorisation defined where seeds agree exactly on some target.
    root = np.linalg.cholesky(noise + (1e-12 * np.trace(noise) + 1e-300) * np.eye(t_))
    rng = np.random.default_rng(seed)
    nulls = [draw - draw.mean(axis=0) for draw in (rng.standard_normal((s_, t_)) @ root.T for _ in range(samples))]
    limit = min(t_, s_ - 1)
    count, thresholds = 0, []
    for k in range(limit):
        # The null of "k traits": the k-trait fit of the data plus a draw of the seeds' noise.
        signal = (u[:, :k] * singular[:k]) @ vt[:k]
        kth = [np.sort(np.linalg.eigvalsh(np.cov(signal + n, rowvar=False)))[::-1][k] for n in nulls]
        thresholds.append(float(np.quantile(kth, quantile)))
        if observed[k] <= thresholds[-1]:
            break
        count += 1
    return count, {"observed": [float(e) for e in observed[:limit]], "threshold": thresholds}


def congruence_null(fit, shape_matrices: list[np.ndarray], reference: np.ndarray | None = None,
                    samples: int = 200, seed: int = 0) -> np.ndarray:
    """Chance congruence for this shape (samples x traits): traits fitted by `fit(matrix) ->
    loadings` on matrices whose columns are each permuted across sources (every target keeps
    its values, what targets share is broken), matched to `reference` (the study's loadings)
    or, without one, to a second such fit. A congruence reads as agreement only above this
    null's 95th percentile; with few targets chance alone reaches high values."""
    rng = np.random.default_rng(seed)
    shuffle = lambda m: rng.permuted(m, axis=0)  # noqa: E731
    values = []
    for _ in range(samples):
        try:
            first = fit(shuffle(shape_matrices[0]))
            other = reference if reference is not None else fit(shuffle(shape_matrices[-1]))
        except ValueError:
            continue
        if first.shape[1] == other.shape[1]:
            values.append(assignment(other, first)[2])
    return np.array(values) if values else np.full((1, 1), np.nan)


def congruence(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tucker's congruence coefficient between the columns of a and b (a k x k matrix); 0 for a
    column of zeros (a bootstrap refit on a degenerate resample can give one), which shares no
    pattern with anything."""
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = (a.T @ b) / np.outer(np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0))
    return np.nan_to_num(phi, nan=0.0, posinf=0.0, neginf=0.0)


def assignment(reference: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which column of `other` matches each column of `reference` (by absolute congruence),
    the sign that aligns it, and the congruence of each matched pair."""
    phi = congruence(reference, other)
    rows, cols = linear_sum_assignment(-np.abs(phi))
    signs = np.sign(phi[rows, cols])
    signs[signs == 0] = 1
    return cols, signs, np.abs(phi[rows, cols])


def match(reference: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder and flip the columns of `other` to best match `reference`; also return the
    congruence of each matched pair."""
    cols, signs, phi = assignment(reference, other)
    return other[:, cols] * signs, phi


class _Traits:
    """Shared fitting: centre (and standardise), choose k, extract, rotate, orient, label."""

    def __init__(self, n_traits: int | str = "auto", rotation: str = "varimax", pa_samples: int = 200,
                 random_state: int = 0, standardize: bool = True):
        self.n_traits = n_traits
        self.standardize = standardize
        self.rotation = rotation
        self.pa_samples = pa_samples
        self.random_state = random_state

    def fit(self, matrix: pd.DataFrame) -> _Traits:
        if self.rotation not in ROTATIONS:
            raise ValueError(f"rotation must be one of {ROTATIONS}; got {self.rotation!r}")
        x = matrix.to_numpy(dtype=float)
        observed = (~np.isnan(x)).sum(axis=0)  # masked cells: the target's mean (0 if all masked)
        x = np.where(np.isnan(x), np.nansum(x, axis=0) / np.maximum(observed, 1), x)
        spread = x.std(axis=0, ddof=1)
        kept = spread > 1e-12  # a target no adapter moves carries no trait information
        self.dropped_targets_ = [t for t, k in zip(matrix.columns, kept) if not k]
        if kept.sum() < 2 or x.shape[0] < 3:
            raise ValueError(f"traits need at least 3 sources and 2 targets whose scores vary across "
                             f"them; got {x.shape[0]} sources and {int(kept.sum())} varying targets "
                             f"(constant: {', '.join(map(str, self.dropped_targets_)) or 'none'})")
        z = x[:, kept] - x[:, kept].mean(axis=0)
        if self.standardize:
            z = z / spread[kept]
        if self.n_traits == "auto":
            k = parallel_analysis(z, self.pa_samples, seed=self.random_state, standardize=self.standardize)
        else:
            k = int(self.n_traits)
        k = min(k, z.shape[1], max(1, z.shape[0] - 1))
        loadings, uniqueness = self._extract(z, k)
        loadings, self.rotation_matrix_ = rotate(loadings, self.rotation)
        loadings = loadings * np.where(loadings.sum(axis=0) < 0, -1, 1)  # mostly-positive traits
        order = np.argsort(-(loadings ** 2).sum(axis=0))
        loadings = loadings[:, order]
        names = [f"trait {i + 1}" for i in range(k)]
        targets = [t for t, keep in zip(matrix.columns, kept) if keep]
        self.n_traits_ = k
        self.loadings_ = pd.DataFrame(loadings, index=targets, columns=names)
        total = z.var(axis=0, ddof=1).sum()  # the number of targets when standardised
        self.explained_variance_ratio_ = pd.Series((loadings ** 2).sum(axis=0) / total, index=names)
        # Least-squares scores weighted by uniqueness (Bartlett's for FA, plain projection for PCA).
        weights = np.diag(1 / np.maximum(uniqueness, 1e-6))
        scores = z @ weights @ loadings @ np.linalg.pinv(loadings.T @ weights @ loadings)
        self.scores_ = pd.DataFrame(scores, index=matrix.index, columns=names)
        return self


class PCATraits(_Traits):
    """Principal components, scaled to loadings (eigenvector x sqrt(eigenvalue))."""

    def _extract(self, z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        eigenvalues, eigenvectors = np.linalg.eigh(np.cov(z, rowvar=False))
        top = np.argsort(eigenvalues)[::-1][:k]
        return eigenvectors[:, top] * np.sqrt(np.maximum(eigenvalues[top], 0)), np.ones(z.shape[1])


class FactorTraits(_Traits):
    """Maximum-likelihood factor analysis (scikit-learn's)."""

    def _extract(self, z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        model = FactorAnalysis(n_components=k, random_state=self.random_state, max_iter=5000, tol=1e-8)
        model.fit(z)
        self.noise_variance_ = model.noise_variance_
        return model.components_.T, model.noise_variance_


ESTIMATORS = {"pca": PCATraits, "factor_analysis": FactorTraits}


def name_trait(loadings: pd.Series, abilities: dict[str, list[str]], share: float = 0.5) -> str:
    """A name from the ability tags of the strongest loadings, with the signed targets shown,
    e.g. "sentiment (+movie, +amazon; -asdiv)"."""
    strong = loadings[loadings.abs() >= share * loadings.abs().max()].sort_values(key=abs, ascending=False)
    weights: dict[str, float] = {}
    for target, value in strong.items():
        if value > 0:  # the trait is named for what it raises; negatives are shown, not named
            for tag in abilities.get(target, []):
                weights[tag] = weights.get(tag, 0.0) + abs(value)
    if not weights:
        for target, value in strong.items():
            for tag in abilities.get(target, []):
                weights[tag] = weights.get(tag, 0.0) + abs(value)
    ranked = sorted(weights, key=lambda tag: -weights[tag])
    label = " + ".join(tag for tag in ranked if weights[tag] >= 0.75 * weights[ranked[0]]) or "unnamed"
    positive = ", ".join(f"+{t}" for t, v in strong.items() if v > 0)
    negative = ", ".join(f"-{t}" for t, v in strong.items() if v < 0)
    return f"{label} ({'; '.join(part for part in (positive, negative) if part)})"


def unique_names(names: list[str], loadings: pd.DataFrame) -> list[str]:
    """`names` (from `name_trait`) with no ability label given twice: a repeated label gets its
    trait's strongest target, "sentiment [amazon]", and the trait number if that repeats too."""
    labels = [name.split(" (", 1)[0] for name in names]
    out = []
    for i, (name, label) in enumerate(zip(names, labels)):
        if labels.count(label) > 1:
            top = loadings.iloc[:, i].abs().idxmax()
            tagged = f"{label} [{top}]"
            clash = sum(1 for j, other in enumerate(labels)
                        if other == label and loadings.iloc[:, j].abs().idxmax() == top) > 1
            name = name.replace(label, f"{label} [{top}, trait {i + 1}]" if clash else tagged, 1)
        out.append(name)
    return out


class Traits(BaseEstimator):
    """Latent traits of any sources x targets table, such as a matrix of your own: PCA or
    maximum-likelihood factor analysis, rotated, in scikit-learn's conventions (parameters in
    `__init__`, `get_params` / `set_params`, learned attributes ending in `_`).

    `n_traits="auto"` counts traits by Horn's parallel analysis of the table alone: a bare
    table carries no seeds or items, so the count cannot weigh training or item noise (a
    study's `Results.traits()` can). `fit(matrix, abilities=None)`: `abilities` maps targets to
    ability tags, which name the traits (`names_`); without it they are "trait 1", "trait 2".

    Example:
        >>> traits = traitlens.Traits(n_traits=2, rotation="promax").fit(res.matrix("delta"))
        >>> traits.loadings_, traits.scores_, traits.explained_variance_ratio_, traits.names_
    """

    def __init__(self, n_traits: int | str = "auto", method: str = "pca", rotation: str = "varimax",
                 standardize: bool = True, pa_samples: int = 200, random_state: int = 0):
        self.n_traits = n_traits
        self.method = method
        self.rotation = rotation
        self.standardize = standardize
        self.pa_samples = pa_samples
        self.random_state = random_state

    def fit(self, matrix: pd.DataFrame, abilities: dict[str, list[str]] | None = None) -> Traits:
        """Learn the traits of `matrix` (sources as rows, targets as columns, NaN where a cell is
        missing); `abilities`: each target's ability tags, to name the traits.

        Example:
            >>> traitlens.Traits(n_traits=2).fit(matrix, abilities={"movie": ["sentiment"]}).names_
        """
        if not isinstance(matrix, pd.DataFrame):
            raise TraitlensError(f"matrix must be a pandas DataFrame (sources as rows, targets as columns); "
                                 f"got {type(matrix).__name__}")
        numeric = matrix.apply(pd.to_numeric, errors="coerce")
        bad = [str(c) for c in matrix.columns if numeric[c].isna().sum() > matrix[c].isna().sum()]
        if bad:
            raise TraitlensError(f"matrix column(s) {', '.join(bad)} hold values that are not numbers; "
                                 "traits need a numeric sources x targets table (NaN for a missing cell)")
        if self.method not in ESTIMATORS:
            raise TraitlensError(f"method must be one of {', '.join(ESTIMATORS)}; got {self.method!r}")
        if self.n_traits != "auto" and (not isinstance(self.n_traits, int) or self.n_traits < 1):
            raise TraitlensError(f"n_traits must be 'auto' or a positive whole number; got {self.n_traits!r}")
        try:
            fitted = ESTIMATORS[self.method](self.n_traits, self.rotation, self.pa_samples, self.random_state,
                                             self.standardize).fit(numeric)
        except ValueError as exc:
            raise TraitlensError(str(exc)) from None
        self.n_traits_, self.loadings_, self.scores_ = fitted.n_traits_, fitted.loadings_, fitted.scores_
        self.explained_variance_ratio_, self.dropped_targets_ = fitted.explained_variance_ratio_, fitted.dropped_targets_
        self.names_ = (unique_names([name_trait(self.loadings_[c], abilities) for c in self.loadings_.columns],
                                    self.loadings_) if abilities else list(self.loadings_.columns))
        return self
