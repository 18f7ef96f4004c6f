"""Build the report page and its CSV/JSON exports from what the store holds; no model needed."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import numpy as np
import pandas as pd
import plotly.io
from plotly.offline import get_plotlyjs

from traitlens.version import __version__
from traitlens.analysis.export import FEATURES_FILE, FORECASTS_FILE, export_items
from traitlens.analysis.features import Features
from traitlens.analysis.metrics import DESCRIPTIONS
from traitlens.analysis.pilot import validation_drops
from traitlens.analysis.results import Results
from traitlens.config.schema import BASE, Study
from traitlens.faults import crash_point
from traitlens.report import figures

SECTIONS = [("checks", "Read first"), ("glance", "Study"), ("matrix", "Transfer matrix"),
            ("reliability", "Reliability"), ("traits", "Traits"),
            ("effects", "Side effects"), ("profiles", "Profiles"), ("explanation", "Why"),
            ("recommendations", "Recommendations"), ("forecasts", "Forecasts"), ("lengths", "Lengths"), ("confusion", "Confusion"),
            ("provenance", "Provenance")]
PROFILE_COLUMNS = ("size", "n_classes", "class_entropy_norm", "majority_share", "answer_tokens_mean",
                   "input_tokens_mean", "mtld", "readability", "digit_density", "question_rate",
                   "negation_rate", "duplicate_rate", "answer_perplexity")


@dataclass
class ReportInputs:
    """Everything a report shows, as read from the store or recomputed from an export
    (`recipes.report`): the report itself opens no store, loads no model and computes no
    analysis."""

    study: Study  # the config
    results: Results  # the finished cells and their items (with the datasets' features, if computed)
    traits: dict[str, Any]  # the stored trait analysis for these cells and settings
    traits_key: str
    explanation: dict[str, Any] | None  # the stored explanation for these cells, settings and features
    adapters: list[dict[str, Any]]  # per adapter: source, seed, key, meta (what training recorded)
    examples: dict[str, str]  # target -> one rendered prompt
    base_identity: dict[str, Any]
    store: Path
    intervals: pd.DataFrame  # every cell's score with its interval (`analysis.uncertainty.score_intervals`)
    forecasts: pd.DataFrame | None = None  # the study's stored forecast cells (`Store.forecasts`)
    from_export: bool = False  # rebuilt from an item-level export, the store gone (`recipes.report.inputs_from_export`)


ADAPTERS_FILE = "adapters.json"  # each adapter's training record, so a report rebuilt from the export keeps them
NOT_COMPUTED = ("Not computed for this store yet: <code>traitlens explain STUDY.yaml</code> profiles the datasets and "
                "explains transfer (it loads the base model and an embedding model once); the report only reads "
                "what that stored.")


def build_report(inputs: ReportInputs, out: Path) -> Path:
    """Write `out` (one HTML file) and `<out stem>-data/` (CSV and JSON tables); return `out`."""
    study, results, analysis = inputs.study, inputs.results, inputs.traits
    raw, delta, loadings, scores = _tables(inputs)
    names = [t["name"] for t in analysis["traits"]]
    alpha = study.analysis.alpha
    features, explained = results.features, inputs.explanation
    figs, length_ids, confusion_ids = _figures(inputs, raw, delta, loadings, scores, names)

    context = {
        "explanation": _explanation(explained) if explained else None,
        "profiles": _profiles(features, [s.name for s in study.sources], [t.name for t in study.targets])
        if features else None, "not_computed": markupsafe.Markup(NOT_COMPUTED),
        "study": study, "version": __version__, "store": str(inputs.store),
        "built": time.strftime("%Y-%m-%d %H:%M"), "sections": SECTIONS, "alpha": alpha,
        "confidence": round(100 * (1 - alpha)), "analysis_key": inputs.traits_key,
        "base_identity": json.dumps(inputs.base_identity),
        "settings": {name: json.dumps(getattr(study, name).model_dump(mode="json"))
                     for name in ("analysis", "lora", "training", "evaluation")},
        "sources": [_source_row(source, inputs.adapters) for source in study.sources],
        "from_export": inputs.from_export,
        "targets": [_target_row(target, results.cells, inputs.examples) for target in study.targets],
        "matrix": {"columns": list(raw.columns),
                   "rows": [(model, [_num(v) for v in row]) for model, row in raw.iterrows()]},
        "cells": [{"model": r["model"], "target": r["target"], "delta": _num(r["delta"], True),
                   "interval": f"[{_num(r['low'], True)}, {_num(r['high'], True)}]", "p": _p(r["p"]),
                   "q": _p(r["q"]), "key": _cell_key(results.cells, r["model"], r["target"])}
                  for r in analysis["uncertainty"]],
        "traits_intro": (f"{len(names)} trait(s) from {study.analysis.method} with {study.analysis.rotation} "
                         f"rotation on the {study.analysis.view} matrix"
                         f"{' with the diagonal masked' if study.analysis.mask_diagonal else ''}, targets "
                         f"{'standardised' if study.analysis.standardize else 'centred, not standardised'}."),
        "no_traits": analysis.get("no_traits"),
        "traits": [_trait_row(t) for t in analysis["traits"]],
        "reliability": reliability_summary(analysis.get("reliability", [])),
        "trait_count": trait_count_text(analysis.get("trait_count", {})),
        "metric": {"name": analysis["metric"], "description": DESCRIPTIONS[analysis["metric"]],
                   "fallbacks": ", ".join(f"{t}: {m}" for t, m in analysis["used"].items() if m != analysis["metric"])},
        "checks": _checks(analysis, inputs.adapters),
        "side_effects": [{"model": e["model"], "target": e["target"], "delta": _num(e["delta"], True),
                          "interval": f"[{_num(e['low'], True)}, {_num(e['high'], True)}]", "q": _p(e["q"])}
                         for e in analysis["side_effects"]],
        "asymmetry": [{**a, **{k: _num(a[k], True) for k in ("a_to_b", "b_to_a", "difference")},
                       "interval": f"[{_num(a['low'], True)}, {_num(a['high'], True)}]", "p": _p(a["p"])}
                      for a in analysis["asymmetry"]],
        "forecasts": _forecasts(inputs.forecasts, delta),
        "length_figures": length_ids, "confusion_figures": confusion_ids, "validation_figure": "validation" in figs,
        "figures": [(name, script_json(figure)) for name, figure in figs.items()],
        "plotly_js": get_plotlyjs(),
    }
    environment = jinja2.Environment(loader=jinja2.PackageLoader("traitlens", "report"),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(environment.get_template("template.html.j2").render(context), encoding="utf-8")
    crash_point("report")
    _export(out.with_name(f"{out.stem}-data"), inputs, raw, delta, inputs.intervals, loadings, scores)
    return out


def _tables(inputs: ReportInputs) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(raw matrix, delta matrix, loadings, scores) from the stored analysis, in the study's
    order of sources and targets (the stored JSON has sorted keys)."""
    study, analysis = inputs.study, inputs.traits
    raw = pd.DataFrame(analysis["raw"], dtype=float)  # JSON brings a column of whole numbers back as integers
    raw = raw.reindex(index=[m for m in [BASE, *(s.name for s in study.sources)] if m in raw.index],
                      columns=[t.name for t in study.targets if t.name in raw.columns])
    loadings = pd.DataFrame({t["name"]: t["loadings"] for t in analysis["traits"]})
    loadings = loadings.reindex([t for t in raw.columns if t in loadings.index])
    scores = pd.DataFrame({t["name"]: t["scores"] for t in analysis["traits"]})
    scores = scores.reindex([s for s in raw.index if s in scores.index])
    return raw, raw.drop(index=BASE) - raw.loc[BASE], loadings, scores


