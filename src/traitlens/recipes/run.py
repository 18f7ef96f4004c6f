"""Running a study's jobs (`Study.run`, `traitlens run`), read top to bottom: read and check
the datasets and the base before any job starts, then, holding the store's lock, record the
study and hand the plan to the local or the Ray executor (both skip finished jobs and retry
failed ones)."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from traitlens.config.jobs import Job, Plan
from traitlens.data.load import prepare_study
from traitlens.execution.local import RunSummary, run_plan
from traitlens.models.load import check_base
from traitlens.store.db import Store


def run_jobs(plan: Plan, console: Console, file: str, only: Callable[[Job], bool] | None = None,
             make_scorer=None) -> RunSummary:
    """Train the adapters and evaluate the cells the study's store lacks (of the jobs `only`
    selects); `make_scorer`: builds the evaluation scorer from a job's settings (tests pass a
    fake). The store is created only once the datasets and the base have passed their checks."""
    config = plan.study
    sources, targets = prepare_study(config)
    check_base(config.base, config.lora)  # before hours of training find out
    store = Store(config.store)
    if config.execution.executor == "ray":
        from traitlens.execution.distributed import run_plan_ray as execute
    else:
        execute = run_plan
    extra = {"only": only} if only else {}
    if make_scorer is not None:
        extra["make_scorer"] = make_scorer
    with store.locked(f"traitlens run {file}"):
        store.save_study(config.name, config.model_dump(mode="json"))
        return execute(plan, store, sources, targets, console, **extra)
