"""How many traits: split-half prediction against parallel analysis, on planted matrices.

Each planted study has S sources and T targets with k latent traits: target j loads on trait
j mod k (loadings 0.6-1.0), sources' trait scores are normal with correlation rho between traits,
and every model answers n items per target with a shared item difficulty plus independent noise
(standard deviation 1). A cell's true delta is `effect` standard errors of a delta (sqrt(2/n))
times the trait structure, so `effect` says how far the signal stands above item noise. The
matrix is the item means of each adapter minus the base's, as the pipeline builds it.

Parallel analysis (Horn, 200 null draws, 95th percentile, on the correlation matrix, as
`analysis.traits.parallel_analysis` runs it) sees only the matrix. Split-half prediction
(`analysis.traits.split_half_count`) sees the items: each target's items are split in two, 20
times, and the rank whose fit on one half best predicts the other wins. A pick is right when it
equals k. This measures accuracy, not speed, so it is the same on any CPU.

With `--seed-noise`, every source is trained 2 or 3 times: each adapter adds its own training
noise to every cell (normal, with a variance of 25-200% of the signal's variance across sources,
the training noise seen in real studies), and the three counts are compared on the seed-averaged
matrix: seed split (`analysis.traits.seed_split_count`, the noise measured from the seeds),
split-half over items, and parallel analysis. Whether the data allow a count is measured, not
assumed: `detectability` is the weakest planted trait's eigenvalue over the noise a seed mean
carries, scaled by sqrt(targets / sources) (the edge below which random-matrix theory says no
method can see a trait, at 1).

    .venv/bin/python benchmarks/trait_count.py --repeats 4
    .venv/bin/python benchmarks/trait_count.py --seed-noise --repeats 4
"""

from __future__ import annotations

import argparse
import itertools
import platform
from collections import defaultdict

import numpy as np

from traitlens.analysis.traits import parallel_analysis, seed_split_count, split_half_count

SPLITS = 20


def truth(rng: np.random.Generator, sources: int, targets: int, k: int, rho: float, effect: float,
          items: int) -> np.ndarray:
    """The planted deltas (sources x targets)."""
    loadings = np.zeros((targets, k))
    loadings[np.arange(targets), np.arange(targets) % k] = rng.uniform(0.6, 1.0, targets)
    covariance = (1 - rho) * np.eye(k) + rho * np.ones((k, k))
    scores = rng.multivariate_normal(np.zeros(k), covariance, sources)
    return effect * np.sqrt(2 / items) * scores @ loadings.T


def planted(rng: np.random.Generator, sources: int, targets: int, k: int, rho: float, effect: float,
            items: int) -> np.ndarray:
    """Item values (models x targets x items); model 0 is the base."""
    means = np.vstack([np.zeros(targets), truth(rng, sources, targets, k, rho, effect, items)])
    difficulty = rng.standard_normal((1, targets, items))
    return means[:, :, None] + difficulty + rng.standard_normal((sources + 1, targets, items))


def delta(values: np.ndarray) -> np.ndarray:
    means = values.mean(axis=2)
    return means[1:] - means[0]


def picks(rng: np.random.Generator, values: np.ndarray) -> dict[str, int]:
    halves = item_halves(rng, values)
    return {"parallel analysis": parallel_count(rng, delta(values)), "split half": split_half_count(halves)[0]}


