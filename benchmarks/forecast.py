"""How well #23's forecasts predict a finished study's transfer matrix, per probe kind and budget.

Reads item-level export folders (a report's `-data` folder: items, `features.json`, and the
study's stored forecasts in `forecasts.csv`, written when `traitlens forecast` ran before the
report). Every forecast is scored against the measured delta matrix (`forecast.quality`):
- Spearman over all cells, and the median over targets of the per-target Spearman;
- top-1 regret per target (metric units), averaged;
- Tucker congruence of forecast traits with measured traits (PCA, the study's rotation and
  standardisation, the measured trait count);
- coverage of 95% split-conformal intervals (`forecast.calibrate`), each source's interval
  calibrated on the other sources' errors (leave one source out), as a user's would be on
  finished studies;
- the compute spent, as a share of the full study's count (`traitlens plan --cost`).

The forecasts:
- features only (budget 0): a leave-one-source-out ridge from target means plus one feature
  group (profile, similarity, hidden statistics, quality) or all (`forecast.profiles`);
- `short` (`forecast.short`): the short-training probe, extrapolated where the budget paid for
  its learning curve, as stored; scored as is;
- `gradient` (`forecast.gradient`): gradient affinities, scored as is (its all-cells Spearman
  and regret mix units; per target it is a ranking);
- `<probe> fitted`: the probe's matrix put in delta units by the leave-one-source-out ridge with
  target means (what a user gets by fitting on measured cells);
- `combination`: short + gradient + hidden statistics in one leave-one-source-out ridge, at
  their summed spend.

This benchmark measures accuracy, not speed: the figures are the same on any CPU; the machine
is printed for the record.

    .venv/bin/python benchmarks/forecast.py studies/traits-offline/report-data \\
        studies/traits-offline/quickstart-report-data
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import pandas as pd

import traitlens
from traitlens.analysis.export import FORECASTS_FILE
from traitlens.forecast.calibrate import conformal_width
from traitlens.forecast.profiles import GROUPS, feature_forecast
from traitlens.forecast.quality import forecast_quality
from traitlens.models.device import bf16_native, cpu_name


def score(export: Path) -> pd.DataFrame:
    results = traitlens.load_items(export)
    if results.features is None:
        raise SystemExit(f"{export}: no features.json; rebuild the report after `traitlens explain`.")
    measured = results.matrix("delta").dropna(how="all")
    n_traits = len(results.traits().names)
    settings = results.settings
    rows = []

    def add(name: str, budget: float, spent: float, delta, low, high) -> None:
        quality = forecast_quality(delta, measured, n_traits, low, high, settings.rotation, settings.standardize)
        rows.append({"study": results.study, "forecast": name, "budget": budget, "spent": round(spent, 3),
                     "spearman (all cells)": round(quality.spearman, 3),
                     "spearman (median over targets)": round(float(quality.per_target["spearman"].median()), 3),
                     "top-1 regret": round(quality.regret, 3),
                     "trait congruence": " / ".join(f"{c:.2f}" for c in quality.congruence) or "-",
                     "95% coverage": "-" if quality.coverage is None else round(quality.coverage, 3)})

    for name, groups in [(group, (group,)) for group in GROUPS] + [("all features", GROUPS)]:
        forecast = feature_forecast(results.features, measured, groups)
        add(name, 0.0, 0.0, forecast.delta, forecast.low, forecast.high)

    stored = pd.read_csv(export / FORECASTS_FILE) if (export / FORECASTS_FILE).exists() else pd.DataFrame(
        columns=["probe", "budget", "source", "target", "delta", "spent"])
    probes = {}
    for (probe, budget), cells in stored.groupby(["probe", "budget"]):
        matrix = cells.pivot(index="source", columns="target", values="delta").reindex_like(measured)
        spent = float(cells["spent"].iloc[0])
        probes[(probe, budget)] = (matrix, spent)
        low, high = _loso_intervals(matrix, measured)
        add(probe, budget, spent, matrix, low, high)
        fitted = feature_forecast(results.features, measured, (), extra={probe: matrix})
        add(f"{probe} fitted", budget, spent, fitted.delta, fitted.low, fitted.high)
    for budget in sorted({b for _, b in probes}):
        if ("short", budget) in probes and ("gradient", budget) in probes:
            (short, a), (gradient, b) = probes[("short", budget)], probes[("gradient", budget)]
            combined = feature_forecast(results.features, measured, ("hidden",),
                                        extra={"short": short, "gradient": gradient})
            add("combination", budget, a + b, combined.delta, combined.low, combined.high)
    return pd.DataFrame(rows)


def _loso_intervals(forecast: pd.DataFrame, measured: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each source's interval half-width: the conformal quantile of the other sources' errors."""
    errors = (forecast - measured).abs()
    width = pd.Series({source: conformal_width(errors.drop(index=source).to_numpy().ravel())
                       for source in forecast.index}, dtype=float)
    return forecast.sub(width, axis=0), forecast.add(width, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exports", nargs="+", type=Path, help="item-level export folders with features.json")
    args = parser.parse_args()
    print(f"machine: {cpu_name()}, bfloat16 native: {bf16_native('cpu')}; Python {platform.python_version()} "
          "(accuracy figures: the same on any CPU)")
    table = pd.concat([score(export) for export in args.exports], ignore_index=True)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
