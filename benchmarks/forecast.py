"""How well #23's forecasts predict a finished study's transfer matrix, per probe kind and budget.

Reads item-level export folders (a report's `-data` folder: items, `features.json`, and the
study's stored forecasts in `forecasts.csv`, written when `traitlens forecast` ran before the
report). Every forecast is scored against the measured delta matrix (`forecast.quality`):
- Spearman over all cells, and the median over targets of the per-target Spearman;
- top-1 regret per target (metric units), averaged;
- Tucker congruence of forecast traits with measured traits (PCA, the study's rotation and
  standardisation, the measured trait count), beside what a forecast of this shape with no
  structure reaches (its columns permuted across sources; 95th percentile);
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

Beside every probe, the trivial forecasts it must beat, with intervals made the same way:
`zeros` (no transfer anywhere) and `target means` (each source's cell: the other sources' mean
on that target). Coverage alone flatters wide intervals, so each row also gives the mean
interval width and the interval (Winkler) score.

Where the study has two or more seeds, two reference rows:
- `seed 1 vs seed 0`: one seed's full matrix against the other's, the agreement of two single
  trainings;
- `ceiling (seed mean)`: what a perfect forecast can reach against the matrix it is scored on,
  the mean of the seeds (`forecast.quality.ceiling`, from each target's seed-to-seed Spearman):
  the noise ceiling to read every forecast against.

Given two or more exports, each study's forecasts are also checked against the others', as a
store holding those finished studies would use them:
- `calibrated on <other>`: the probe's intervals, the conformal half-width of the other study's
  errors (`forecast.calibrate.stored_width` does this from the store);
- `combination (...) learned on <others>`: `traitlens forecast --probe combined`, the ridge of
  `forecast.combine` fitted on the other studies' cells alone, no cell of this study seen.

This benchmark measures accuracy, not speed: the figures are the same on any CPU; the machine
is printed for the record.

    .venv/bin/python benchmarks/forecast.py studies/traits-offline/report-data \\
        studies/traits-offline/quickstart-report-data
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import replace
from pathlib import Path

import pandas as pd

import traitlens
from traitlens.analysis.export import FORECASTS_FILE
from traitlens.forecast.calibrate import conformal_width
from traitlens.forecast.combine import COMPONENTS, cell_table, combine
from traitlens.forecast.profiles import GROUPS, feature_forecast
from traitlens.forecast.quality import ceiling, forecast_quality
from traitlens.models.device import bf16_native, cpu_name


def load(export: Path) -> dict:
    """The export's results, measured delta matrix and stored probe matrices by (kind, budget)."""
    results = traitlens.load_items(export)
    if results.features is None:
        raise SystemExit(f"{export}: no features.json; rebuild the report after `traitlens explain`.")
    measured = results.matrix("delta").dropna(how="all")
    stored = pd.read_csv(export / FORECASTS_FILE) if (export / FORECASTS_FILE).exists() else pd.DataFrame(
        columns=["probe", "budget", "source", "target", "delta", "spent"])
    probes = {(probe, budget): (cells.pivot(index="source", columns="target", values="delta").reindex_like(measured),
                                float(cells["spent"].iloc[0]))
              for (probe, budget), cells in stored.groupby(["probe", "budget"])}
    return {"results": results, "measured": measured, "probes": probes, "n_traits": len(results.traits().names_)}


def _quality_row(study: dict, name: str, budget: float, spent: float, delta, low, high, measured=None) -> dict:
    results, measured = study["results"], study["measured"] if measured is None else measured
    settings = results.settings
    quality = forecast_quality(delta, measured, study["n_traits"], low, high, settings.rotation, settings.standardize)
    return {"study": results.study, "forecast": name, "budget": budget, "spent": round(spent, 3),
            "spearman (all cells)": round(quality.spearman, 3),
            "spearman (median over targets)": round(float(quality.per_target["spearman"].median()), 3),
            "top-1 regret": round(quality.regret, 3),
            "trait congruence": " / ".join(f"{c:.2f}" for c in quality.congruence) or "-",
            "chance (95%)": " / ".join(f"{c:.2f}" for c in quality.congruence_null_95) or "-",
            "95% coverage": "-" if quality.coverage is None else round(quality.coverage, 3),
            "width": "-" if quality.width is None else round(quality.width, 3),
            "interval score": "-" if quality.winkler is None else round(quality.winkler, 3)}


