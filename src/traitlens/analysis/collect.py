"""From the store to plain tables: the cells of a study and their item scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from traitlens.execution.plan import BASE, Plan
from traitlens.store.db import Store


@dataclass(frozen=True)
class Results:
    """Everything analysis needs, with no model or store attached.

    `cells`: one row per finished cell (model, source, seed, target, key, score, n, metrics).
    `items`: per target, a models x items table of item scores (the same items for every model).
    `diagonal`: (source, target) pairs where the source was trained on the target's dataset.
    `abilities`: each target's ability tags.
    """

    cells: pd.DataFrame
    items: dict[str, pd.DataFrame]
    diagonal: set[tuple[str, str]]
    abilities: dict[str, list[str]]

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(self.cells["model"]))

    @property
    def targets(self) -> list[str]:
        return list(dict.fromkeys(self.cells["target"]))


def collect(plan: Plan, store: Store) -> Results:
    rows, items = [], {}
    for job in plan.eval_jobs:
        cell = store.cell(job.key)
        if cell is None:
            continue
        source = None if job.model == BASE else next(t.source for t in plan.train_jobs if t.key == job.needs)
        seed = None if job.model == BASE else next(t.seed for t in plan.train_jobs if t.key == job.needs)
        rows.append({"model": job.model, "source": source, "seed": seed, "target": job.target,
                     "key": job.key, "score": cell["metrics"]["accuracy"], "n": cell["n_items"],
                     "metrics": cell["metrics"]})
        scores = np.array([item["score"] for item in store.items(job.key)], dtype=float)
        items.setdefault(job.target, {})[job.model] = scores
    study = plan.study
    datasets = {s.name: (s.dataset, s.subset) for s in study.sources}
    diagonal = {(source, target.name) for source, origin in datasets.items()
                for target in study.targets if (target.dataset, target.subset) == origin}
    return Results(pd.DataFrame(rows, columns=["model", "source", "seed", "target", "key", "score", "n", "metrics"]),
                   {target: pd.DataFrame(by_model).T for target, by_model in items.items()},
                   diagonal, {t.name: list(t.abilities) for t in study.targets})
