"""Plotly figures of the report, as JSON-ready dicts.

Every string that reaches a figure (dataset labels, target and source names) goes through
`esc`: Plotly renders a few HTML tags inside text, so text from datasets must be escaped.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

DIVERGING = "RdBu"


def esc(value: Any) -> str:
    return html.escape(str(value))


def layout(fig: go.Figure, title: str, height: int = 420) -> dict:
    fig.update_layout(title=esc(title), height=height, margin={"l": 120, "r": 30, "t": 50, "b": 90},
                      template="plotly_white")
    return fig.to_plotly_json()


def delta_heatmap(delta: pd.DataFrame, raw: pd.DataFrame, matrix_cells: pd.DataFrame, adapter_cells: pd.DataFrame,
                  alpha: float) -> dict:
    """Sources x targets delta vs base; a star marks a cell significant at q < alpha as the
    matrix shows it (seeds averaged, `matrix_cells`: the hierarchical interval over seeds and
    items); hover has the raw scores, that interval and q, and each adapter's own (`adapter_cells`)."""
    matrix = {(row.source, row.target): row for row in matrix_cells.itertuples()}
    by_adapter = {}
    for row in adapter_cells.itertuples():
        by_adapter.setdefault((row.source, row.target), []).append(row)
    text, hover = [], []
    for source in delta.index:
        text_row, hover_row = [], []
        for target in delta.columns:
            cell, rows = matrix.get((source, target)), by_adapter.get((source, target), [])
            value = delta.loc[source, target]
            text_row.append(("" if np.isnan(value) else f"{value:+.3f}")
                            + (" *" if cell is not None and cell.significant else ""))
            details = ([f"seeds averaged: [{cell.low:+.3f}, {cell.high:+.3f}], q={cell.q:.3g}"] if cell is not None else [])
            if len(rows) > 1:
                details += [f"{esc(r.model)}: {r.delta:+.3f} [{r.low:+.3f}, {r.high:+.3f}], q={r.q:.3g}" for r in rows]
            hover_row.append(f"{esc(source)} on {esc(target)}<br>score {raw.loc[source, target]:.3f} "
                             f"(base {raw.loc['base', target]:.3f})<br>" + "<br>".join(details))
        text.append(text_row)
        hover.append(hover_row)
    limit = float(np.nanmax(np.abs(delta.to_numpy()))) if delta.size else 1.0
    fig = go.Figure(go.Heatmap(z=delta.to_numpy(), x=[esc(c) for c in delta.columns], y=[esc(i) for i in delta.index],
                               text=text, texttemplate="%{text}", hovertext=hover, hoverinfo="text",
                               colorscale=DIVERGING, zmid=0, zmin=-limit, zmax=limit,
                               colorbar={"title": "delta"}))
    fig.update_yaxes(autorange="reversed")
    return layout(fig, f"Transfer: score minus base (* significant at q < {alpha})", 140 + 45 * len(delta))


def scree(eigenvalues: np.ndarray, kept: int, standardized: bool = True) -> dict:
    """Eigenvalues of what the traits were fitted on: the targets' correlation matrix, or their
    covariance matrix when targets are only centred."""
    components = [f"{i + 1}" for i in range(len(eigenvalues))]
    fig = go.Figure(go.Scatter(x=components, y=eigenvalues, mode="lines+markers", name="eigenvalue"))
    fig.add_vline(x=kept - 0.5, line_dash="dash", annotation_text=f"{kept} kept")
    fig.update_xaxes(title="component")
    fig.update_yaxes(title=f"eigenvalue of the target {'correlation' if standardized else 'covariance'} matrix")
    return layout(fig, "Scree plot", 360)


def loadings_heatmap(loadings: pd.DataFrame, names: list[str]) -> dict:
    fig = go.Figure(go.Heatmap(z=loadings.to_numpy(), x=[esc(n) for n in names], y=[esc(t) for t in loadings.index],
                               text=np.round(loadings.to_numpy(), 2), texttemplate="%{text}",
                               colorscale=DIVERGING, zmid=0, zmin=-1, zmax=1))
    fig.update_yaxes(autorange="reversed")
    return layout(fig, "Trait loadings per target", 140 + 40 * len(loadings))