def _figures(inputs: ReportInputs, raw: pd.DataFrame, delta: pd.DataFrame, loadings: pd.DataFrame,
             scores: pd.DataFrame, names: list[str]) -> tuple[dict[str, dict], list[str], list[str]]:
    """The page's figures by id, and the ids of the per-target length and confusion figures."""
    study, results, analysis = inputs.study, inputs.results, inputs.traits
    features, alpha = results.features, study.analysis.alpha
    figs = {"delta": figures.delta_heatmap(delta, raw, pd.DataFrame(analysis["source_uncertainty"]),
                                           pd.DataFrame(analysis["uncertainty"]), alpha)}
    if names:  # a study too small or flat for traits still gets its matrix and effects
        standardized = study.analysis.standardize
        figs |= {"scree": figures.scree(_eigenvalues(pd.DataFrame(analysis["matrix"]), standardized), len(names),
                                        standardized),
                 "loadings": figures.loadings_heatmap(loadings, names),
                 "biplot": figures.biplot(scores, loadings)}
    if any(a["meta"].get("validation") for a in inputs.adapters):
        figs["validation"] = figures.validation_curves(inputs.adapters)
    length_ids, confusion_ids = [], []
    for target in study.targets:
        cells = results.cells[results.cells["target"] == target.name]
        if target.kind in ("generative", "generation_classification"):
            answers = features.answer_lengths if features else {}
            reference = {f"{target.name} answers": answers.get("targets", {}).get(target.name, [])}
            reference |= {f"{name} answers (source)": values for name, values in answers.get("sources", {}).items()}
            figs[f"length-{target.name}"] = figures.lengths(target.name, {
                model: [i["generated_tokens"] for i in results.outputs[target.name][model]] for model in cells["model"]},
                {label: values for label, values in reference.items() if values})
            length_ids.append(f"length-{target.name}")
        if target.kind != "generative":
            matrices = {row.model: row.metrics["confusion"] for row in cells.itertuples() if "confusion" in row.metrics}
            if matrices:
                figs[f"confusion-{target.name}"] = figures.confusion(target.name, matrices)
                confusion_ids.append(f"confusion-{target.name}")
    return figs, length_ids, confusion_ids


