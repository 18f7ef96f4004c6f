"""What a pilot measured, and the design it recommends (`traitlens pilot`, docs/design-a-study.md).

A pilot trains a few sources at several training lengths, each with several seeds, and scores
them on a sample of the targets. Per length it measures:
- each source's own-task gain (its delta on a target built from its own dataset), with the
  seed-level interval of `source_uncertainty` (seeds + items; the seed is the unit of
  replication), and the drop of its validation loss from before training;
- the variance components of every target's cells (`reliability.g_study`): source, seed,
  item, source x item, residual.

The recommendation is the least costly (length, seeds, items) whose projected reliability of the
source ranking (new adapters, new items) reaches the goal on every pilot target, among the
lengths at which every source with a home target measurably learned it (all lengths, flagged,
where none did). Costs are shares of the full study as configured (`forecast.cost`). The source
variance comes from the pilot's few sources, so its interval is wide: the projection is only as
good as they are spread out, and the components' intervals are reported beside it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from traitlens.analysis.diagnostics import own_task
from traitlens.analysis.reliability import COMPONENTS, ITEM_GRID, SEED_GRID, reliability, variance_components
from traitlens.analysis.uncertainty import source_uncertainty

if TYPE_CHECKING:
    from traitlens.analysis.results import Results

OWN_COLUMNS = ["steps", "source", "target", "seeds", "delta", "low", "high", "variance", "validation_drop",
               "learned"]


@dataclass(frozen=True)
class PilotPart:
    """One training length of a pilot: its results and each adapter's training record
    (source, seed, meta as the trainer wrote it)."""

    steps: int
    results: Results
    adapters: list[dict[str, Any]]


@dataclass(frozen=True)
class Pilot:
    """`own_task_`: per length and source with a home target, its gain there (seed-level
    interval), its mean validation-loss drop, and whether it learned. `components_`: per length
    and target, the G-study row. `lengths_`: per length, the sources that learned and the
    components averaged over targets. `designs_`: every (length, seeds, items) with its worst
    target's reliability and its cost. `recommendation`: the chosen design and why.

    Example:
        >>> pilot = study.pilot(lengths=[8, 24, 64], budget=15)
        >>> pilot.recommendation["steps"], pilot.own_task_.query("not learned")
    """

    goal: float
    own_task_: pd.DataFrame
    components_: pd.DataFrame
    lengths_: pd.DataFrame
    designs_: pd.DataFrame
    recommendation: dict[str, Any]
    page: Path | None = None  # where `Study.pilot` wrote the pilot's page


def validation_drops(adapters: list[dict[str, Any]]) -> pd.DataFrame:
    """Per adapter: its validation loss before training, at the weights it kept, and the drop."""
    rows = []
    for adapter in adapters:
        record = (adapter.get("meta") or {}).get("validation")
        if record:
            kept = record.get("kept_loss", record["curve"][-1][1])
            rows.append({"source": adapter["source"], "seed": adapter["seed"], "initial_loss": record["initial_loss"],
                         "kept_loss": kept, "drop": record["initial_loss"] - kept})
    return pd.DataFrame(rows, columns=["source", "seed", "initial_loss", "kept_loss", "drop"])


def summarise_pilot(parts: list[PilotPart], goal: float = 0.8,
                    cost: Callable[[int, int, int], float] | None = None, budget: float | None = None,
                    seeds: tuple[int, ...] = SEED_GRID, items: tuple[int, ...] = ITEM_GRID) -> Pilot:
    """The pilot's tables and recommendation. `cost(steps, seeds, items)`: a design's compute as
    a share of the full study (default steps x seeds x items); `budget`: the most a design may
    cost (None: no limit)."""
    cost = cost or (lambda steps, r, n: steps * r * n)
    own, comps, lengths = [], [], []
    for part in sorted(parts, key=lambda p: p.steps):
        table = variance_components(part.results)
        drops = validation_drops(part.adapters).groupby("source")["drop"].mean()
        gains = own_task(part.results, source_uncertainty(part.results, components=table))
        seeds_of = part.results.cells[part.results.cells["source"].notna()].groupby("source")["seed"].nunique()
        for row in gains.itertuples():
            own.append({"steps": part.steps, "source": row.source, "target": row.target,
                        "seeds": int(seeds_of.get(row.source, 1)), "delta": row.delta, "low": row.low,
                        "high": row.high, "variance": row.variance, "validation_drop": drops.get(row.source, np.nan),
                        "learned": bool(row.low > 0)})
        comps.append(table.assign(steps=part.steps))
        decomposed = table.dropna(subset=["source"]) if "source" in table else table.iloc[:0]
        lengths.append({"steps": part.steps, "home_sources": len(gains), "learned": int((gains["low"] > 0).sum()),
                        "mean_gain": float(gains["delta"].mean()) if len(gains) else np.nan,
                        "validation_drop": float(drops.mean()) if len(drops) else np.nan,
                        **{name: float(decomposed[name].mean()) if len(decomposed) else np.nan for name in COMPONENTS},
                        "seed_f": float(decomposed["seed_f"].median()) if "seed_f" in decomposed else np.nan})
    own_df = pd.DataFrame(own, columns=OWN_COLUMNS)
    components = pd.concat(comps, ignore_index=True) if comps else pd.DataFrame()
    lengths_df = pd.DataFrame(lengths)
    designs = _designs(components, cost, seeds, items)
    return Pilot(goal, own_df, components, lengths_df, designs, recommend(designs, lengths_df, goal, budget))


def _designs(components: pd.DataFrame, cost, seeds: tuple[int, ...], items: tuple[int, ...]) -> pd.DataFrame:
    """Every (length, seeds, items, target) with its projected reliability and the design's cost."""
    columns = ["steps", "seeds", "items", "target", "reliability", "cost"]
    if "seed" not in components:
        return pd.DataFrame(columns=columns)
    rows = []
    for row in components.dropna(subset=["seed"]).itertuples():
        comp = np.array([getattr(row, name) for name in COMPONENTS], float)
        rows += [{"steps": int(row.steps), "seeds": r, "items": n, "target": row.target,
                  "reliability": float(reliability(comp, r, n)), "cost": float(cost(int(row.steps), r, n))}
                 for r, n in itertools.product(seeds, items)]
    return pd.DataFrame(rows, columns=columns)


