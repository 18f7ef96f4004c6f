"""The Python API: what the `traitlens` command does, for notebooks and scripts.

pandas in and out; analyses return fitted objects in scikit-learn's style (`loadings_`,
`scores_`, `explained_variance_ratio_`). The CLI is a thin layer over these functions, so
anything it prints can be computed here.

Example:
    >>> import traitlens
    >>> study = traitlens.load("examples/quickstart.yaml")
    >>> study.run()                          # train and evaluate what the store lacks
    >>> res = study.results()                # cells, items, matrix(view=..., metric=...)
    >>> res.traits().loadings_
    >>> study.report("quickstart.html")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console

from traitlens.analysis.read_export import load_items
from traitlens.analysis.results import Results
from traitlens.config import load_study
from traitlens.config.schema import Source, Target
from traitlens.config.schema import Study as StudyConfig
from traitlens.errors import TraitlensError
from traitlens.recipes.workspace import Workspace

if TYPE_CHECKING:
    from traitlens.analysis.analyze import TraitAnalysis
    from traitlens.analysis.pilot import Pilot
    from traitlens.analysis.compare import StudyComparison
    from traitlens.analysis.explain import Explanation
    from traitlens.analysis.features import Features
    from traitlens.analysis.reliability import Reliability
    from traitlens.analysis.uncertainty import Contrast
    from traitlens.execution.local import RunSummary
    from traitlens.config.jobs import Plan
    from traitlens.forecast.cost import StudyCost
    from traitlens.forecast.quality import ForecastQuality
    from traitlens.models.scorer import Scorer
    from traitlens.recipes.report import Conclusion
    from traitlens.recipes.forecast import ProbeForecast
    from traitlens.recipes.recommend import Recommendation
    from traitlens.store.doctor import Checkup

__all__ = ["Results", "Study", "catalog", "compare_studies", "load", "load_items", "read_dataset"]


def load(path: str | Path, console: Console | None = None) -> Study:
    """A study from its YAML file, checked (every problem at once, as a `ConfigError`).
    Nothing is read, trained or loaded until a method asks for it. `console`: where progress
    goes (default: nowhere).

    Example:
        >>> study = traitlens.load("examples/quickstart.yaml")
        >>> study.config.targets[0].name
    """
    return Study(load_study(path), Path(path), console)


def compare_studies(a: Study | Results | str | Path, b: Study | Results | str | Path,
                    samples: int | None = None) -> StudyComparison:
    """Two studies' traits matched by Tucker congruence, with intervals from resampling items;
    per-target loading differences; the shared cells whose deltas disagree. For the same design
    under two seeds, two settings or two base models: sources and targets are matched by name.
    Each of `a`, `b`: a study file, a `Study`, or `Results` (e.g. from `load_items`).

    Example:
        >>> cmp = traitlens.compare_studies("study.yaml", "study-gemma.yaml")
        >>> cmp.traits[["name_a", "name_b", "congruence", "low", "high"]]
    """
    from traitlens.analysis.compare import compare_studies as compare

    as_results = lambda x: x if isinstance(x, Results) else (x if isinstance(x, Study) else load(x)).results()
    return compare(as_results(a), as_results(b), samples)


def catalog() -> pd.DataFrame:
    """The offline catalog: real datasets that need no hub access (use as `dataset: catalog:NAME`).

    Example:
        >>> traitlens.catalog()[["kind", "labels"]]
    """
    from traitlens.data.catalog import CATALOG

    return pd.DataFrame([{"name": name, "kind": entry.kind, "labels": list(entry.labels or ()),
                          "description": entry.description, "source": entry.source}
                         for name, entry in CATALOG.items()]).set_index("name")


def read_dataset(dataset: str, split: str | None = None) -> tuple[pd.DataFrame, dict[str, int] | None]:
    """A dataset's rows in the canonical columns (input, answer, passage?, options?), as a study
    would read it with no transforms, and its splits with their sizes (catalog datasets only).
    `dataset`: catalog:NAME (or a catalog NAME alone), a local .jsonl/.json/.csv/.parquet file or
    folder, or a hub id; `split` defaults to the first (train for most).

    Example:
        >>> rows, splits = traitlens.read_dataset("boolq", split="dev")
        >>> rows["answer"].value_counts()
    """
    from traitlens.config.schema import DatasetSpec
    from traitlens.data.catalog import CATALOG, catalog_splits
    from traitlens.data.load import prepare
    from traitlens.config.reference import parse_reference

    if not dataset.strip():
        raise TraitlensError("dataset is empty; name one: `traitlens data list` shows the catalog.")
    if ":" not in dataset and dataset in CATALOG:
        dataset = f"catalog:{dataset}"
    ref = parse_reference(dataset)
    splits = catalog_splits(ref.value) if ref.kind == "catalog" else None
    split = split or (next(iter(splits)) if splits else "train")
    return prepare(DatasetSpec(name="shown", dataset=dataset, split=split), dataset), splits


class Study:
    """One study: its validated YAML (`config`) and everything computed from it in its store.
    Methods that write the store hold its lock, like the CLI. Each workflow is a recipe
    (`traitlens.recipes`) that a method hands the study's `Workspace`; docs/api.md says what
    each method reads and which load a model.

    Example:
        >>> study = traitlens.load("examples/quickstart.yaml")
        >>> study.plan().groupby(["kind", "state"]).size()
    """

    def __init__(self, config: StudyConfig, path: Path | None = None, console: Console | None = None):
        self.config = config
        self.path = path  # the YAML file, named in messages
        self._ws = Workspace(config, str(path) if path else "STUDY.yaml", console or Console(quiet=True))

    def __repr__(self) -> str:
        return (f"traitlens.Study({self.config.name!r}: {len(self.config.sources)} sources x "
                f"{len(self.config.targets)} targets, store {self.config.store})")

    @property
    def name(self) -> str:
        """The study's `name:`, which keys its analyses in the store.
        >>> study.name"""
        return self.config.name

    def planned(self) -> Plan:
        """The jobs as objects, with content keys and typed settings (`dtype: auto` resolved).
        >>> [job.label for job in study.planned().train_jobs]"""
        return self._ws.plan()

    def plan(self) -> pd.DataFrame:
        """One row per job: kind, label, model, source, seed, target, key, state, attempts, error.
        >>> study.plan().query("state == 'failed'")[["label", "error"]]"""
        return self._ws.jobs()

    def validate(self, data: bool = True) -> None:
        """Check every dataset and the base model (found, with every LoRA target module), or with
        `data=False` the config alone; a `TraitlensError` names each problem.
        >>> study.validate()"""
        from traitlens.recipes.run import check_study
        if data:
            self.planned()  # keys: every dataset file and the base model must be found
            check_study(self.config)

    def cost(self) -> StudyCost:
        """The compute in forward tokens (a trained token counts 3): `training`, `evaluation`,
        `total`. Reads the datasets and the tokenizer, not the weights.
        >>> study.cost().training.groupby("source")["cost"].sum()"""
        return self._ws.cost_of()(self.config)

    def forecast(self, budget: float = 0.2, probe: str = "short", make_scorer=None) -> ProbeForecast:
        """The matrix forecast by a cheap `probe` ("short", "gradient" or "combined") within
        `budget` of `cost()`, stored beside the cells (docs/forecast.md).
        >>> study.forecast(budget=0.1).delta.round(2)"""
        from traitlens.recipes.forecast import forecast
        return forecast(self._ws, budget, probe, lambda config: self._run_part(config, make_scorer), self.features)

    def forecast_quality(self, result: ProbeForecast) -> ForecastQuality | None:
        """How well `result` matches the finished matrix (Spearman, top-1 regret, trait
        congruence beside chance, interval coverage); None until the study is finished.
        >>> study.forecast_quality(study.forecast(budget=0.1)).spearman"""
        from traitlens.recipes.forecast import quality
        return quality(self._ws, result)

    def forecasts(self) -> pd.DataFrame:
        """The stored forecast cells, with intervals and the measured delta once known.
        >>> study.forecasts().query("probe == 'short'")"""
        return self._ws.forecasts()

    def status(self) -> pd.DataFrame:
        """Jobs by kind (train, eval) and state (done, running, failed, new).
        >>> study.status().loc["eval", "done"]"""
        return self._ws.status()

    def in_use(self) -> str | None:
        """Who holds the store's lock (a run in progress), or None.
        >>> study.in_use()     # e.g. 'traitlens run quickstart.yaml (pid 4242 on host)'"""
        return self._ws.lock_holder()

    def run(self, *, only=None, analyze: bool = True, make_scorer=None) -> RunSummary:
        """Train and evaluate what the store lacks (a killed run resumes), locally or on Ray,
        then the analyses unless `analyze=False` or jobs failed. `only`: a predicate on plan
        jobs; `make_scorer`: builds the evaluation scorer (tests pass a fake).
        >>> study.run().failed"""
        from traitlens.recipes.run import ready_for_analysis, run_jobs
        summary = run_jobs(self.planned(), self._ws.console, self._ws.file, only, make_scorer)
        if analyze and only is None and ready_for_analysis(self.config, summary):
            self.analyze()
        return summary

    def train(self, sources: Sequence[str] = (), seeds: Sequence[int] = ()) -> RunSummary:
        """Train the adapters of `sources` and `seeds` (default all) not in the store yet.
        >>> study.train(sources=["movie"], seeds=[1])"""
        from traitlens.recipes.run import train_only
        return self.run(only=train_only(self.config, sources, seeds), analyze=False)

    def analyze(self) -> Results | None:
        """Compute and store the traits and the explanation (profiling the datasets first, which
        loads models) unless current: the results read, or None when all was current.
        >>> study.analyze()"""
        from traitlens.recipes.analyses import analyze
        return analyze(self._ws)

    def conclude(self, summary: RunSummary) -> Conclusion | None:
        """What `traitlens run` ends with after `run(analyze=False)`: the analyses and the report,
        once every job is done and there are three sources or more (else None).
        >>> study.conclude(study.run(analyze=False)).page"""
        from traitlens.recipes.report import conclude
        return conclude(self._ws, summary)

    def stored(self, name: str) -> dict[str, Any] | None:
        """The stored JSON of an analysis (`traits`, `explain` or `features`) as the report reads
        it, or None; `analyze()` brings it up to date.
        >>> study.stored("explain")["verdict"]"""
        return self._ws.stored(name)

    def results(self, metric: str | None = None) -> Results:
        """The finished cells and every item as plain tables, scored under `metric` (default
        the study's). Reads the store only.
        >>> study.results().matrix("delta")"""
        return self._ws.results(metric)

    def reliability(self, goal: float = 0.8, priced: bool = True) -> Reliability:
        """Variance components per target, ranking reliabilities and the cheapest design reaching
        `goal`, priced as a share of this study's compute (`priced=False`: as seeds x items).
        >>> study.reliability().designs_"""
        from traitlens.forecast.cost import design_cost
        cost = design_cost(self.cost(), len(self.config.training.seeds)) if priced else None
        return self.results().reliability(goal, cost)

    def traits(self) -> TraitAnalysis:
        """The trait analysis under the study's settings, stored for the report; under other
        settings, unstored: `results().traits(...)`.
        >>> study.traits().explained_variance_ratio_"""
        from traitlens.recipes.analyses import run_traits
        return self._ws.locked("traits", run_traits, "analysis: traits")

    def features(self, scorer: Scorer | None = None) -> Features:
        """The datasets' profiles and feature groups, computed once (loading the base, or
        `scorer`, and an embedding model) and stored.
        >>> study.features().source_profiles[["size", "class_entropy_norm"]]"""
        from traitlens.recipes.analyses import run_features
        return self._ws.locked("explain", lambda plan, store: run_features(plan, store, scorer), "analysis: profiles")

    def explain(self) -> Explanation:
        """Which feature groups explain transfer, stored for the report (profiles first if none).
        >>> study.explain().verdict"""
        from traitlens.recipes.analyses import run_explain
        return self._ws.locked("explain", run_explain, "analysis: profiles, explanation")

    def pilot(self, sources: list[str] | None = None, targets: list[str] | None = None,
              lengths: list[int] | None = None, seeds: list[int] | None = None, items: int | None = None,
              budget: float = 1.0, goal: float = 0.8, study_budget: float | None = None,
              streams: str = "shared", out: str | Path | None = None, make_scorer=None) -> Pilot:
        """Train a few sources at several `lengths` and `seeds`, score a sample of targets, and
        recommend the length, seeds and items reaching `goal` (docs/design-a-study.md).
        >>> study.pilot(lengths=[8, 24, 64], budget=15).recommendation"""
        from traitlens.recipes.pilot import pilot
        return pilot(self._ws, lambda config: self._run_part(config, make_scorer), Path(out) if out else None,
                     sources=sources, targets=targets, lengths=lengths, seeds=seeds, items=items, budget=budget,
                     goal=goal, study_budget=study_budget, streams=streams)

    def recommend(self, target: str | Path | Target | None = None, source: str | Path | Source | None = None
                  ) -> Recommendation:
        """Predicted transfer for a new `target` (ranking the sources) or `source` (ranking the
        targets), from measured cells and, where missing, stored forecasts. Loads models.
        >>> study.recommend(target="new-target.yaml").ranking.head(3)"""
        from traitlens.recipes.recommend import recommend_for
        return recommend_for(self._ws, target, source)

    def compare(self, a: str, b: str, target: str, metric: str | None = None) -> Contrast:
        """Whether B scores differently from A on `target`, item by item (`Results.compare`).
        >>> study.compare("movie-balanced", "movie-skewed", target="amazon")"""
        return self.results(metric).compare(a, b, target)

    def report(self, out: str | Path | None = None, results: Results | None = None,
               export: str | Path | None = None) -> Path:
        """Write the HTML report and its data folder, never loading a model; `export`: rebuild it
        from this study's item-level export instead of its store. Returns the page's path.
        >>> study.report("quickstart.html")"""
        from traitlens.recipes.report import report
        return report(self._ws, out, results, export)

    def doctor(self, repair: bool = False) -> Checkup:
        """Check the store (integrity, checksums, interrupted jobs, leftovers): what was `found`
        and what is `left` for you (with `repair`, after fixing what is safe).
        >>> found, left = study.doctor(repair=True)"""
        from traitlens.store.doctor import checkup
        return self._ws.locked("doctor", lambda plan, store: checkup(store, repair))

    def _run_part(self, config: StudyConfig, make_scorer=None) -> tuple[Study, Results]:
        """Run a variant of this study (a probe's or a pilot's part) into this store."""
        part = Study(config, self.path, self._ws.console)
        if (summary := part.run(analyze=False, make_scorer=make_scorer)).failed:
            raise TraitlensError(f"{len(summary.failed)} job(s) of {config.name} failed; `traitlens status` names "
                                 "them. Rerun the same command to retry (finished jobs are kept).")
        return part, part.results()
