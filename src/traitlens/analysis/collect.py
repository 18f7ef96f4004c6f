"""From the store to plain tables: the cells of a study and their items, scored by a metric."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from traitlens.analysis.metrics import ItemScores, item_scores
from traitlens.execution.plan import BASE, Plan
from traitlens.store.db import Store


@dataclass(frozen=True)
class Results:
    """Everything analysis needs, with no model or store attached.

    `cells`: one row per finished cell (model, source, seed, target, key, n, metrics as stored,
    and `score` under `metric`). `outputs`: per target, each model's item records (gold,
    prediction, score, choice_logprobs, generated, generated_tokens; the same items in the same
    order for every model). `scores`: per target, the items scored under `metric`.
    `diagonal`: (source, target) pairs where the source was trained on the target's dataset.
    `abilities`: each target's ability tags. `labels`: each target's label set (None for
    free-form answers). `families`: each source's family (sources built from one dataset).
    """

    cells: pd.DataFrame
    outputs: dict[str, dict[str, list[dict[str, Any]]]]
    diagonal: set[tuple[str, str]]
    abilities: dict[str, list[str]]
    labels: dict[str, list[str] | None] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)
    metric: str = "accuracy"
    scores: dict[str, ItemScores] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(self.cells["model"]))

    @property
    def targets(self) -> list[str]:
        return list(dict.fromkeys(self.cells["target"]))

    @property
    def used(self) -> dict[str, str]:
        """The metric each target's scores are in (a target without choice log-probabilities
        falls back to a label or accuracy metric)."""
        return {target: scores.metric for target, scores in self.scores.items()}

    def scored(self, metric: str) -> Results:
        """These results with every cell's `score` and item scores under `metric`."""
        scores = {target: item_scores(by_model, metric, self.labels.get(target))
                  for target, by_model in self.outputs.items()}
        full = {(model, target): value for target, s in scores.items() for model, value in s.full().items()}
        cells = self.cells.assign(score=[full[(m, t)] for m, t in zip(self.cells["model"], self.cells["target"])])
        return replace(self, cells=cells, metric=metric, scores=scores)


CELL_COLUMNS = ["model", "source", "seed", "target", "key", "n", "metrics"]


def collect(plan: Plan, store: Store, metric: str | None = None) -> Results:
    """The study's finished cells, scored under `metric` (default: the study's)."""
    rows, outputs = [], {}
    trained = {job.key: job for job in plan.train_jobs}
    for job in plan.eval_jobs:
        cell = store.cell(job.key)
        if cell is None:
            continue
        source = None if job.model == BASE else trained[job.needs].source
        seed = None if job.model == BASE else trained[job.needs].seed
        rows.append({"model": job.model, "source": source, "seed": seed, "target": job.target,
                     "key": job.key, "n": cell["n_items"], "metrics": cell["metrics"]})
        outputs.setdefault(job.target, {})[job.model] = store.items(job.key)
    study = plan.study
    results = Results(pd.DataFrame(rows, columns=CELL_COLUMNS), outputs, study_diagonal(study),
                      {t.name: list(t.abilities) for t in study.targets},
                      {t.name: target_labels(t, outputs.get(t.name)) for t in study.targets},
                      {s.name: s.family_name for s in study.sources})
    return results.scored(metric or study.analysis.metric)


def study_diagonal(study) -> set[tuple[str, str]]:
    """(source, target) pairs where the source was built from the target's dataset."""
    datasets = {s.name: (s.dataset, s.subset) for s in study.sources}
    return {(source, target.name) for source, origin in datasets.items()
            for target in study.targets if (target.dataset, target.subset) == origin}


def target_labels(target, outputs: dict[str, list[dict[str, Any]]] | None) -> list[str] | None:
    """A target's label set: its `labels`, the option letters its items offered, or None."""
    if target.labels:
        return list(target.labels)
    if target.kind == "multiple_choice" and outputs:
        first = next(iter(outputs.values()))
        return sorted({k for item in first for k in item.get("choice_logprobs") or {}} | {i["gold"] for i in first})
    return None