def _trait_row(t: dict[str, Any]) -> dict[str, Any]:
    """One trait's line in the traits table: name, variance explained, stability beside chance."""
    return {"trait": t["trait"], "name": t["name"], "explained": f"{t['explained']:.0%}",
            "stability": _num(t["median_congruence"]), "null": _null(t),
            "share": _share(t, "share_above_null", "share_at_least_0.85"),
            "loso": f"{_num(t['loso_min'])} / {_num(t['loso_median'])}",
            "source_stability": _num(t["source_median"]),
            "source_share": _share(t, "source_share_above_null", "source_share_at_least_0.85"),
            "seeds": (f"{_num(t['seed_congruence'])} (null 95%: {_num(t['seed_null_95'])}): "
                     f"{t['across_seeds']}" if t.get("across_seeds") else "one seed: not measured")}


def _forecasts(stored: pd.DataFrame | None, delta: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per stored forecast (probe kind, budget) with its agreement with the measured
    cells shown in this report (`forecast.quality`; no trait congruence here: the traits
    section has the measured traits, and `benchmarks/forecast.py` compares them)."""
    from traitlens.forecast.quality import forecast_quality

    rows = []
    for (probe, budget), cells in ([] if stored is None else stored.groupby(["probe", "budget"])):
        grid = lambda column: cells.pivot(index="source", columns="target", values=column)
        forecast, measured = grid("delta"), delta.reindex(index=grid("delta").index)
        quality = forecast_quality(forecast, measured, 0, grid("low"), grid("high")) \
            if measured.notna().sum().sum() > 2 else None
        width = (cells["high"] - cells["delta"]).median()
        rows.append({"probe": probe, "budget": f"{budget:g}", "spent": f"{cells['spent'].iloc[0]:.1%}",
                     "cells": len(cells), "interval": "-" if pd.isna(width) else f"± {width:.3f}",
                     "spearman": _num(quality.spearman) if quality else "-",
                     "per_target": _num(quality.per_target["spearman"].median()) if quality else "-",
                     "regret": _num(quality.regret) if quality else "-",
                     "coverage": "-" if quality is None or quality.coverage is None else f"{quality.coverage:.0%}",
                     "score": "-" if quality is None or quality.winkler is None else _num(quality.winkler)})
    return rows


def _profiles(features: Features, sources: list[str], targets: list[str]) -> dict[str, Any]:
    """Profiles in the study's order (the stored JSON has sorted keys)."""
    rows = lambda profiles, order: [(name, [_num(profiles.loc[name].get(c)) for c in PROFILE_COLUMNS])
                                    for name in order if name in profiles.index]
    return {"columns": PROFILE_COLUMNS, "sources": rows(features.source_profiles, sources),
            "targets": rows(features.target_profiles, targets)}


def _explanation(stored: dict[str, Any]) -> dict[str, Any]:
    return {
        "verdict": stored["verdict"],
        "groups": [{"group": g["group"], "features": g.get("features", ""), "r2": _num(g["r2"], True),
                    "interval": f"[{_num(g['low'], True)}, {_num(g['high'], True)}]",
                    "null": _num(g.get("null_95"), True), "p": _p(g.get("p"))} for g in stored["groups"]],
        "recommendation_verdict": stored.get("recommendation_verdict", ""),
        "recommendation_quality": [{"method": q["method"], "regret": _num(q["regret"]), "ndcg3": _num(q["ndcg3"]),
                                    "targets": q["targets"]} for q in stored.get("recommendation_quality", [])],
        "recommendations": [{**r, "predicted": _num(r["predicted"], True), "observed": _num(r["observed"], True)}
                            for r in stored.get("recommendations", [])],
        "correlations": [{"feature": c["feature"], "outcome": c["outcome"], "rho": _num(c["rho"], True),
                          "interval": f"[{_num(c['low'], True)}, {_num(c['high'], True)}]"}
                         for c in stored["correlations"][:20]],
    }


def _checks(analysis: dict[str, Any], adapters: list[dict[str, Any]]) -> dict[str, Any]:
    """The diagnostics shown first: every flag as one line, and the tables behind them. Each
    source's validation-loss drop (mean over its adapters, where training held out a slice)
    comes from the adapters' training records."""
    diagnostics = analysis["diagnostics"]
    drops = validation_drops(adapters).groupby("source")["drop"].mean()
    flags = [f"{t['target']}: the base {flag}" for t in diagnostics["targets"] for flag in t["flags"]]
    flags += [f"{o['source']} on {o['target']}: {flag}" for o in diagnostics["own_task"] for flag in o["flags"]]
    flags += [f"{source}: its validation loss did not fall ({drop:+.3f}): it did not learn its source"
              for source, drop in drops.items() if drop <= 0]
    reliability = reliability_summary(analysis.get("reliability", []))
    if reliability["one_seed"] or reliability["unreproduced"]:
        flags.append(reliability["verdict"])
    return {"flags": flags,
            "targets": [{"target": t["target"], "metric": t["metric"], "base_score": _num(t["base_score"]),
                         "base_accuracy": _num(t["base_accuracy"]), "chance": _num(t["chance"]),
                         "p": _p(t["p_above_chance"]), "flags": "; ".join(t["flags"]),
                         "shares": ", ".join(f"{label} {share:.0%}" for label, share in
                                             sorted(t["predicted_shares"].items(), key=lambda x: -x[1]))}
                        for t in diagnostics["targets"]],
            "own": [{"source": o["source"], "target": o["target"], "delta": _num(o["delta"], True),
                     "interval": f"[{_num(o['low'], True)}, {_num(o['high'], True)}]",
                     "variance": o.get("variance", "not recorded (older analysis)"),
                     "validation_drop": _num(drops.get(o["source"]), True),
                     "accuracy_delta": _num(o["accuracy_delta"], True), "flags": "; ".join(o["flags"])}
                    for o in diagnostics["own_task"]]}


def _null(trait: dict[str, Any]) -> str:
    if trait.get("null_95") is None:
        return "not computed (older analysis)"
    return f"{_num(trait['null_median'])} / {_num(trait['null_95'])}"


def _share(trait: dict[str, Any], key: str, old: str) -> str:
    return f"{trait[key]:.0%}" if trait.get(key) is not None else f"{trait[old]:.0%} (≥ 0.85)"


RELIABILITY_GOAL = 0.8


def reliability_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The "How reliable is this matrix" section: a row per target and the plain sentences."""
    interval = lambda r, k: f"{_num(r[k])} [{_num(r[k + '_low'])}, {_num(r[k + '_high'])}]"  # noqa: E731
    table, unreproduced, one_seed = [], [], False
    for r in rows:
        if r.get("source") is None:
            blank = dict.fromkeys(("design", "source", "seed", "item", "source_item", "residual", "reliability",
                                   "seed_reliability", "split", "seed_f"), "-")
            table.append({**blank, "target": r["target"], "metric": r.get("metric", "-"), "note": r.get("note", "")})
            continue
        one_seed |= r["seeds"] < 2
        if r.get("seed_reliability") is not None and r["seed_reliability"] < RELIABILITY_GOAL:
            unreproduced.append(f"{r['target']} ({_num(r['seed_reliability'])})")
        table.append({"target": r["target"], "metric": r["metric"],
                      "design": f"{r['sources']} x {r['seeds']} x {r['items']}",
                      **{c: interval(r, c) for c in ("source", "seed", "item", "source_item", "residual")},
                      "reliability": interval(r, "reliability") if r.get("reliability") is not None else "-",
                      "seed_reliability": (interval(r, "seed_reliability")
                                           if r.get("seed_reliability") is not None else "-"),
                      "split": (f"{_num(r['split_correlation'])} -> {_num(r['split_reliability'])}"
                                if r.get("split_correlation") is not None else "-"),
                      "seed_f": f"{_num(r['seed_f'])} (p {_p(r['seed_f_p'])})" if r.get("seed_f") is not None else "-",
                      "note": r.get("note", "")})
    if all(row["design"] == "-" for row in table):
        verdict = ("No target's cells could be decomposed into source, seed and item variance (see each note: "
                   "balanced accuracy and macro-F1 have no per-item values; analysis.metric: calibrated_margin has).")
    elif one_seed:
        verdict = ("One seed per source: every interval counts item sampling only, and training noise (how much "
                   "another adapter of the same source would differ) is not measured. Run two or more seeds "
                   "(training.seeds) to know whether a retrained study would reproduce this matrix.")
    elif unreproduced:
        verdict = (f"A retrained study (new adapters, the same items) would not reproduce the source ranking of "
                   f"{', '.join(unreproduced)}: seed reliability below {RELIABILITY_GOAL}. "
                   "`traitlens reliability` projects the seeds and items that would.")
    else:
        verdict = f"Every decomposed target's source ranking has seed reliability of at least {RELIABILITY_GOAL}."
    skipped = [row["target"] for row in table if row["design"] == "-"]
    if skipped and not all(row["design"] == "-" for row in table):
        verdict += f" Not decomposed (no per-item values): {', '.join(skipped)}."
    return {"rows": table, "verdict": verdict, "unreproduced": unreproduced, "one_seed": one_seed}


def trait_count_text(count: dict[str, Any]) -> str:
    saturated = (f" That is the most this matrix's shape allows ({count['largest_possible']}): a saturated fit "
                 "explains everything by construction and is not a finding." if count.get("saturated") else "")
    return _count_method_text(count) + saturated


def _count_method_text(count: dict[str, Any]) -> str:
    if count.get("method") == "seed_split":
        found = count["reproducible"]
        steps = ", ".join(f"{k + 1}: {o:.2f} vs {t:.2f}" for k, (o, t) in
                          enumerate(zip(count["observed"], count["threshold"])))
        head = (f"{count['n_traits']} trait(s) chosen by seed split: the traits whose eigenvalue stands above the "
                f"training and item noise the {len(count['seeds'])} seeds themselves show (eigenvalue vs 95% "
                f"null, {steps}).")
        return head + (" No trait stands above that noise: the trait shown does not replicate across training "
                       "runs." if found == 0 else "")
    if count.get("method") == "split_half":
        errors = ", ".join(f"{k}: {e:.1f}" for k, e in enumerate(count["errors"]))
        return (f"{count['n_traits']} trait(s) chosen by split-half prediction: the rank whose fit on one half of "
                f"every target's items best predicts the other half, over {count['splits']} random halvings "
                f"(squared error by rank, {errors})."
                + (f" Fallback, {count['fallback']}." if count.get("fallback") else ""))
    if count.get("method") == "parallel_analysis":
        return f"{count['n_traits']} trait(s) chosen by parallel analysis."
    return f"{count.get('n_traits', 0)} trait(s), as configured." if count else ""


def _export(folder: Path, inputs: ReportInputs, raw, delta, intervals, loadings, scores) -> None:
    """The page's data folder: matrices, intervals, diagnostics, traits, features, explanation,
    stored forecasts, the adapters' training records and the item-level export."""
    analysis, explained, features = inputs.traits, inputs.explanation, inputs.results.features
    folder.mkdir(exist_ok=True)
    raw.to_csv(folder / "matrix_raw.csv")
    intervals.to_csv(folder / "cells_raw_intervals.csv", index=False)
    delta.to_csv(folder / "matrix_delta.csv")
    pd.DataFrame(analysis["uncertainty"]).to_csv(folder / "cells_uncertainty.csv", index=False)
    pd.DataFrame(analysis["source_uncertainty"]).to_csv(folder / "matrix_uncertainty.csv", index=False)
    pd.DataFrame(analysis.get("reliability", [])).to_csv(folder / "reliability.csv", index=False)
    pd.DataFrame(analysis["diagnostics"]["targets"]).to_csv(folder / "diagnostics_targets.csv", index=False)
    pd.DataFrame(analysis["diagnostics"]["own_task"]).to_csv(folder / "diagnostics_own_task.csv", index=False)
    loadings.to_csv(folder / "trait_loadings.csv")
    scores.to_csv(folder / "trait_scores.csv")
    pd.DataFrame([{k: v for k, v in t.items() if k not in ("loadings", "scores")} for t in analysis["traits"]]
                 ).to_csv(folder / "traits.csv", index=False)
    (folder / "traits.json").write_text(json.dumps(analysis, indent=1))
    if features:
        features.source_profiles.to_csv(folder / "source_profiles.csv")
        features.target_profiles.to_csv(folder / "target_profiles.csv")
        (folder / FEATURES_FILE).write_text(json.dumps(features.to_json(), indent=1))
    if explained:
        pd.DataFrame(explained["correlations"]).to_csv(folder / "feature_correlations.csv", index=False)
        pd.DataFrame(explained["groups"]).to_csv(folder / "feature_groups.csv", index=False)
        pd.DataFrame(explained.get("recommendations", [])).to_csv(folder / "recommendations.csv", index=False)
        pd.DataFrame(explained.get("recommendation_quality", [])).to_csv(folder / "recommendation_quality.csv",
                                                                         index=False)
        (folder / "explanation.json").write_text(json.dumps(explained, indent=1))
    if inputs.forecasts is not None and not inputs.forecasts.empty:
        inputs.forecasts.to_csv(folder / FORECASTS_FILE, index=False)
    if inputs.adapters:
        (folder / ADAPTERS_FILE).write_text(json.dumps(inputs.adapters, indent=1, default=str))
    export_items(inputs.results, folder)


def _source_row(source, adapters: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [{"seed": a["seed"], "key": a["key"], "steps": a["meta"]["steps"], "tokens": a["meta"]["tokens_seen"],
             "loss": f"{np.mean(a['meta']['loss_curve'][-3:]):.3f}", "minutes": f"{a['meta']['wall_seconds'] / 60:.1f}",
             "validation": _validation_text(a["meta"])}
            for a in adapters if a["source"] == source.name]
    return {"name": source.name, "dataset": source.dataset, "split": source.split,
            "transforms": json.dumps([t.model_dump(exclude_none=True) for t in source.transforms]),
            "adapters": rows}


def _validation_text(meta: dict[str, Any]) -> str:
    """An adapter's validation record in words: the loss before and at the kept weights, the
    best step, and the stop."""
    record = meta.get("validation")
    if not record:
        return ""
    kept = record.get("kept_loss", record["curve"][-1][1])
    stop = (f", stopped early at step {record['stopped_at']} of {meta.get('planned_steps', '?')}"
            if record.get("stopped_at") else "")
    return (f"validation loss {record['initial_loss']:.3f} -> {kept:.3f} on {record['holdout']} held-out examples "
            f"(best at step {record['best_step']}{stop})")


def _target_row(target, cells: pd.DataFrame, examples: dict[str, str]) -> dict[str, Any]:
    n_items = cells.loc[cells["target"] == target.name, "n"]
    return {"name": target.name, "dataset": target.dataset, "split": target.split, "kind": target.kind,
            "abilities": ", ".join(target.abilities), "n_items": int(n_items.iloc[0]) if len(n_items) else "-",
            "example": examples.get(target.name, "")}


def _cell_key(cells: pd.DataFrame, model: str, target: str) -> str:
    match = cells[(cells["model"] == model) & (cells["target"] == target)]
    return match["key"].iloc[0] if len(match) else ""


def _eigenvalues(matrix: pd.DataFrame, standardized: bool) -> np.ndarray:
    """The eigenvalues the traits were fitted on: of the targets' correlation matrix, or of
    their covariance matrix when targets are only centred (as `analysis.traits` fits them)."""
    x = matrix.to_numpy(dtype=float)
    x = np.where(np.isnan(x), np.nanmean(x, axis=0), x)
    x = x[:, x.std(axis=0) > 1e-12]
    if x.shape[1] < 2:
        return np.ones(1)
    spread = np.corrcoef(x, rowvar=False) if standardized else np.cov(x, rowvar=False)
    return np.sort(np.linalg.eigvalsh(spread))[::-1]


def _num(value: Any, signed: bool = False) -> str:
    """Three decimals (signed for deltas); "-" where there is no value."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _p(value: Any) -> str:
    """p- and q-values: three significant digits, so small ones stay readable."""
    return "-" if value is None else f"{value:.3g}"


def script_json(figure: dict) -> str:
    """Figure JSON that is safe inside a <script> element: no "</script>" can close it early."""
    text = plotly.io.json.to_json_plotly(figure)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
