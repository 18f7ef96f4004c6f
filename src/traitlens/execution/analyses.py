"""The analysis stages of a study: traits and explanation computed from the store's cells and
stored back, each under a key of its inputs so an unchanged study reuses them."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from traitlens.analysis import ANALYSIS_CODE_VERSION
from traitlens.analysis.analyze import TraitAnalysis, analyze, json_ready
from traitlens.analysis.collect import Results, collect
from traitlens.analysis.explain import Explanation, behaviour, held_out_recommendations, recommendation_quality
from traitlens.analysis.explain import explain as explain_transfer
from traitlens.analysis.views import raw_matrix, view
from traitlens.data.load import prepare_study
from traitlens.errors import TraitlensError
from traitlens.execution.features import PREDICTIVE, study_features
from traitlens.execution.plan import Plan
from traitlens.faults import crash_point
from traitlens.store.db import Store
from traitlens.store.keys import content_key


def analysis_key(name: str, plan: Plan, cell_keys: Iterable[str]) -> str:
    """What an analysis depends on: the cells (whose keys cover models, data and settings), the
    study's analysis settings and the analysis code's version."""
    return content_key(name, {"cells": sorted(cell_keys), "code": ANALYSIS_CODE_VERSION,
                              "settings": plan.study.analysis.model_dump(mode="json")})


def run_traits(plan: Plan, store: Store, results: Results | None = None) -> TraitAnalysis:
    """The trait analysis of the finished cells (`results`, collected if not given), stored for
    the report (the caller holds the store's lock)."""
    results = collect(plan, store) if results is None else results
    result = analyze(results, plan.study.analysis)
    crash_point("analysis")
    store.put_analysis(plan.study.name, "traits", analysis_key("traits", plan, results.cells["key"]),
                       result.to_json())
    return result


def run_explain(plan: Plan, store: Store, results: Results | None = None) -> tuple[Explanation, pd.DataFrame]:
    """Features and the explanation of a study's cells (`results`, collected if not given),
    stored (the caller holds the lock)."""
    study = plan.study
    stored = store.analysis(study.name, "traits")
    results = collect(plan, store) if results is None else results
    if results.cells.empty or results.cells["source"].isna().all():
        raise TraitlensError("no adapter cells in the store yet: run the study first.")
    sources, targets = prepare_study(study)
    features = study_features(study, sources, targets, behaviour(results.cells))
    delta = view(raw_matrix(results.cells), "delta", results.diagonal, study.analysis.mask_diagonal).dropna(how="all")
    scores = pd.DataFrame({t["trait"]: t["scores"] for t in stored[1]["traits"]}) if stored and stored[1]["traits"] else None
    result = explain_transfer(delta, features.groups, scores, PREDICTIVE, study.analysis.bootstrap_samples,
                              study.analysis.seed, results.families)
    pairs = features.pairs(delta)
    recommendations = held_out_recommendations(pairs)
    quality, quality_verdict = recommendation_quality(recommendations, pairs)
    store.put_analysis(study.name, "explain", analysis_key("explain", plan, results.cells["key"]),
                       result.to_json() | json_ready({
                           "metric": results.metric, "answer_lengths": features.answer_lengths,
                           "source_profiles": features.source_profiles.to_dict("index"),
                           "target_profiles": features.target_profiles.to_dict("index"),
                           "features": {group: frame.reset_index().to_dict("records")
                                        for group, frame in features.groups.items()},
                           "recommendations": recommendations.to_dict("records"),
                           "recommendation_quality": quality.to_dict("records"),
                           "recommendation_verdict": quality_verdict}))
    return result, features.source_profiles


def ensure_analyses(plan: Plan, store: Store) -> Results | None:
    """Compute the traits and the explanation unless the stored ones have the same inputs: the
    same finished cells, settings and analysis code (a stored analysis can also come from
    another config of the same study, e.g. other analysis settings). Returns the cells read from
    the store when either had to be computed (the report reuses them), else None."""
    states = plan.states(store)
    cells = [job.key for job in plan.eval_jobs if states[job.key] == "done"]
    results = None  # read from the store once, for whichever analyses need it
    for name, compute in (("traits", run_traits), ("explain", run_explain)):
        stored = store.analysis(plan.study.name, name)
        if stored is None or stored[0] != analysis_key(name, plan, cells):
            results = collect(plan, store) if results is None else results
            compute(plan, store, results)
    return results
