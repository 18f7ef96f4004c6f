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

    .venv/bin/python benchmarks/trait_count.py --repeats 4
"""

from __future__ import annotations

import argparse
import itertools
import platform
from collections import defaultdict

import numpy as np

from traitlens.analysis.traits import parallel_analysis, split_half_count

SPLITS = 20


def planted(rng: np.random.Generator, sources: int, targets: int, k: int, rho: float, effect: float,
            items: int) -> np.ndarray:
    """Item values (models x targets x items); model 0 is the base."""
    loadings = np.zeros((targets, k))
    loadings[np.arange(targets), np.arange(targets) % k] = rng.uniform(0.6, 1.0, targets)
    covariance = (1 - rho) * np.eye(k) + rho * np.ones((k, k))
    scores = rng.multivariate_normal(np.zeros(k), covariance, sources)
    truth = effect * np.sqrt(2 / items) * scores @ loadings.T  # sources x targets
    means = np.vstack([np.zeros(targets), truth])
    difficulty = rng.standard_normal((1, targets, items))
    return means[:, :, None] + difficulty + rng.standard_normal((sources + 1, targets, items))


def delta(values: np.ndarray) -> np.ndarray:
    means = values.mean(axis=2)
    return means[1:] - means[0]


def picks(rng: np.random.Generator, values: np.ndarray) -> dict[str, int]:
    matrix = delta(values)
    z = (matrix - matrix.mean(axis=0)) / matrix.std(axis=0, ddof=1)
    limit = min(z.shape[1], z.shape[0] - 1)
    halves = []
    for _ in range(SPLITS):
        order = rng.permutation(values.shape[2])
        first, second = order[: len(order) // 2], order[len(order) // 2:]
        halves.append((delta(values[:, :, first]), delta(values[:, :, second])))
    return {"parallel analysis": min(parallel_analysis(z, 200, seed=int(rng.integers(1 << 30))), limit),
            "split half": split_half_count(halves)[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=4, help="planted matrices per condition")
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
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
    print("| factor | level | matrices | " + " | ".join(f"{m}: right" for m in methods) + " |")
    print("|---|---|---:|" + "---:|" * len(methods))
    for (factor, level), by_method in sorted(right.items(), key=lambda x: (x[0][0] != "all", x[0][0], str(x[0][1]))):
        n = len(by_method[methods[0]])
        print(f"| {factor} | {level} | {n} | " + " | ".join(f"{np.mean(by_method[m]):.0%}" for m in methods) + " |")
    print("\nMean count picked, by true k:\n")
    print("| true k | " + " | ".join(methods) + " |")
    print("|---:|" + "---:|" * len(methods))
    for k in (1, 2, 3, 4):
        print(f"| {k} | " + " | ".join(f"{np.mean(chosen[(m, k)]):.2f}" for m in methods) + " |")


if __name__ == "__main__":
    main()
