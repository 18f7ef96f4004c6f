"""Do common random numbers lower the seed variance of differences between sources?

With `training.seed_streams: shared`, seed s draws the same LoRA initialisation and the same
data-order stream for every source; with `per_source`, each source's seed draws its own. If part
of a seed's effect on a target is the same whatever the source (the initialisation pushes every
adapter the same way), shared streams cancel that part in a contrast between two sources.

For two pilot exports that differ only in their seed streams (same sources, targets, items, length
and seeds), per target and pair of sources:
- `contrast`: the variance over seeds of cell(a, s) - cell(b, s), seeds paired by number;
- `single`: the mean over the two sources of the variance over seeds of their own cells;
- `common share` = 1 - contrast / (2 single): the part of the seed variance that is common to the
  sources and cancels in a contrast. About 0 when streams are independent; up to 1 when the
  seed's effect does not depend on the source.

The units are (target, source pair) contrasts, not independent draws: the interval is a bootstrap
over them and counts which contrasts were measured, not the seeds' sampling (3 seeds per source
give each variance 2 degrees of freedom). Reproduce docs/design-a-study.md's figures with

    .venv/bin/python benchmarks/common_random_numbers.py \\
        studies/quickstart-pilot/shared/pilot-data/quickstart-pilot-24 \\
        studies/quickstart-pilot/per-source/pilot-data/quickstart-pilot-24-own-streams

and a planted check (known common share) with `--planted`.
"""

from __future__ import annotations

import argparse
import itertools
import platform
from pathlib import Path

import numpy as np
import pandas as pd


def adapter_cells(results) -> pd.DataFrame:
    """Per adapter and target: its score under the export's metric (the base's subtracted)."""
    rows = []
    for target, scores in results.scores.items():
        full = scores.full()
        for cell in results.cells[(results.cells["target"] == target) & results.cells["source"].notna()].itertuples():
            rows.append({"target": target, "source": cell.source, "seed": int(cell.seed),
                         "delta": full[cell.model] - full["base"]})
    return pd.DataFrame(rows)


def contrasts(cells: pd.DataFrame) -> pd.DataFrame:
    """Per target and source pair: the seed variance of their contrast and of each alone."""
    rows = []
    for target, group in cells.groupby("target"):
        table = group.pivot(index="seed", columns="source", values="delta").dropna()
        for a, b in itertools.combinations(sorted(table.columns), 2):
            rows.append({"target": target, "a": a, "b": b, "seeds": len(table),
                         "contrast": float((table[a] - table[b]).var(ddof=1)),
                         "single": float((table[a].var(ddof=1) + table[b].var(ddof=1)) / 2)})
    return pd.DataFrame(rows)


def common_share(table: pd.DataFrame, draws: int = 2000, seed: int = 0) -> dict:
    """1 - mean contrast variance / (2 x mean single variance), with a bootstrap over contrasts."""
    share = lambda t: 1 - t["contrast"].mean() / (2 * t["single"].mean())
    rng = np.random.default_rng(seed)
    boot = [share(table.iloc[rng.integers(0, len(table), len(table))]) for _ in range(draws)]
    return {"contrasts": len(table), "contrast_var": float(table["contrast"].mean()),
            "single_var": float(table["single"].mean()), "common_share": float(share(table)),
            "low": float(np.quantile(boot, 0.025)), "high": float(np.quantile(boot, 0.975))}


def planted(rng, common: float, shared: bool, sources=6, seeds=3, targets=8) -> pd.DataFrame:
    """Adapter cells whose seed effect has a part of variance `common` shared across sources
    (when `shared`) and an own part of variance 1 - common."""
    rows = []
    for t in range(targets):
        common_effect = rng.normal(0, np.sqrt(common), seeds)
        for s in range(sources):
            effect = rng.normal(0, 1)
            mine = common_effect if shared else rng.normal(0, np.sqrt(common), seeds)
            for r in range(seeds):
                rows.append({"target": f"t{t}", "source": f"s{s}", "seed": r,
                             "delta": effect + mine[r] + rng.normal(0, np.sqrt(1 - common))})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", nargs="*", type=Path, help="Two item-level exports: shared streams, then per source.")
    parser.add_argument("--planted", type=float, metavar="SHARE",
                        help="Instead: planted cells whose seed effect has this common share.")
    parser.add_argument("--metric", help="Score under this metric (default: the exports' analysis.metric).")
    args = parser.parse_args()
    print(f"CPU: {platform.processor() or platform.machine()} (no timing in this benchmark)")
    if args.planted is not None:
        rng = np.random.default_rng(0)
        tables = {"shared": planted(rng, args.planted, True), "per_source": planted(rng, args.planted, False)}
    else:
        from traitlens import load_items

        if len(args.exports) != 2:
            parser.error("give two exports (shared streams, then per source), or --planted SHARE")
        tables = {}
        for name, folder in zip(("shared", "per_source"), args.exports):
            results = load_items(folder)
            tables[name] = adapter_cells(results.scored(args.metric) if args.metric else results)
    rows = {name: common_share(contrasts(cells)) for name, cells in tables.items()}
    frame = pd.DataFrame(rows).T
    print(frame.round(4).to_string())
    ratio = rows["shared"]["contrast_var"] / rows["per_source"]["contrast_var"]
    print(f"contrast variance, shared / per source: {ratio:.2f}")


if __name__ == "__main__":
    main()
