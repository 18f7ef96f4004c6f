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

from collections import Counter
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
from traitlens.progress import working
from traitlens.store.db import FORECAST_FIELDS

PROBE_KINDS = ("short", "gradient", "combined")  # `Study.forecast`'s probe kinds

if TYPE_CHECKING:
    from traitlens.analysis.analyze import TraitAnalysis
    from traitlens.analysis.pilot import Pilot
    from traitlens.analysis.compare import StudyComparison
    from traitlens.analysis.explain import Explanation
    from traitlens.analysis.features import Features
    from traitlens.analysis.reliability import Reliability
    from traitlens.execution.local import RunSummary
    from traitlens.config.jobs import Plan
    from traitlens.forecast.cost import StudyCost
    from traitlens.forecast.quality import ForecastQuality
    from traitlens.models.scorer import Scorer
    from traitlens.recipes.forecast import ProbeForecast
    from traitlens.recipes.recommend import Recommendation
    from traitlens.store.db import Store
    from traitlens.store.doctor import Finding

__all__ = ["Results", "Study", "catalog", "compare_studies", "load", "load_items", "read_dataset"]
MIN_SOURCES = 3  # a run ends with the analyses only when it has this many sources: traits need three


def load(path: str | Path) -> Study:
    """A study from its YAML file, checked (every problem at once, as a `ConfigError`).
    Nothing is read, trained or loaded until a method asks for it.

    Example:
        >>> study = traitlens.load("examples/quickstart.yaml")
        >>> study.config.targets[0].name
    """
    return Study(load_study(path), Path(path))


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
    """One study: its config (`config`, the validated YAML) and everything computed from it in
    its store. Methods that write the store hold its lock, like the CLI.

    Example:
        >>> study = traitlens.load("examples/quickstart.yaml")
        >>> study.plan().groupby(["kind", "state"]).size()
    """

    def __init__(self, config: StudyConfig, path: Path | None = None, console: Console | None = None):
        self.config = config
        self.path = path  # the YAML file, named in messages
        self.console = console or Console(quiet=True)  # progress output; the CLI passes its own
        self._plan: Plan | None = None

    def __repr__(self) -> str:
        return (f"traitlens.Study({self.config.name!r}: {len(self.config.sources)} sources x "
                f"{len(self.config.targets)} targets, store {self.config.store})")

    @property
    def name(self) -> str:
        """The study's name (its `name:`), which keys its analyses in the store.

        Example:
            >>> study.name
        """
        return self.config.name

    @property
    def _file(self) -> str:
        return str(self.path) if self.path else "STUDY.yaml"

    def planned(self) -> Plan:
        """The study's jobs with their content keys and typed settings (resolving `dtype: auto`
        for this machine, or the Ray cluster the study names, on first use).

        Example:
            >>> [job.label for job in study.planned().train_jobs]
        """
        from traitlens.execution.plan import plan_study

        if self._plan is None:
            self._plan = plan_study(self.config)
        return self._plan

    def validate(self, data: bool = True) -> None:
        """Check the datasets (columns, splits, labels, transforms, no evaluation item in any
        source) and the base model (found, with every LoRA target module); raises a
        `TraitlensError` naming each problem. `data=False`: the config alone (it was checked
        when loaded).

        Example:
            >>> study.validate()
        """
        if not data:
            return
        from traitlens.data.load import prepare_study
        from traitlens.models.load import check_base

        self.planned()  # keys: every dataset file and the base model must be found
        check_base(self.config.base, self.config.lora)
        prepare_study(self.config)

    def plan(self) -> pd.DataFrame:
        """One row per job: kind, label, model, source, seed, target, key, its state in the
        store (done, failed, running, new), attempts and error.

        Example:
            >>> study.plan().query("state == 'failed'")[["label", "error"]]
        """
        plan, store = self.planned(), self._store()
        states = plan.states(store) if store else {job.key: "new" for job in plan.jobs}
        records = store.jobs(states) if store else {}
        return pd.DataFrame([{"kind": job.kind, "label": job.label, "model": job.model, "source": job.source,
                              "seed": job.seed, "target": job.target, "key": job.key, "state": states[job.key],
                              "attempts": records[job.key].attempts if job.key in records else 0,
                              "error": records[job.key].error if job.key in records else None}
                             for job in plan.jobs])

    def cost(self) -> StudyCost:
        """What the whole study costs in compute, counted in forward-token units (a trained token
        counts three times: forward and backward): `training` per adapter, `evaluation` per model
        and target, `total`. The same count on any machine; a forecast's budget is a share of it.
        Reads the datasets and the base's tokenizer, not its weights.

        Example:
            >>> study.cost().training.groupby("source")["cost"].sum()
        """
        return self._cost_counter()(self.config)

    def _cost_counter(self, prepared=None):
        """`study_cost` of any variant of this study (a probe), over this study's datasets
        (`prepared`, when the caller has read them)."""
        from traitlens.forecast.cost import study_cost

        sources, targets, tokenizer = prepared or self._prepared()
        return lambda config: study_cost(config, sources, targets, tokenizer)

    def _prepared(self):
        """This study's sources and targets, read and prepared, and the base's tokenizer."""
        from traitlens.data.load import prepare_study
        from traitlens.models.load import load_tokenizer

        return (*prepare_study(self.config), load_tokenizer(self.config.base))

    def forecast(self, budget: float = 0.2, probe: str = "short", make_scorer=None) -> ProbeForecast:
        """The transfer matrix forecast by a cheap probe, spending at most `budget` of the full
        study's compute (`cost()`), stored beside the cells (`forecasts()`) with intervals when
        finished studies in the store calibrate them (`forecast.calibrate`).

        - `probe="short"` (`forecast.short`): one seed of every adapter trained for a fraction
          of its steps (and, where the budget pays for it, for half of that), every target
          scored on a fraction of its items, each cell extrapolated along its learning curve to
          the full step count. The probe studies run like any study (resumable), into this
          store under their own keys, so they never replace a measured cell. `make_scorer`: as in `run`.
        - `probe="gradient"` (`forecast.gradient`): the cosine of each source's and each
          target's LoRA gradient on a fresh adapter; no training. An affinity score, not a delta.
        - `probe="combined"` (`forecast.combine`): this study's stored short and gradient
          forecasts (as many kinds as `budget` holds; run them first) and its pairs' hidden
          statistics, in delta units by a ridge learned on the finished studies in the store that
          were forecast by the same probes. It spends nothing more: `spent` is its parts'.

        Example:
            >>> probe = study.forecast(budget=0.1)
            >>> probe.spent, probe.delta.round(2)
        """
        from traitlens.recipes import forecast as recipe

        if probe not in PROBE_KINDS:
            raise TraitlensError(f"probe {probe!r} is not one of {', '.join(PROBE_KINDS)}.")
        prepared = self._prepared()
        cost_of = self._cost_counter(prepared)
        full, store = cost_of(self.config), self._store(create=True)
        if probe == "short":
            result = recipe.short_forecast(self.config, budget, full, cost_of, self._part_runner(make_scorer))
        elif probe == "gradient":
            result = recipe.gradient_forecast(self.config, budget, full, prepared, self.console)
        else:
            result = recipe.combined_forecast(self.config, budget, full, store, self.features)
        with store.locked(f"traitlens forecast {self._file}"):
            recipe.store_forecast(store, self.name, result, budget)
            recipe.record_measured(store, self.name, self._measured)
        return result

    def forecast_quality(self, result: ProbeForecast) -> ForecastQuality | None:
        """How well a forecast matches the measured matrix, once the full study is finished (else
        None): Spearman over all cells and per target, top-1 regret, trait congruence beside its
        chance level, interval coverage.

        Example:
            >>> study.forecast_quality(study.forecast(budget=0.1)).spearman
        """
        from traitlens.forecast.quality import forecast_quality

        measured = self._measured()
        if measured is None:
            return None
        settings = self.config.analysis
        return forecast_quality(result.delta, measured, len(self.results().traits().names), result.low, result.high,
                                rotation=settings.rotation, standardize=settings.standardize)

    def _part_runner(self, make_scorer=None):
        """Run a variant of this study (a probe's or a pilot's part) through the ordinary pipeline
        into this store: (the part as a Study, its results), refusing to go on past failed jobs."""
        def run_part(config: StudyConfig) -> tuple[Study, Results]:
            part = Study(config, self.path, self.console)
            summary = part.run(analyze=False, make_scorer=make_scorer)
            if summary.failed:
                raise TraitlensError(f"{len(summary.failed)} job(s) of {config.name} failed; `traitlens status` names "
                                     "them. Rerun the same command to retry (finished jobs are kept).")
            return part, part.results()
        return run_part

    def _measured(self) -> pd.DataFrame | None:
        """The full study's delta matrix once every job is done, else None."""
        if not (self.plan()["state"] == "done").all():
            return None
        return self.results().matrix("delta")

    def forecasts(self) -> pd.DataFrame:
        """This study's stored forecast cells, one row per probe kind, budget and cell: source,
        target, delta, its interval (low, high; NaN where no finished study calibrated one), the
        share of the compute spent, and the measured delta where the full study has it.

        Example:
            >>> study.forecasts().query("probe == 'short'").pivot(index="source", columns="target", values="delta")
        """
        store = self._store()
        if store is None:
            return pd.DataFrame(columns=FORECAST_FIELDS)
        return store.forecasts(self.name)

    def status(self) -> pd.DataFrame:
        """Jobs by kind (train, eval) and state (done, running, failed, new).

        Example:
            >>> study.status().loc["eval", "done"]
        """
        jobs = self.plan()
        counts = {kind: Counter(jobs.loc[jobs["kind"] == kind, "state"]) for kind in ("train", "eval")}
        return pd.DataFrame(counts).T.reindex(columns=["done", "running", "failed", "new"]).fillna(0).astype(int)

    def in_use(self) -> str | None:
        """Who holds the store's lock (a run in progress), or None.

        Example:
            >>> study.in_use()     # e.g. 'traitlens run quickstart.yaml (pid 4242 on host)'
        """
        store = self._store()
        return store.lock_holder() if store else None

    def run(self, *, only=None, analyze: bool = True, make_scorer=None) -> RunSummary:
        """Train the adapters and evaluate the cells the store lacks (a killed run resumes;
        failed jobs are retried), locally or on Ray as the study says; then, unless
        `analyze=False` or jobs failed, compute the traits and the explanation (once the study
        has at least three sources). `only`: a predicate on plan jobs to run a subset;
        `make_scorer`: build the evaluation scorer from the plan's study (tests pass a fake).

        Example:
            >>> summary = study.run()
            >>> summary.ran, summary.failed
        """
        from traitlens.recipes.run import run_jobs

        summary = run_jobs(self.planned(), self.console, self._file, only, make_scorer)
        if analyze and only is None and self.ready_for_analysis(summary):
            self.analyze()
        return summary

    def train(self, sources: list[str] | tuple[str, ...] = (), seeds: list[int] | tuple[int, ...] = ()) -> RunSummary:
        """Train the adapters not in the store yet (of `sources` and `seeds`, default all), and
        nothing else.

        Example:
            >>> study.train(sources=["movie"], seeds=[1])
        """
        known = [source.name for source in self.config.sources]
        for name in sources:
            if name not in known:
                raise TraitlensError(f"sources: {name!r} is not a source of {self.name} ({', '.join(known)}).")
        for seed in seeds:
            if seed not in self.config.training.seeds:
                raise TraitlensError(f"seeds: {seed} is not in training.seeds {self.config.training.seeds}.")
        return self.run(only=lambda job: (job.kind == "train" and (not sources or job.source in sources)
                                          and (not seeds or job.seed in seeds)), analyze=False)

    def ready_for_analysis(self, summary: RunSummary) -> bool:
        """Whether a run ends with the analyses: every job done, and enough sources for traits
        (a smaller study's effects are still there: `results().traits()`).

        Example:
            >>> study.ready_for_analysis(study.run(analyze=False))
        """
        return len(self.config.sources) >= MIN_SOURCES and not summary.failed and not summary.blocked

    def analyze(self) -> Results | None:
        """Compute the traits and the explanation (with the datasets' features, which load the
        base model and an embedding model) unless the store has them for these cells and
        settings, and store them; what a full run ends with. Returns the results it read, or
        None when everything was current.

        Example:
            >>> study.analyze(); study.stored("explain")["verdict"]
        """
        from traitlens.recipes.analyses import ensure_analyses
        from traitlens.recipes.forecast import record_measured

        store = self._finished_store()
        with store.locked(f"traitlens run {self._file}"), \
                working(self.console, "analysis: traits, profiles, explanation"):
            results = ensure_analyses(self.planned(), store)
            record_measured(store, self.name, self._measured)
            return results

    def stored(self, name: str) -> dict[str, Any] | None:
        """The stored JSON of an analysis (`traits`, `explain` or `features`), as the report
        reads it; None when there is none. It may come from other cells or settings: `analyze()`
        brings it up to date.

        Example:
            >>> study.stored("traits")["trait_count"]
        """
        store = self._store()
        stored = store.analysis(self.name, name) if store else None
        return stored[1] if stored else None

    def results(self, metric: str | None = None) -> Results:
        """The finished cells and every item, as plain tables (`Results`), scored under
        `metric` (default: the study's `analysis.metric`), with the datasets' features when
        they are in the store. Reads the store only: no model.

        Example:
            >>> res = study.results()
            >>> res.matrix("delta")
        """
        from traitlens.recipes.analyses import collect

        return collect(self.planned(), self._finished_store(), metric)

    def reliability(self, goal: float = 0.8, priced: bool = True) -> Reliability:
        """How reliable the finished matrix is, and what design would reach `goal`: variance
        components per target, ranking reliabilities, projections over seeds and items, and the
        cheapest design, priced by `forecast.cost` as a share of this study's compute (`priced`:
        reads the datasets and tokenizer; without it designs are priced as seeds x items).

        Example:
            >>> rel = study.reliability()
            >>> rel.unreproduced, rel.designs_
        """
        from traitlens.forecast.cost import design_cost

        cost = design_cost(self.cost(), len(self.config.training.seeds)) if priced else None
        return self.results().reliability(goal, cost)

    def traits(self) -> TraitAnalysis:
        """The trait analysis under the study's settings, stored for the report (what
        `traitlens traits` prints). For other settings without storing: `results().traits(...)`.

        Example:
            >>> study.traits().explained_variance_ratio_
        """
        from traitlens.recipes.analyses import run_traits

        store = self._finished_store()
        with store.locked(f"traitlens traits {self._file}"), working(self.console, "analysis: traits"):
            return run_traits(self.planned(), store)

    def features(self, scorer: Scorer | None = None) -> Features:
        """The datasets' profiles and feature groups, computed once and stored (this reads every
        dataset and loads the base model, as `scorer` unless one is given, and an embedding
        model); afterwards `results()` carries them and needs no model.

        Example:
            >>> study.features().source_profiles[["size", "class_entropy_norm"]]
        """
        from traitlens.recipes.analyses import run_features

        store = self._finished_store()
        with store.locked(f"traitlens explain {self._file}"), working(self.console, "analysis: profiles"):
            return run_features(self.planned(), store, scorer)

    def explain(self) -> Explanation:
        """Which feature groups explain transfer, stored for the report (what `traitlens
        explain` prints); computes the datasets' features first if they are not stored.

        Example:
            >>> study.explain().verdict
        """
        from traitlens.recipes.analyses import run_explain

        store = self._finished_store()
        with store.locked(f"traitlens explain {self._file}"), \
                working(self.console, "analysis: profiles, explanation"):
            return run_explain(self.planned(), store)

    def pilot(self, sources: list[str] | None = None, targets: list[str] | None = None,
              lengths: list[int] | None = None, seeds: list[int] | None = None, items: int | None = None,
              budget: float = 1.0, goal: float = 0.8, study_budget: float | None = None,
              streams: str = "shared", out: str | Path | None = None, make_scorer=None) -> Pilot:
        """Train a few sources (default: spread-out ones with a home target) at several lengths
        (default: a quarter, one and three times the study's steps) with `seeds` (default 0, 1,
        2), score them on a sample of targets (default: their own, then other abilities) with
        `items` items each, and recommend the study's length, seeds and items: the cheapest
        design whose projected source-ranking reliability reaches `goal` on every target,
        within `study_budget` (a share of the full study's cost). Refuses a pilot costing more
        than `budget` x the full study. Writes the pilot's page and data to `out` (default
        report/<study>-pilot.html in the store). See docs/design-a-study.md.

        Example:
            >>> pilot = study.pilot(lengths=[8, 24, 64], budget=15)
            >>> pilot.recommendation, pilot.own_task_
        """
        from traitlens.recipes.pilot import pilot

        prepared = self._prepared()
        run = self._part_runner(make_scorer)

        def run_part(config: StudyConfig) -> tuple[Results, list[dict[str, Any]]]:
            part, results = run(config)
            store = part._finished_store()
            return results, [{"source": job.source, "seed": job.seed, "key": job.key,
                              "meta": store.adapter_meta(job.key)} for job in part.planned().train_jobs]

        page = Path(out) if out else self._store(create=True).root / "report" / f"{self.name}-pilot.html"
        return pilot(self.config, prepared[0], self._cost_counter(prepared), run_part, page, sources=sources,
                     targets=targets, lengths=lengths, seeds=seeds, items=items, budget=budget, goal=goal,
                     study_budget=study_budget, streams=streams)

    def recommend(self, target: str | Path | Target | None = None, source: str | Path | Source | None = None
                  ) -> Recommendation:
        """Predicted transfer for a dataset that is not in the study, before training anything:
        give `target` (a YAML file with one target spec, or a `Target`) to rank the study's
        sources for it, or `source` to rank the targets it would help. Loads the base model
        and an embedding model to profile every dataset. The ranking is fitted on the measured
        cells and, where a cell is not measured yet, on the stored forecast in delta units (short
        or combined) with the largest budget (`forecast()`): a forecast study can recommend
        before it is run.

        Example:
            >>> rec = study.recommend(target="new-target.yaml")
            >>> rec.ranking.head(3), rec.quality
        """
        from traitlens.recipes.recommend import recommend, transfer_for_recommending

        if (target is None) == (source is None):
            raise TraitlensError("give exactly one of target (a target spec) or source (a source spec).")
        by, given = ("target", target) if target is not None else ("source", source)
        results = self.results() if self._store() is not None else None
        matrix, filled = transfer_for_recommending(results, self.forecasts(), self._file)
        return recommend(self.planned(), given, by, matrix, filled)

    def compare(self, a: str, b: str, target: str, metric: str | None = None) -> dict[str, Any]:
        """Whether B scores differently from A on `target` (B minus A), item by item: sources
        (seeds averaged), single adapters ("movie/s1") or "base". See `Results.compare`.

        Example:
            >>> study.compare("movie-balanced", "movie-skewed", target="amazon")
        """
        return self.results(metric).compare(a, b, target)

    def report(self, out: str | Path | None = None, results: Results | None = None,
               export: str | Path | None = None) -> Path:
        """Write the HTML report (default: report/<study>.html in the store) and its data
        folder; returns the page's path. Recomputes stale traits and explanation from stored
        tables; never loads a model (without stored features, the page says how to compute
        them). `results`: the study's results if you have just read them. `export`: rebuild
        the page from this study's item-level export instead of its store (the store gone).

        Example:
            >>> study.report("quickstart.html")
            >>> study.report("report.html", export="studies/traits-offline/report-data")
        """
        from traitlens.recipes.analyses import report_from_export, write_report

        if export is not None:
            page = Path(out) if out else Path(export).with_name(f"{self.name}.html")
            return report_from_export(self.config, Path(export), page, self.console)
        store = self._finished_store()
        page = Path(out) if out else store.root / "report" / f"{self.name}.html"
        return write_report(self.planned(), store, page, self._file, self.console, results)

    def doctor(self, repair: bool = False) -> tuple[list[Finding], list[Finding]]:
        """Check the store (database integrity, adapter checksums, interrupted jobs, leftover
        folders); with `repair`, fix what is safe. Returns what was found and what is left
        (with `repair`: what only you can fix; without: everything found).

        Example:
            >>> found, left = study.doctor(repair=True)
        """
        from traitlens.store.doctor import examine
        from traitlens.store.doctor import repair as fix

        store = self._finished_store()
        with store.locked(f"traitlens doctor {self._file}"):
            findings = examine(store)
            return findings, fix(store, findings) if repair else findings

    def _store(self, create: bool = False) -> Store | None:
        """Read-only methods must not create a store directory as a side effect."""
        from traitlens.store.db import Store

        if not create and not (self.config.store / "results.sqlite").exists():
            return None
        return Store(self.config.store)

    def _finished_store(self) -> Store:
        store = self._store()
        if store is None:
            raise TraitlensError(f"no store at {self.config.store} yet: run `traitlens run {self._file}` first.")
        return store

