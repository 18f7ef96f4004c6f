"""How well the cheap forecasts of #23 predict a finished study's transfer matrix.

For each item-level export given (a report's `-data` folder with its `features.json`), every
forecast built so far predicts each source's row as if the source were new. The forecasts are
one per feature group (profile, similarity, hidden statistics, quality) and all groups together
(`forecast.profiles`). Each is scored against the measured delta matrix (`forecast.quality`):
- Spearman over all cells, and the median over targets of the per-target Spearman;
- top-1 regret per target, averaged;
- Tucker congruence of forecast traits with measured traits (PCA, varimax, the measured
  trait count);
- coverage of the 95% intervals.

Spent compute: these forecasts train nothing and score nothing, so their budget is 0 of the
study's count (`traitlens plan --cost`). Their only cost is the features: one pass of the base
over at most 1,000 answers per dataset, and MiniLM embeddings. This benchmark measures
accuracy, not speed, so it is the same on any CPU.

The short-training and gradient-affinity probes are not built yet. This benchmark reports none
of their rows until they are.

    .venv/bin/python benchmarks/forecast.py studies/traits-offline/report-data \\
        studies/traits-offline/smollm2-report-data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

import traitlens
from traitlens.forecast.profiles import GROUPS, feature_forecast
from traitlens.forecast.quality import forecast_quality


def score(export: Path) -> pd.DataFrame:
    results = traitlens.load_items(export)
    if results.features is None:
        raise SystemExit(f"{export}: no features.json; rebuild the report after `traitlens explain`.")
    measured = results.matrix("delta").dropna(how="all")
    n_traits = len(results.traits().names)
    rows = []
    for name, groups in [(group, (group,)) for group in GROUPS] + [("all features", GROUPS)]:
        forecast = feature_forecast(results.features, measured, groups)
        quality = forecast_quality(forecast.delta, measured, n_traits, forecast.low, forecast.high,
                                   results.settings.rotation, results.settings.standardize)
        rows.append({"study": results.study, "forecast": name, "budget spent": 0.0,
                     "spearman (all cells)": round(quality.spearman, 3),
                     "spearman (median over targets)": round(float(quality.per_target["spearman"].median()), 3),
                     "top-1 regret": round(quality.regret, 3),
                     "trait congruence": " / ".join(f"{c:.2f}" for c in quality.congruence),
                     "95% coverage": round(quality.coverage, 3)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exports", nargs="+", type=Path, help="item-level export folders with features.json")
    args = parser.parse_args()
    table = pd.concat([score(export) for export in args.exports], ignore_index=True)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