def item_halves(rng: np.random.Generator, values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """SPLITS random halvings of the items (models x targets x items): each half's delta matrix."""
    halves = []
    for _ in range(SPLITS):
        order = rng.permutation(values.shape[2])
        first, second = order[: len(order) // 2], order[len(order) // 2:]
        halves.append((delta(values[:, :, first]), delta(values[:, :, second])))
    return halves


def parallel_count(rng: np.random.Generator, matrix: np.ndarray) -> int:
    """Parallel analysis on the standardised matrix, at most the rank its shape allows."""
    z = (matrix - matrix.mean(axis=0)) / matrix.std(axis=0, ddof=1)
    return min(parallel_analysis(z, 200, seed=int(rng.integers(1 << 30))), min(z.shape[1], z.shape[0] - 1))


def with_seeds(rng: np.random.Generator, sources: int, targets: int, k: int, rho: float, seeds: int,
               noise: float, items: int, effect: float = 3.0) -> tuple[np.ndarray, float]:
    """(item values, seeds x (1 + sources) x targets x items with the one base in row 0 of each
    seed; detectability) of a planted study whose adapters carry training noise of `noise`
    times the signal's variance."""
    deltas = truth(rng, sources, targets, k, rho, effect, items)
    signal = deltas.var(axis=0, ddof=1).mean()
    offsets = np.sqrt(noise * signal) * rng.standard_normal((seeds, sources, targets))
    difficulty = rng.standard_normal((1, targets, items))
    base = difficulty + rng.standard_normal((1, targets, items))
    adapters = (deltas + offsets)[..., None] + difficulty + rng.standard_normal((seeds, sources, targets, items))
    values = np.concatenate([np.broadcast_to(base, (seeds, 1, targets, items)), adapters], axis=1)
    per_cell = noise * signal + 2 / items  # a cell's variance around its source's delta, one seed
    weakest = np.sort(np.linalg.eigvalsh(np.cov(deltas, rowvar=False)))[::-1][k - 1]
    return values, float(weakest / (per_cell / seeds * np.sqrt(targets / sources)))


def seed_picks(rng: np.random.Generator, values: np.ndarray) -> dict[str, int]:
    """The three counts on one planted study with seeds (seeds x models x targets x items)."""
    per_seed = np.stack([delta(v) for v in values])  # seeds x sources x targets
    halves = item_halves(rng, values.mean(axis=0))  # the pipeline averages seeds
    return {"seed split": seed_split_count(per_seed, samples=100, seed=int(rng.integers(1 << 30)))[0],
            "item split": split_half_count(halves)[0],
            "parallel analysis": parallel_count(rng, per_seed.mean(axis=0))}


def seed_noise(args) -> None:
    rng = np.random.default_rng(args.seed)
    conditions = list(itertools.product((1, 2, 3), (0.0, 0.5), ((12, 6), (16, 8), (24, 12), (40, 16)), (2, 3),
                                        (0.25, 0.5, 1.0, 2.0)))
    right = defaultdict(lambda: defaultdict(list))
    for k, rho, (sources, targets), seeds, noise in conditions:
        for _ in range(args.repeats):
            values, snr = with_seeds(rng, sources, targets, k, rho, seeds, noise, args.items)
            band = "< 4" if snr < 4 else "4-8" if snr < 8 else ">= 8"
            for method, count in seed_picks(rng, values).items():
                for factor, level in (("all", "all"), ("traits k", k), ("seeds", seeds),
                                      ("seed noise (x signal)", noise), ("sources x targets", f"{sources} x {targets}"),
                                      ("detectability", band), ("allowed (detectability >= 8)", snr >= 8)):
                    right[(factor, level)][method].append(count == k)
    methods = ["seed split", "item split", "parallel analysis"]
    print(f"Planted studies with seeds: {len(conditions) * args.repeats} ({len(conditions)} conditions x "
          f"{args.repeats}), {args.items} items per target, seed {args.seed}; machine: "
          f"{platform.processor() or platform.machine()}, numpy {np.__version__}.\n")
    _table(right, methods)


def _table(right, methods: list[str]) -> None:
    print("| factor | level | matrices | " + " | ".join(f"{m}: right" for m in methods) + " |")
    print("|---|---|---:|" + "---:|" * len(methods))
    for (factor, level), by_method in sorted(right.items(), key=lambda x: (x[0][0] != "all", x[0][0], str(x[0][1]))):
        n = len(by_method[methods[0]])
        print(f"| {factor} | {level} | {n} | " + " | ".join(f"{np.mean(by_method[m]):.0%}" for m in methods) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=4, help="planted matrices per condition")
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seed-noise", action="store_true",
                        help="studies with 2-3 seeds per source and training noise (see the docstring)")
    args = parser.parse_args()
    if args.seed_noise:
        return seed_noise(args)
    rng = np.random.default_rng(args.seed)
    conditions = list(itertools.product((1, 2, 3, 4), (0.0, 0.5), ((6, 6), (12, 8), (24, 16)), (1.5, 3.0, 6.0)))
    right = defaultdict(lambda: defaultdict(list))
    chosen = defaultdict(list)
    for k, rho, (sources, targets), effect in conditions:
        for _ in range(args.repeats):
            found = picks(rng, planted(rng, sources, targets, k, rho, effect, args.items))
            for method, count in found.items():
                for factor, level in (("all", "all"), ("traits k", k), ("trait correlation", rho),
                                      ("sources x targets", f"{sources} x {targets}"), ("effect (SE)", effect)):
                    right[(factor, level)][method].append(count == k)
                chosen[(method, k)].append(count)
    methods = ["split half", "parallel analysis"]
    print(f"Planted matrices: {len(conditions) * args.repeats} ({len(conditions)} conditions x {args.repeats}), "
          f"{args.items} items per target, seed {args.seed}; machine: {platform.processor() or platform.machine()}, "
          f"numpy {np.__version__}.\n")
    _table(right, methods)
    print("\nMean count picked, by true k:\n")
    print("| true k | " + " | ".join(methods) + " |")
    print("|---:|" + "---:|" * len(methods))
    for k in (1, 2, 3, 4):
        print(f"| {k} | " + " | ".join(f"{np.mean(chosen[(m, k)]):.2f}" for m in methods) + " |")


if __name__ == "__main__":
    main()
