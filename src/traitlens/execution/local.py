"""Run a plan's jobs in this process, skipping what the store already has.

A failed job records its error in the store and does not stop the jobs that do not depend on
it; the next run retries it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from traitlens.config.schema import Study
from traitlens.evaluate.cell import evaluate_cell
from traitlens.execution.plan import Plan
from traitlens.models.scorer import Scorer
from traitlens.store.db import Store


@dataclass
class RunSummary:
    done: int = 0  # already in the store before this run
    ran: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (job label, error)
    waiting: int = 0  # jobs whose prerequisites are not available


def default_scorer(study: Study) -> Scorer:
    from traitlens.models.hf import HFScorer

    return HFScorer(study.base, dtype=study.evaluation.dtype, batch_size=study.evaluation.batch_size)


def run_plan(plan: Plan, store: Store, targets: dict[str, pd.DataFrame], console: Console,
             make_scorer: Callable[[Study], Scorer] = default_scorer) -> RunSummary:
    """Evaluate every cell whose model is available. Training is not built yet, so cells of
    adapters not in the store wait (and their training jobs are counted as waiting too)."""
    summary = RunSummary()
    states = plan.states(store)
    adapters_ready = {job.key for job in plan.train_jobs if states[job.key] == "done"}
    todo = []
    for job in plan.jobs:
        if states[job.key] == "done":
            summary.done += 1
        elif job.kind == "eval" and (job.needs is None or job.needs in adapters_ready):
            todo.append(job)
        else:
            summary.waiting += 1
    if not todo:
        return summary
    scorer = make_scorer(plan.study)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("evaluating", total=len(todo))
        for job in todo:
            progress.update(task, description=job.label)
            try:
                evaluate_cell(job, plan.study, store, scorer, targets[job.target])
                summary.ran += 1
            except Exception as exc:  # recorded in the store by evaluate_cell; go on with the rest
                summary.failed.append((job.label, f"{type(exc).__name__}: {exc}"))
            progress.advance(task)
        progress.update(task, description="evaluation")
    return summary