def recommend(designs: pd.DataFrame, lengths: pd.DataFrame, goal: float, budget: float | None) -> dict[str, Any]:
    """The least costly design reaching `goal` on every target that some design reaches it on,
    at a length where every home source learned (any length, flagged, where none did), within
    `budget`; else the reason, the most reliable design, and what reaching the goal would cost.
    Targets that no design in the grid brings to the goal are named, and left out of the choice:
    their sources barely differ there, and no replication budget changes that."""
    if designs.empty:
        return {"reached": False, "note": "no target could be decomposed (two or more sources with per-item "
                                          "scores and two or more seeds are needed)"}
    notes = []
    learned = lengths.loc[(lengths["home_sources"] > 0) & (lengths["learned"] == lengths["home_sources"]), "steps"]
    if learned.empty:
        learned = lengths["steps"]
        notes.append("at no pilot length did every source measurably learn its own task: the design ranks "
                     "training noise about as much as transfer; train longer or with a higher learning rate")
    candidates = designs[designs["steps"].isin(learned)]
    best = candidates.groupby("target")["reliability"].max()
    beyond = sorted(best.index[best < goal])
    if beyond and len(beyond) < len(best):
        notes.append(f"no design in the grid brings {', '.join(beyond)} to {goal} (best "
                     f"{', '.join(f'{best[t]:.2f}' for t in beyond)}): left out of the choice")
        candidates = candidates[~candidates["target"].isin(beyond)]
    worst = candidates.loc[candidates.groupby(["steps", "seeds", "items"])["reliability"].idxmin()]
    good = worst[worst["reliability"] >= goal]
    affordable = good if budget is None else good[good["cost"] <= budget]
    reached = bool(len(affordable))
    if reached:
        pick = affordable.nsmallest(1, "cost").iloc[0]
    elif len(good):
        cheapest = good.nsmallest(1, "cost").iloc[0]
        notes.append(f"no design within the budget ({budget:.2f} of the full study) reaches {goal}; the cheapest "
                     f"that does ({int(cheapest.steps)} steps, {int(cheapest.seeds)} seeds, {int(cheapest['items'])} "
                     f"items) costs {cheapest.cost:.2f}: the budget would have to be that")
        pool = worst[worst["cost"] <= budget]
        pick = (pool if len(pool) else worst).nlargest(1, "reliability").iloc[0]
    else:
        notes.append(f"no design in the grid reaches {goal} on every target: the sources differ too little against "
                     "the training and item noise")
        pick = worst.nlargest(1, "reliability").iloc[0]
    return {"steps": int(pick.steps), "seeds": int(pick.seeds), "items": int(pick["items"]),
            "reliability": float(pick.reliability), "worst_target": pick.target, "cost": float(pick.cost),
            "reached": reached, "goal": goal, "left_out": beyond if len(beyond) < len(best) else [],
            "note": "; ".join(notes)}