def score(study: dict) -> pd.DataFrame:
    results, measured, probes = study["results"], study["measured"], study["probes"]
    rows = []
    add = lambda *row: rows.append(_quality_row(study, *row))

    for name, groups in [(group, (group,)) for group in GROUPS] + [("all features", GROUPS)]:
        forecast = feature_forecast(results.features, measured, groups)
        add(name, 0.0, 0.0, forecast.delta, forecast.low, forecast.high)

    for name, forecast in (("zeros", measured * 0.0), ("target means", _loso_means(measured))):
        add(name, 0.0, 0.0, forecast, *_loso_intervals(forecast, measured))
    seeds = sorted(results.cells["seed"].dropna().unique())
    if len(seeds) >= 2:  # the reference: how well one fully trained seed predicts another
        base = results.cells["source"].isna()
        one = lambda seed: replace(results, cells=results.cells[base | (results.cells["seed"] == seed)]).matrix("delta")
        pair = _quality_row(study, f"seed {seeds[1]:g} vs seed {seeds[0]:g} (reference)", 1.0, 1.0, one(seeds[1]),
                            None, None, measured=one(seeds[0]))
        rows.append(pair)
        agreement = forecast_quality(one(seeds[1]), one(seeds[0]), 0).per_target["spearman"]
        rows.append({"study": results.study, "forecast": f"ceiling (mean of {len(seeds)} seeds)", "budget": 1.0,
                     "spent": 1.0, "spearman (all cells)": round(ceiling(pair["spearman (all cells)"], len(seeds)), 3),
                     "spearman (median over targets)": round(float(agreement.map(
                         lambda r: ceiling(r, len(seeds)) if r == r else float("nan")).median()), 3)})
    for (probe, budget), (matrix, spent) in probes.items():
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


def across(study: dict, other: dict) -> pd.DataFrame:
    """`study`'s probe forecasts with intervals calibrated on `other`'s errors."""
    rows, name = [], other["results"].study
    for (probe, budget), (matrix, spent) in study["probes"].items():
        if (probe, budget) not in other["probes"]:
            continue
        errors = (other["probes"][(probe, budget)][0] - other["measured"]).abs().to_numpy().ravel()
        width = conformal_width(errors)
        if width is not None:
            rows.append(_quality_row(study, f"{probe} calibrated on {name}", budget, spent, matrix, matrix - width,
                                     matrix + width))
    return pd.DataFrame(rows)


def learned(study: dict, others: list[dict]) -> pd.DataFrame:
    """The combination as `traitlens forecast --probe combined` makes it (`forecast.combine`):
    per budget, `study`'s probes at that budget that other studies share, with the hidden
    statistics, by a ridge fitted on those studies' cells alone."""
    rows = []
    for budget in sorted({b for _, b in study["probes"]}):
        kinds = [(probe, budget) for probe in COMPONENTS
                 if (probe, budget) in study["probes"] and any((probe, budget) in o["probes"] for o in others)]
        teachers = [o for o in others if kinds and all(k in o["probes"] for k in kinds)]
        if not teachers:
            continue
        table = lambda s, measured: cell_table({p: s["probes"][(p, b)][0] for p, b in kinds}, s["results"].features,
                                               measured)
        forecast = combine({o["results"].study: table(o, o["measured"]) for o in teachers}, table(study, None))
        grid = lambda frame: frame.reindex_like(study["measured"])
        rows.append(_quality_row(
            study, f"combination ({' + '.join(p for p, _ in kinds)} + hidden) learned on "
                   + ", ".join(o["results"].study for o in teachers), budget,
            sum(study["probes"][k][1] for k in kinds), grid(forecast.delta), grid(forecast.low), grid(forecast.high)))
    return pd.DataFrame(rows)


def _loso_means(measured: pd.DataFrame) -> pd.DataFrame:
    """Each source's cell: the mean of the other sources' cells on that target."""
    total, count = measured.sum(), measured.notna().sum()
    return (-measured.fillna(0.0) + total).div((count - measured.notna().astype(int)).clip(lower=1)).where(
        measured.notna())


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
    studies = [load(export) for export in args.exports]
    tables = [score(study) for study in studies]
    tables += [across(study, other) for study in studies for other in studies if other is not study]
    tables += [learned(study, [other for other in studies if other is not study]) for study in studies]
    table = pd.concat(tables, ignore_index=True)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
