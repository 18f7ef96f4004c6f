"""A report rebuilt from an item-level export, where the store that made it is gone.

A store lives on the machine that ran the study; the export (a report's `-data` folder, committed
with a study) travels. Everything the page shows is recomputed from the export's items with the
analysis settings it was made with: the matrix, intervals, reliability, traits, and the
explanation where `features.json` is there. What only the store knows is said to be missing, not
guessed: the adapters' training records (unless the export has `adapters.json`) and one rendered
prompt per target.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from traitlens.analysis.analyze import analyze
from traitlens.analysis.explain import explain_results
from traitlens.analysis.export import FORECASTS_FILE
from traitlens.analysis.read_export import load_items
from traitlens.config.schema import Study
from traitlens.errors import TraitlensError
from traitlens.report.page import ADAPTERS_FILE, ReportInputs

def inputs_from_export(study: Study, folder: Path) -> ReportInputs:
    """The report's inputs for `study`, from its export in `folder` (no store, no model)."""
    results = load_items(folder)
    if results.study != study.name:
        raise TraitlensError(f"{folder} is the export of study {results.study!r}, not of {study.name!r}: "
                             "give the study file that made it.")
    analysis = analyze(results, results.settings).to_json()
    traits = analyze_scores(analysis)
    explanation = (explain_results(results, results.features, traits).to_json()
                   if results.features is not None else None)
    adapters = (json.loads((folder / ADAPTERS_FILE).read_text()) if (folder / ADAPTERS_FILE).exists() else [])
    forecasts = pd.read_csv(folder / FORECASTS_FILE) if (folder / FORECASTS_FILE).exists() else None
    return ReportInputs(study, results, analysis, f"rebuilt from the export {folder}", explanation, adapters,
                        {}, {"export": str(folder)}, folder, forecasts, from_export=True)


def analyze_scores(analysis: dict) -> pd.DataFrame | None:
    """The sources' trait scores in the analysis JSON (the explanation correlates features with them)."""
    return pd.DataFrame({t["trait"]: t["scores"] for t in analysis["traits"]}) if analysis["traits"] else None
