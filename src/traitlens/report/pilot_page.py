"""The pilot's page and its data folder: the curves by training length, the variance components,
the designs and the recommendation, and each part's item-level export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from traitlens.analysis.export import export_items
from traitlens.analysis.pilot import Pilot
from traitlens.analysis.results import Results
from traitlens.report.figures import esc, layout
from traitlens.report.page import ADAPTERS_FILE, script_json

RECOMMENDATION_FILE = "recommendation.json"


def write_pilot(pilot: Pilot, study_name: str, parts: list[tuple[str, Results, list[dict[str, Any]]]],
                plan: dict[str, Any], out: Path) -> Path:
    """Write `out` (the page) and `<out stem>-data/`: own_task.csv, components.csv, lengths.csv,
    designs.csv, recommendation.json (with the pilot's plan), and per part its items and its
    adapters' training records."""
    folder = out.with_name(f"{out.stem}-data")
    folder.mkdir(parents=True, exist_ok=True)
    pilot.own_task_.to_csv(folder / "own_task.csv", index=False)
    pilot.components_.to_csv(folder / "components.csv", index=False)
    pilot.lengths_.to_csv(folder / "lengths.csv", index=False)
    pilot.designs_.to_csv(folder / "designs.csv", index=False)
    (folder / RECOMMENDATION_FILE).write_text(json.dumps({"recommendation": pilot.recommendation, "plan": plan},
                                                         indent=1, default=str))
    for name, results, adapters in parts:
        export_items(results, folder / name)
        (folder / name / ADAPTERS_FILE).write_text(json.dumps(adapters, indent=1, default=str))
    figures = {"own": own_task_figure(pilot.own_task_), "noise": components_figure(pilot.lengths_),
               "designs": designs_figure(pilot.designs_, pilot.goal)}
    environment = jinja2.Environment(loader=jinja2.PackageLoader("traitlens", "report"),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    out.write_text(environment.get_template("pilot.html.j2").render(
        study=study_name, plan=plan, recommendation=pilot.recommendation, goal=pilot.goal,
        lengths=_rows(pilot.lengths_), own=_rows(pilot.own_task_),
        figures=[(name, script_json(figure)) for name, figure in figures.items()],
        plotly_js=get_plotlyjs()), encoding="utf-8")
    return out


def own_task_figure(own: pd.DataFrame) -> dict:
    """Each source's own-task gain by training length, with its seed-level interval."""
    fig = go.Figure()
    for source, rows in own.groupby("source", sort=False):
        fig.add_trace(go.Scatter(x=rows["steps"], y=rows["delta"], name=esc(source), mode="lines+markers",
                                 error_y={"type": "data", "symmetric": False, "array": rows["high"] - rows["delta"],
                                          "arrayminus": rows["delta"] - rows["low"]}))
    fig.add_hline(y=0, line_dash="dot")
    fig.update_xaxes(title="training steps", type="log")
    fig.update_yaxes(title="own-task delta vs base (seeds + items interval)")
    return layout(fig, "Does each source learn its own task?")


def components_figure(lengths: pd.DataFrame) -> dict:
    """The variance components (mean over targets) by training length."""
    fig = go.Figure()
    for name in ("source", "seed", "source_item", "residual"):
        if name in lengths:
            fig.add_trace(go.Scatter(x=lengths["steps"], y=lengths[name], name=name, mode="lines+markers"))
    fig.update_xaxes(title="training steps", type="log")
    fig.update_yaxes(title="variance (per item or per adapter)")
    return layout(fig, "Signal (source) and noise (seed, item interactions) by length")


def designs_figure(designs: pd.DataFrame, goal: float) -> dict:
    """Reliability of the worst target against cost, one curve per length and seed count."""
    fig = go.Figure()
    worst = designs.groupby(["steps", "seeds", "items"], as_index=False).agg(reliability=("reliability", "min"),
                                                                           cost=("cost", "first"))
    for (steps, seeds), rows in worst.groupby(["steps", "seeds"]):
        fig.add_trace(go.Scatter(x=rows["cost"], y=rows["reliability"], mode="lines+markers",
                                 name=f"{steps} steps, {seeds} seeds", text=[f"{n} items" for n in rows["items"]]))
    fig.add_hline(y=goal, line_dash="dot")
    fig.update_xaxes(title="cost (share of the full study as configured)", type="log")
    fig.update_yaxes(title="reliability of the worst target's source ranking", range=[0, 1])
    return layout(fig, "What each design buys", height=520)


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in row.items()} for row in frame.to_dict("records")]
