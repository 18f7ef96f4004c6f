"""A study's results as plain tables, and the analyses a notebook asks of them.

`Results` holds no model and no store: `traitlens.Study.results()` reads one from a store,
`traitlens.load_items` from an item-level export. Every analysis is a method that returns
pandas objects or fitted estimators, so the CLI, the report and a notebook compute the same
thing the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from traitlens.analysis.metrics import METRICS, ItemScores, item_scores
from traitlens.config.schema import Analysis
from traitlens.errors import TraitlensError

if TYPE_CHECKING:
    from traitlens.analysis.analyze import TraitAnalysis
    from traitlens.analysis.explain import Explanation
    from traitlens.analysis.features import Features
    from traitlens.analysis.uncertainty import Contrast
    from traitlens.analysis.reliability import Reliability


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
    `kinds`: each target's kind. `shared_corpus`: (source, target) pairs off the diagonal whose
    datasets come from one corpus (the explanation masks them like the diagonal). `settings`:
    the study's analysis settings, the defaults of every method here. `features`: the datasets' features, where they have been computed (the
    explanation needs them).

    Example:
        >>> res = traitlens.load("examples/quickstart.yaml").results()
        >>> res.matrix("delta").round(3)        # sources x targets
        >>> res.traits(rotation="promax").loadings_
    """

    cells: pd.DataFrame
    outputs: dict[str, dict[str, list[dict[str, Any]]]]
    diagonal: set[tuple[str, str]]
    abilities: dict[str, list[str]]
    labels: dict[str, list[str] | None] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)
    metric: str = "accuracy"
    scores: dict[str, ItemScores] = field(default_factory=dict)
    settings: Analysis = field(default_factory=Analysis)
    study: str = ""
    kinds: dict[str, str] = field(default_factory=dict)
    features: Features | None = None
    shared_corpus: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        """Consistent from the start: the cell table has its columns, every cell has item
        records, seeds are integers (missing for the base) as in `items`, and the cells are
        scored under `metric` (here, where no scores were given)."""
        missing = [column for column in CELL_COLUMNS if column not in self.cells.columns]
        if missing:
            raise TraitlensError(f"Results: cells lack column(s) {', '.join(missing)}; a cell table has "
                                 f"{', '.join(CELL_COLUMNS)}")
        absent = [(m, t) for m, t in zip(self.cells["model"], self.cells["target"]) if m not in self.outputs.get(t, {})]
        if absent:
            raise TraitlensError(f"Results: {len(absent)} cell(s) have no item records in `outputs`, e.g. model "
                                 f"{absent[0][0]!r} on target {absent[0][1]!r}")
        if self.cells["seed"].dtype != "Int64":  # the base has none; the same dtype as in `items`
            object.__setattr__(self, "cells", self.cells.astype({"seed": "Int64"}))
        if not self.scores and self.outputs:
            scored = self.scored(self.metric)
            object.__setattr__(self, "cells", scored.cells)
            object.__setattr__(self, "scores", scored.scores)

    @property
    def models(self) -> list[str]:
        """The models with cells: the base, then each adapter.

        Example:
            >>> res.models        # ['base', 'movie', ...]
        """
        return list(dict.fromkeys(self.cells["model"]))

    @property
    def targets(self) -> list[str]:
        """The targets with cells, in the study's order.

        Example:
            >>> res.targets
        """
        return list(dict.fromkeys(self.cells["target"]))

    @property
    def used(self) -> dict[str, str]:
        """The metric each target's scores are in (a target without choice log-probabilities
        falls back to a label or accuracy metric).

        Example:
            >>> {t: m for t, m in res.used.items() if m != res.metric}   # the fallbacks
        """
        return {target: scores.metric for target, scores in self.scores.items()}

    @property
    def items(self) -> pd.DataFrame:
        """Every model's answer to every item, one row each: model, source, seed, target, item,
        gold, prediction, score (as stored: 1 when right), choice_logprobs (a dict, or None),
        generated, generated_tokens, and `value`, the item's score under `metric` (NaN under balanced
        accuracy and macro-F1, which only a whole target has).

        Example:
            >>> res.items.query("target == 'boolq'").groupby("model")["value"].mean()
        """
        rows = []
        for cell in self.cells.itertuples():
            records, scores = self.outputs[cell.target][cell.model], self.scores.get(cell.target)
            per_item = scores is not None and scores.values is not None
            values = scores.values[scores.row(cell.model)] if per_item else [float("nan")] * len(records)
            for index, (item, value) in enumerate(zip(records, values)):
                rows.append({"model": cell.model, "source": cell.source, "seed": cell.seed, "target": cell.target,
                             "item": index, "gold": item["gold"], "prediction": item["prediction"],
                             "score": item["score"], "choice_logprobs": item.get("choice_logprobs"),
                             "generated": item.get("generated"), "generated_tokens": item.get("generated_tokens"),
                             "value": value})
        return pd.DataFrame(rows).astype({"seed": "Int64"})

    def scored(self, metric: str) -> Results:
        """These results with every cell's `score` and item scores under `metric`.

        Example:
            >>> res.scored("accuracy").cells[["model", "target", "score"]]
        """
        if metric not in METRICS:
            raise TraitlensError(f"metric {metric!r} is not one of {', '.join(METRICS)}.")
        scores = {target: item_scores(by_model, metric, self.labels.get(target))
                  for target, by_model in self.outputs.items()}
        full = {(model, target): value for target, s in scores.items() for model, value in s.full().items()}
        cells = self.cells.assign(score=[full[(m, t)] for m, t in zip(self.cells["model"], self.cells["target"])])
        return replace(self, cells=cells, metric=metric, scores=scores)

    def with_settings(self, **changes: Any) -> Results:
        """These results with analysis settings changed (checked like the study file's
        `analysis:` section), rescored if the metric changed.

        Example:
            >>> res.with_settings(metric="accuracy", mask_diagonal=True).matrix()
        """
        try:
            settings = Analysis.model_validate(self.settings.model_dump() | changes)
        except ValueError as exc:
            raise TraitlensError(f"analysis settings {sorted(changes)}: {exc}") from None
        out = replace(self, settings=settings)
        return out.scored(settings.metric) if settings.metric != self.metric else out

    def matrix(self, view: str | None = None, metric: str | None = None, mask_diagonal: bool | None = None
               ) -> pd.DataFrame:
        """The transfer matrix: raw (models x targets, the base included) or a view of the
        adapters against the base (delta, relative_delta, zscore), seeds averaged. Each
        argument left out is the study's analysis setting (`view`, `metric`, `mask_diagonal`).

        Example:
            >>> res.matrix("raw", metric="accuracy")
        """
        from traitlens.analysis.views import VIEWS, raw_matrix
        from traitlens.analysis.views import view as view_of

        view = view or self.settings.view
        if view not in VIEWS:
            raise TraitlensError(f"view {view!r} is not one of {', '.join(VIEWS)}.")
        results = self.scored(metric) if metric and metric != self.metric else self
        raw = raw_matrix(results.cells)
        mask = self.settings.mask_diagonal if mask_diagonal is None else mask_diagonal
        return raw if view == "raw" else view_of(raw, view, self.diagonal, mask)

    def traits(self, **changes: Any) -> TraitAnalysis:
        """The trait analysis under the study's analysis settings, or with some changed
        (`method`, `rotation`, `n_traits`, `view`, `metric`, ...): `loadings_`, `scores_`,
        `explained_variance_ratio_`, `stability`, and the effects and diagnostics beside them.

        Example:
            >>> traits = res.traits(n_traits=2, rotation="promax")
            >>> traits.loadings_.round(2)
        """
        from traitlens.analysis.analyze import analyze

        results = self.with_settings(**changes) if changes else self
        return analyze(results, results.settings)

    def explain(self, traits: TraitAnalysis | None = None, permutations: int | None = None,
                **changes: Any) -> Explanation:
        """Which feature groups explain transfer (held out by source family, against a
        permutation null), feature correlations, and held-out recommendations. Needs the
        datasets' features (`features`; `traitlens.Study.results()` attaches them once
        `traitlens explain` or `Study.features()` has computed them). `traits`: correlate the
        features with these trait scores too.

        Example:
            >>> why = res.explain()
            >>> why.groups[["group", "r2", "null_95", "p"]]
        """
        from traitlens.analysis.explain import explain_results

        if self.features is None:
            raise TraitlensError("these results have no dataset features, which the explanation needs: compute "
                                 "them once with `traitlens explain STUDY.yaml` or `Study.features()` (they load "
                                 "the base model and an embedding model), then read the results again.")
        results = self.with_settings(**changes) if changes else self
        scores = traits.scores_ if traits is not None and not traits.scores_.empty else None
        from traitlens.analysis.explain import PERMUTATIONS

        return explain_results(results, self.features, scores, permutations or PERMUTATIONS)

    def reliability(self, goal: float = 0.8, cost=None, metric: str | None = None) -> Reliability:
        """How reliable this matrix is: variance components per target (source, seed, item,
        source x item, residual) with intervals, the reliability of each target's source ranking,
        and the seeds and items other designs would need to reach `goal` (priced by
        `cost(seeds, items)`, default seeds x items). See `analysis.reliability`.

        Example:
            >>> rel = res.reliability()
            >>> rel.components_[["target", "seed_reliability", "seed_f"]], rel.designs_
        """
        from traitlens.analysis.reliability import plan_reliability, variance_components

        results = self.scored(metric) if metric and metric != self.metric else self
        return plan_reliability(variance_components(results, seed=self.settings.seed), goal, cost)

    def compare(self, a: str, b: str, target: str, metric: str | None = None) -> Contrast:
        """A paired test of B against A on one target (B minus A): sources (seeds averaged),
        single adapters ("movie/s1") or "base".

        Example:
            >>> res.compare("movie-balanced", "movie-skewed", target="amazon").p
        """
        from traitlens.analysis.uncertainty import compare_models

        results = self.scored(metric) if metric and metric != self.metric else self
        s = self.settings
        try:
            return compare_models(results, a, b, target, s.bootstrap_samples, s.alpha, s.seed)
        except ValueError as exc:
            raise TraitlensError(str(exc)) from None

    def export(self, folder: str | Path) -> Path:
        """Write the item-level export (items.parquet and items.json) into `folder`;
        `traitlens.load_items(folder)` reads it back.

        Example:
            >>> res.export("my-study-items")
        """
        from traitlens.analysis.export import export_items

        return export_items(self, Path(folder))


CELL_COLUMNS = ["model", "source", "seed", "target", "key", "n", "metrics"]


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
