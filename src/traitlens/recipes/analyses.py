"""A study's results read from the store, and its analyses stored back, each under a key of its
inputs so an unchanged study reuses them.

Three analyses are stored: `traits` (cells + analysis settings), `features` (the datasets and
the base model: the only one that loads a model) and `explain` (cells + settings + features).
So changing an analysis setting recomputes traits and explanation from stored tables alone.
`analyze` is what a full run ends with (`Study.analyze`); the report is `recipes/report.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

import pandas as pd

from traitlens.analysis import ANALYSIS_CODE_VERSION
from traitlens.analysis.analyze import TraitAnalysis
from traitlens.analysis.explain import Explanation, explain_results
from traitlens.analysis.features import Features
from traitlens.analysis.results import CELL_COLUMNS, Results, study_diagonal, target_labels
from traitlens.data.catalog import corpus_of
from traitlens.errors import TraitlensError
from traitlens.config.jobs import Plan
from traitlens.faults import crash_point
from traitlens.models.scorer import Scorer
from traitlens.store.db import Store
from traitlens.store.keys import content_key

if TYPE_CHECKING:
    from traitlens.recipes.workspace import Workspace


def collect(plan: Plan, store: Store, metric: str | None = None) -> Results:
    """The study's finished cells and their items, scored under `metric` (default: the
    study's), with the stored dataset features when there are any."""
    rows, outputs = [], {}
    trained = {job.key: job for job in plan.train_jobs}
    for job in plan.eval_jobs:
        cell = store.cell(job.key)
        if cell is None:
            continue
        adapter = trained.get(job.needs)
        rows.append({"model": job.model, "source": adapter.source if adapter else None,
                     "seed": adapter.seed if adapter else None, "target": job.target,
                     "key": job.key, "n": cell["n_items"], "metrics": cell["metrics"]})
        outputs.setdefault(job.target, {})[job.model] = store.items(job.key)
    study = plan.study
    stored = store.analysis(study.name, "features")
    results = Results(pd.DataFrame(rows, columns=CELL_COLUMNS), outputs, study_diagonal(study),
                      {t.name: list(t.abilities) for t in study.targets},
                      {t.name: target_labels(t, outputs.get(t.name)) for t in study.targets},
                      {s.name: s.family_name for s in study.sources}, settings=study.analysis,
                      study=study.name, kinds={t.name: t.kind for t in study.targets},
                      features=Features.from_json(stored[1]) if stored and stored[0] == features_key(plan) else None,
                      shared_corpus=study_shared_corpus(study))
    return results.scored(metric or study.analysis.metric)



def study_shared_corpus(study) -> set[tuple[str, str]]:
    """(source, target) pairs off the diagonal whose datasets are built from the same corpus
    (`data.catalog.corpus_of`): differently labelled or answered versions of the same texts."""
    diagonal = study_diagonal(study)
    return {(s.name, t.name) for s in study.sources for t in study.targets
            if corpus_of(s.dataset, s.subset) == corpus_of(t.dataset, t.subset) and (s.name, t.name) not in diagonal}

def analysis_key(name: str, plan: Plan, cell_keys: Iterable[str]) -> str:
    """What an analysis of the cells depends on: the cells (whose keys cover models, data and
    settings), the study's analysis settings, the analysis code's version and, for the
    explanation, the features."""
    extra = {"features": features_key(plan)} if name == "explain" else {}
    return content_key(name, {"cells": sorted(cell_keys), "code": ANALYSIS_CODE_VERSION,
                              "settings": plan.study.analysis.model_dump(mode="json"), **extra})


def features_key(plan: Plan) -> str:
    """What the datasets' features depend on: the base and every source's and target's data and
    template (their fingerprints, as in the job keys), the dtype they are scored in, the features code."""
    from traitlens.recipes.features import FEATURES_CODE_VERSION

    return content_key("features", {
        "base": plan.jobs[0].spec["base"], "dtype": plan.placements["features"].dtype, "code": FEATURES_CODE_VERSION,
        "sources": {job.source: job.spec["source"] for job in plan.train_jobs},
        "targets": {job.target: job.spec["target"] for job in plan.eval_jobs}})


