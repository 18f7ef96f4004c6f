"""A study's results read from the store, and its analyses stored back, each under a key of its
inputs so an unchanged study reuses them.

Three analyses are stored: `traits` (cells + analysis settings), `features` (the datasets and
the base model: the only one that loads a model) and `explain` (cells + settings + features).
So changing an analysis setting recomputes traits and explanation from stored tables alone.
The report is written from what is stored (`write_report`), or from an export (`report_from_export`);
`report` picks one for `Study.report`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
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
from traitlens.config.schema import Study
from traitlens.faults import crash_point
from traitlens.models.scorer import Scorer
from traitlens.progress import working
from traitlens.store.db import Store, adapter_file_meta
from traitlens.store.keys import content_key

if TYPE_CHECKING:
    from rich.console import Console

    from traitlens.execution.local import RunSummary
    from traitlens.recipes.workspace import Workspace
    from traitlens.report.page import ReportInputs


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
    template (their fingerprints, as in the job keys), the evaluation dtype, the features code."""
    from traitlens.recipes.features import FEATURES_CODE_VERSION

    return content_key("features", {
        "base": plan.jobs[0].spec["base"], "dtype": plan.study.evaluation.dtype, "code": FEATURES_CODE_VERSION,
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
    features = study_features(plan.study, sources, targets, scorer or default_scorer(plan.eval_jobs[0].settings))
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


def report_inputs(plan: Plan, store: Store, results: Results | None = None) -> ReportInputs:
    """What the report shows, read from the store: the stored traits (compute them first:
    `ensure_analyses`), the explanation only where it is current for these cells, settings and
    features, each adapter's training record, one example prompt per target."""
    from traitlens.report.page import ReportInputs

    study = plan.study
    stored = store.analysis(study.name, "traits")
    if stored is None:
        raise TraitlensError("no trait analysis in the store yet: run `traitlens run` (or `traitlens traits`) first.")
    results = collect(plan, store) if results is None else results
    explained = store.analysis(study.name, "explain")
    current = explained is not None and explained[0] == analysis_key("explain", plan, results.cells["key"])
    adapters = [{"source": job.source, "seed": job.seed, "key": job.key, "meta": meta} for job in plan.train_jobs
                if (path := store.adapter_path(job.key)) is not None and (meta := adapter_file_meta(path)) is not None]
    examples = {}
    for job in plan.eval_jobs:
        if job.target not in examples and (cell := store.cell(job.key)) is not None:
            examples[job.target] = cell["meta"]["example"]
    return ReportInputs(study, results, stored[1], stored[0], explained[1] if current else None, adapters,
                        examples, plan.jobs[0].spec["base"], store.root, store.forecasts(study.name))


@dataclass(frozen=True)
class Conclusion:
    """A run's end (`Study.conclude`): the stored `traits` and `explanation` as the report reads
    them, and the report's `page`; or, where no analysis could be computed (e.g. no adapter
    finished), why not (`skipped`)."""

    traits: dict | None = None
    explanation: dict | None = None
    page: Path | None = None
    skipped: str | None = None


def conclude(ws: Workspace, summary: RunSummary) -> Conclusion | None:
    """What `traitlens run` ends with once every job is done and the study has enough sources
    (else None): the analyses brought up to date, then the report."""
    from traitlens.recipes.run import ready_for_analysis

    if not ready_for_analysis(ws.config, summary):
        return None
    try:
        results = analyze(ws)
    except TraitlensError as exc:  # the matrix stands on its own
        return Conclusion(skipped=str(exc))
    return Conclusion(ws.stored("traits"), ws.stored("explain"), report(ws, None, results, None))


def analyze(ws: Workspace) -> Results | None:
    """`Study.analyze`, a full run's last step: the analyses brought up to date, and the
    measured deltas written beside the study's stored forecasts."""
    from traitlens.recipes.forecast import record_measured

    def work(plan: Plan, store: Store) -> Results | None:
        results = ensure_analyses(plan, store)
        record_measured(store, plan.study.name, ws.measured)
        return results
    return ws.locked("run", work, "analysis: traits, profiles, explanation")


def report(ws: Workspace, out: str | Path | None, results: Results | None, export: str | Path | None) -> Path:
    """`Study.report`: from the store, or from the item-level `export` where the store is gone;
    the page at `out` (default: report/<study>.html in the store, or beside the export)."""
    if export is not None:
        page = Path(out) if out else Path(export).with_name(f"{ws.config.name}.html")
        return report_from_export(ws.config, Path(export), page, ws.console)
    store = ws.finished_store()
    page = Path(out) if out else store.root / "report" / f"{ws.config.name}.html"
    return write_report(ws.plan(), store, page, ws.file, ws.console, results)


def write_report(plan: Plan, store: Store, page: Path, file: str, console: Console,
                 results: Results | None = None) -> Path:
    """The study's report from its store (`Study.report`): stale traits and explanation
    recomputed from stored tables (never a model), then the page and its data folder.
    `results`: the study's results where the caller has just read them."""
    from traitlens.report.page import build_report

    with store.locked(f"traitlens report {file}"):
        with working(console, "analysis: traits, explanation"):
            fresh = ensure_analyses(plan, store, features=False)
        return build_report(report_inputs(plan, store, fresh if fresh is not None else results), page)


def report_from_export(config: Study, export: Path, page: Path, console: Console) -> Path:
    """The study's report rebuilt from its item-level export, the store gone."""
    from traitlens.report.from_export import inputs_from_export
    from traitlens.report.page import build_report

    with working(console, "analysis from the export: traits, explanation"):
        inputs = inputs_from_export(config, export)
    return build_report(inputs, page)
