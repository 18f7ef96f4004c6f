"""What every workflow on one study needs, in one place: its config, the YAML file as messages
name it, the console for progress, its plan (made on first use), its store, its prepared
datasets and the cost counter. `Study` holds one and hands it to the recipes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import pandas as pd
from rich.console import Console

from traitlens.config.schema import Study as StudyConfig
from traitlens.errors import TraitlensError
from traitlens.progress import working
from traitlens.store.db import FORECAST_FIELDS

if TYPE_CHECKING:
    from traitlens.analysis.results import Results
    from traitlens.config.jobs import Plan
    from traitlens.forecast.cost import StudyCost
    from traitlens.store.db import Store

T = TypeVar("T")


@dataclass
class Workspace:
    config: StudyConfig
    file: str  # the YAML file, as messages name it
    console: Console
    _plan: Plan | None = field(default=None, repr=False)

    def plan(self) -> Plan:
        """The jobs, keyed; resolving `dtype: auto` may join a Ray cluster, so only once."""
        from traitlens.execution.plan import plan_study

        if self._plan is None:
            self._plan = plan_study(self.config)
        return self._plan

    def store(self, create: bool = False) -> Store | None:
        """The study's store; None where there is none yet, since reading must not create one."""
        from traitlens.store.db import Store

        if not create and not (self.config.store / "results.sqlite").exists():
            return None
        return Store(self.config.store)

    def finished_store(self) -> Store:
        store = self.store()
        if store is None:
            raise TraitlensError(f"no store at {self.config.store} yet: run `traitlens run {self.file}` first.")
        return store

    def lock_holder(self) -> str | None:
        store = self.store()
        return store.lock_holder() if store else None

    def stored(self, name: str) -> dict | None:
        """An analysis's stored JSON, or None."""
        store = self.store()
        stored = store.analysis(self.config.name, name) if store else None
        return stored[1] if stored else None

    def locked(self, command: str, work: Callable[[Plan, Store], T], label: str | None = None) -> T:
        """`work` on the plan and the finished store, holding the store's lock as `traitlens
        <command>` (so no run writes meanwhile), showing `label` while it runs."""
        store = self.finished_store()
        with store.locked(f"traitlens {command} {self.file}"), \
                (working(self.console, label) if label else nullcontext()):
            return work(self.plan(), store)

    def jobs(self) -> pd.DataFrame:
        """One row per job with its state, attempts and error (`Study.plan`)."""
        plan, store = self.plan(), self.store()
        states = plan.states(store) if store else {job.key: "new" for job in plan.jobs}
        records = store.jobs(states) if store else {}
        return pd.DataFrame([{"kind": job.kind, "label": job.label, "model": job.model, "source": job.source,
                              "seed": job.seed, "target": job.target, "key": job.key, "state": states[job.key],
                              "attempts": records[job.key].attempts if job.key in records else 0,
                              "error": records[job.key].error if job.key in records else None}
                             for job in plan.jobs])

    def status(self) -> pd.DataFrame:
        jobs = self.jobs()
        counts = {kind: Counter(jobs.loc[jobs["kind"] == kind, "state"]) for kind in ("train", "eval")}
        return pd.DataFrame(counts).T.reindex(columns=["done", "running", "failed", "new"]).fillna(0).astype(int)

    def results(self, metric: str | None = None) -> Results:
        from traitlens.recipes.analyses import collect

        return collect(self.plan(), self.finished_store(), metric)

    def measured(self) -> pd.DataFrame | None:
        """The delta matrix once every job is done, else None."""
        store = self.store()
        if store is None or any(state != "done" for state in self.plan().states(store).values()):
            return None
        return self.results().matrix("delta")

    def forecasts(self) -> pd.DataFrame:
        """The study's stored forecast cells (`Study.forecasts`)."""
        store = self.store()
        return store.forecasts(self.config.name) if store else pd.DataFrame(columns=FORECAST_FIELDS)

    def prepared(self):
        """The sources and targets, read and prepared, and the base's tokenizer."""
        from traitlens.data.load import prepare_study
        from traitlens.models.load import load_tokenizer

        return (*prepare_study(self.config), load_tokenizer(self.config.base))

    def cost_of(self, prepared=None) -> Callable[[StudyConfig], StudyCost]:
        """`study_cost` of any variant of this study (a probe, a pilot's part), over this study's
        datasets (`prepared`, where the caller has read them)."""
        from traitlens.forecast.cost import study_cost

        sources, targets, tokenizer = prepared or self.prepared()
        return lambda config: study_cost(config, sources, targets, tokenizer)