def run_traits(plan: Plan, store: Store, results: Results | None = None) -> TraitAnalysis:
    """The trait analysis of the finished cells (`results`, collected if not given), stored for
    the report (the caller holds the store's lock)."""
    results = collect(plan, store) if results is None else results
    result = results.traits()
    crash_point("analysis")
    store.put_analysis(plan.study.name, "traits", analysis_key("traits", plan, results.cells["key"]),
                       result.to_json())
    return result


def run_features(plan: Plan, store: Store, scorer: Scorer | None = None) -> Features:
    """The datasets' features, from the store when they are there for these datasets and this
    base, else computed (reading every dataset and loading the base model, as `scorer` unless
    one is given, and the embedding model) and stored (the caller holds the lock)."""
    from traitlens.data.load import prepare_study
    from traitlens.execution.local import default_scorer
    from traitlens.recipes.features import study_features

    key = features_key(plan)
    stored = store.analysis(plan.study.name, "features")
    if stored is not None and stored[0] == key:
        return Features.from_json(stored[1])
    sources, targets = prepare_study(plan.study)
    scorer = scorer or default_scorer(plan.eval_jobs[0].settings, plan.placements["features"])
    features = study_features(plan.study, sources, targets, scorer)
    store.put_analysis(plan.study.name, "features", key, features.to_json())
    return features


def run_explain(plan: Plan, store: Store, results: Results | None = None) -> Explanation:
    """The explanation of the finished cells (`results`, collected if not given), from the
    stored features (computed first if missing), stored (the caller holds the lock)."""
    results = collect(plan, store) if results is None else results
    if results.cells.empty or results.cells["source"].isna().all():
        raise TraitlensError("no adapter cells in the store yet: run the study first.")
    if results.features is None:
        results = replace(results, features=run_features(plan, store))
    stored = store.analysis(plan.study.name, "traits")
    traits = stored[1]["traits"] if stored else []
    scores = pd.DataFrame({t["trait"]: t["scores"] for t in traits}) if traits else None
    result = explain_results(results, results.features, scores)
    store.put_analysis(plan.study.name, "explain", analysis_key("explain", plan, results.cells["key"]),
                       result.to_json() | {"metric": results.metric})
    return result


def ensure_analyses(plan: Plan, store: Store, features: bool = True) -> Results | None:
    """Compute the traits and the explanation unless the stored ones have the same inputs: the
    same finished cells, settings, analysis code and features (a stored analysis can also come
    from another config of the same study, e.g. other analysis settings). `features=False`
    never loads a model: without stored features the explanation is left out (`traitlens
    explain` computes them). Returns the cells read from the store when an analysis had to be
    computed, with the features computed here (the report reuses them), else None."""
    states = plan.states(store)
    cells = [job.key for job in plan.eval_jobs if states[job.key] == "done"]
    results = None  # read from the store once, for whichever analyses need it
    for name, compute in (("traits", run_traits), ("explain", run_explain)):
        stored = store.analysis(plan.study.name, name)
        if stored is None or stored[0] != analysis_key(name, plan, cells):
            results = collect(plan, store) if results is None else results
            if name == "explain" and results.features is None:
                if not features:
                    continue
                results = replace(results, features=run_features(plan, store))
            compute(plan, store, results)
    return results


def analyze(ws: Workspace) -> Results | None:
    """`Study.analyze`, a full run's last step: the analyses brought up to date, and the
    measured deltas written beside the study's stored forecasts."""
    from traitlens.recipes.forecast import record_measured

    def work(plan: Plan, store: Store) -> Results | None:
        results = ensure_analyses(plan, store)
        record_measured(store, plan.study.name, ws.measured)
        return results
    return ws.locked("run", work, "analysis: traits, profiles, explanation")