def biplot(scores: pd.DataFrame, loadings: pd.DataFrame) -> dict:
    """Sources placed by their trait scores, targets drawn as loading arrows (first two traits;
    a bar chart of the scores when there is one trait)."""
    if scores.shape[1] < 2:
        fig = go.Figure(go.Bar(x=[esc(s) for s in scores.index], y=scores.iloc[:, 0]))
        fig.update_yaxes(title=esc(scores.columns[0].split(" (")[0]))  # the name without its targets
        return layout(fig, "Source scores on the trait", 360)
    first, second = scores.columns[:2]
    fig = go.Figure(go.Scatter(x=scores[first], y=scores[second], mode="markers+text", name="sources",
                               text=[esc(s) for s in scores.index], textposition="top center"))
    scale = float(np.abs(scores[[first, second]].to_numpy()).max() or 1)
    for target, row in loadings.iterrows():
        fig.add_annotation(x=row[first] * scale, y=row[second] * scale, ax=0, ay=0, xref="x", yref="y",
                           axref="x", ayref="y", text=esc(target), showarrow=True, arrowhead=2,
                           font={"color": "#b2182b"}, arrowcolor="#b2182b")
    fig.update_xaxes(title=esc(first))
    fig.update_yaxes(title=esc(second))
    return layout(fig, "Biplot: sources (points) and targets (arrows)", 480)


def confusion(target: str, matrices: dict[str, dict[str, dict[str, int]]]) -> dict:
    """One heatmap per model, switched with buttons."""
    fig = go.Figure()
    models = list(matrices)
    for index, model in enumerate(models):
        gold = list(matrices[model])
        # Stored JSON sorts keys: show the labels in gold order, then invalid outputs last.
        predicted = [*gold, *sorted(set(next(iter(matrices[model].values()))) - set(gold))]
        z = [[matrices[model][g][p] for p in predicted] for g in gold]
        fig.add_trace(go.Heatmap(z=z, x=[esc(p) for p in predicted], y=[esc(g) for g in gold], visible=index == 0,
                                 text=z, texttemplate="%{text}", colorscale="Blues", showscale=False))
    buttons = [{"label": esc(model), "method": "update",
                "args": [{"visible": [i == j for j in range(len(models))]}]} for i, model in enumerate(models)]
    fig.update_layout(updatemenus=[{"buttons": buttons, "direction": "right", "x": 1, "y": 1.18,
                                    "xanchor": "right", "type": "buttons"}])
    fig.update_xaxes(title="predicted")
    fig.update_yaxes(title="gold", autorange="reversed")
    return layout(fig, f"Confusion matrices: {target}", 380)


def lengths(target: str, by_model: dict[str, list[int]], answers: dict[str, list[int]]) -> dict:
    """Generated length per model next to the answer lengths of the target and the sources."""
    fig = go.Figure([go.Box(y=values, name=esc(model), boxmean=True) for model, values in by_model.items()]
                    + [go.Box(y=values, name=esc(label), boxmean=True, marker_color="#888")
                       for label, values in answers.items()])
    fig.update_yaxes(title="tokens")
    return layout(fig, f"Generated length: {target}", 380)


def validation_curves(adapters: list[dict[str, Any]]) -> dict:
    """Each adapter's validation loss by optimizer step, where training held out a slice."""
    fig = go.Figure()
    for adapter in adapters:
        record = adapter["meta"].get("validation")
        if record:
            steps, losses = zip(*record["curve"])
            fig.add_trace(go.Scatter(x=steps, y=losses, mode="lines+markers",
                                     name=esc(f"{adapter['source']} (seed {adapter['seed']})")))
    fig.update_xaxes(title="optimizer step")
    fig.update_yaxes(title="validation loss per token")
    return layout(fig, "Validation loss while training (the marker where a line ends is where it stopped)")
