"""Run a plan's jobs in this process: train missing adapters, then evaluate missing cells.

Jobs already in the store are skipped. A failed job records its error in the store and does
not stop the jobs that do not depend on it; the next run retries it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
from rich.console import Console

from traitlens.config.schema import Study
from traitlens.evaluate.cell import evaluate_cell
from traitlens.execution.plan import Job, Plan
from traitlens.execution.progress import JobProgress
from traitlens.models.scorer import Scorer
from traitlens.store.db import Store


@dataclass
class RunSummary:
    done: int = 0  # already in the store before this run
    ran: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (job label, error)
    blocked: int = 0  # evaluations whose adapter failed to train


def pending_jobs(plan: Plan, store: Store, only: Callable[[Job], bool]
                 ) -> tuple[RunSummary, dict[str, str], list[Job]]:
    """A summary counting the selected jobs already done, every job's state, and the selected
    jobs still to run, in plan order (training before the evaluations that need it)."""
    states = plan.states(store)
    selected = [job for job in plan.jobs if only(job)]
    summary = RunSummary(done=sum(states[job.key] == "done" for job in selected))
    return summary, states, [job for job in selected if states[job.key] != "done"]


def default_scorer(study: Study) -> Scorer:
    from traitlens.models.hf import HFScorer

    return HFScorer(study.base, dtype=study.evaluation.dtype, batch_size=study.evaluation.batch_size)


def run_plan(plan: Plan, store: Store, sources: dict[str, pd.DataFrame], targets: dict[str, pd.DataFrame],
             console: Console, make_scorer: Callable[[Study], Scorer] = default_scorer,
             only: Callable[[Job], bool] = lambda job: True) -> RunSummary:
    """Run every job of `plan` that `only` selects and the store does not have yet."""
    from traitlens.train.loop import train_adapter  # imports torch: only when there is work

    summary, states, todo = pending_jobs(plan, store, only)
    if not todo:
        return summary
    with JobProgress(console, len(todo)) as progress:
        for job in (j for j in todo if j.kind == "train"):
            started, error = time.perf_counter(), None
            try:
                train_adapter(job, plan.study, store, sources[job.source], progress.bar)
                summary.ran += 1
            except Exception as exc:  # recorded in the store; independent jobs go on
                error = f"{type(exc).__name__}: {exc}"
                summary.failed.append((job.label, error))
            progress.done(job.label, time.perf_counter() - started, error)
        evaluations = [j for j in todo if j.kind == "eval"]
        runnable = [j for j in evaluations if j.needs is None or store.adapter_path(j.needs) is not None]
        summary.blocked = len(evaluations) - len(runnable)
        progress.set_total(len(todo) - summary.blocked)
        scorer = make_scorer(plan.study) if runnable else None
        for job in runnable:
            progress.describe(job.label)
            started, error = time.perf_counter(), None
            try:
                evaluate_cell(job, plan.study, store, scorer, targets[job.target])
                summary.ran += 1
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                summary.failed.append((job.label, error))
            progress.done(job.label, time.perf_counter() - started, error)
        progress.describe("all jobs")
    return summary
