"""The report as a workflow (`Study.report`, `traitlens report`, the end of `traitlens run`),
read top to bottom: bring the stored analyses up to date, gather everything the page shows
(`ReportInputs`) from the store, or from an item-level export where the store is gone, and
hand it to `report.page.build_report`, which only renders and writes.

From an export, everything is recomputed from its items with the analysis settings it was
made with: the matrix, intervals, reliability, traits, and the explanation where
`features.json` is there. What only the store knows is said to be missing, not guessed: the
adapters' training records (unless the export has `adapters.json`) and one rendered prompt per
target.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from traitlens.analysis.analyze import analyze as analyze_traits
from traitlens.analysis.explain import explain_results
from traitlens.analysis.export import FORECASTS_FILE
from traitlens.analysis.read_export import load_items
from traitlens.analysis.results import Results
from traitlens.analysis.uncertainty import score_intervals
from traitlens.config.jobs import Plan
from traitlens.config.schema import Study
from traitlens.errors import TraitlensError
from traitlens.progress import working
from traitlens.recipes.analyses import analysis_key, analyze, collect, ensure_analyses
from traitlens.report.page import ADAPTERS_FILE, ReportInputs, build_report
from traitlens.store.db import Store, adapter_file_meta

if TYPE_CHECKING:
    from rich.console import Console

    from traitlens.execution.local import RunSummary
    from traitlens.recipes.workspace import Workspace


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


def report_inputs(plan: Plan, store: Store, results: Results | None = None) -> ReportInputs:
    """What the report shows, read from the store: the stored traits (compute them first:
    `ensure_analyses`), the explanation only where it is current for these cells, settings and
    features, each adapter's training record, one example prompt per target."""
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
                        examples, plan.jobs[0].spec["base"], store.root, _score_intervals(results),
                        store.forecasts(study.name))


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
    with store.locked(f"traitlens report {file}"):
        with working(console, "analysis: traits, explanation"):
            fresh = ensure_analyses(plan, store, features=False)
        return build_report(report_inputs(plan, store, fresh if fresh is not None else results), page)


def report_from_export(config: Study, export: Path, page: Path, console: Console) -> Path:
    """The study's report rebuilt from its item-level export, the store gone."""
    with working(console, "analysis from the export: traits, explanation"):
        inputs = inputs_from_export(config, export)
    return build_report(inputs, page)


def inputs_from_export(study: Study, folder: Path) -> ReportInputs:
    """The report's inputs for `study`, from its export in `folder` (no store, no model)."""
    results = load_items(folder)
    if results.study != study.name:
        raise TraitlensError(f"{folder} is the export of study {results.study!r}, not of {study.name!r}: "
                             "give the study file that made it.")
    analysis = analyze_traits(results, results.settings).to_json()
    scores = (pd.DataFrame({t["trait"]: t["scores"] for t in analysis["traits"]}) if analysis["traits"] else None)
    explanation = (explain_results(results, results.features, scores).to_json()
                   if results.features is not None else None)
    adapters = (json.loads((folder / ADAPTERS_FILE).read_text()) if (folder / ADAPTERS_FILE).exists() else [])
    forecasts = pd.read_csv(folder / FORECASTS_FILE) if (folder / FORECASTS_FILE).exists() else None
    return ReportInputs(study, results, analysis, f"rebuilt from the export {folder}", explanation, adapters,
                        {}, {"export": str(folder)}, folder, _score_intervals(results), forecasts, from_export=True)


def _score_intervals(results: Results) -> pd.DataFrame:
    """Every cell's score with its interval, for the report's data folder."""
    settings = results.settings
    return score_intervals(results, settings.bootstrap_samples, settings.alpha, settings.seed)
