"""Run a plan's jobs in this process: train missing adapters, then evaluate missing cells.

Jobs already in the store are skipped. A failed job records its error in the store and does
not stop the jobs that do not depend on it; the next run retries it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
from rich.console import Console

from traitlens.config.jobs import EvalSettings
from traitlens.evaluate.cell import evaluate_cells
from traitlens.config.jobs import Job, Plan
from traitlens.progress import JobProgress
from traitlens.models.scorer import Scorer
from traitlens.store.db import Store

if TYPE_CHECKING:
    from traitlens.models.device import Placement


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


def default_scorer(settings: EvalSettings, placement: Placement | None = None) -> Scorer:
    """The scorer for evaluation jobs with these settings (any of them: the base, evaluation
    settings and placement are the study's), on this machine; `placement`: another than the
    jobs' (the datasets' features, scored in this process)."""
    from traitlens.models.hf import HFScorer

    evaluation = settings.evaluation
    return HFScorer(settings.base, placement=placement or settings.placement, batch_size=evaluation.batch_size,
                    mixed_adapters=evaluation.mixed_adapters)


def run_plan(plan: Plan, store: Store, sources: dict[str, pd.DataFrame], targets: dict[str, pd.DataFrame],
             console: Console, make_scorer: Callable[[EvalSettings], Scorer] = default_scorer,
             only: Callable[[Job], bool] = lambda job: True) -> RunSummary:
    """Run every job of `plan` that `only` selects and the store does not have yet."""
    from traitlens.train.loop import train_adapter  # imports torch: only when there is work

    summary, states, todo = pending_jobs(plan, store, only)
    if not todo:
        return summary
    store.clean_scratch()
    with JobProgress(console, len(todo)) as progress:
        for job in (j for j in todo if j.kind == "train"):
            started, error = time.perf_counter(), None
            progress.describe(job.label)
            try:
                train_adapter(job, store, sources[job.source], progress)
                summary.ran += 1
            except Exception as exc:  # recorded in the store; independent jobs go on
                error = f"{type(exc).__name__}: {exc}"
                summary.failed.append((job.label, error))
            progress.done(job.label, time.perf_counter() - started, error)
        evaluations = [j for j in todo if j.kind == "eval"]
        runnable = [j for j in evaluations if j.needs is None or store.adapter_path(j.needs) is not None]
        summary.blocked = len(evaluations) - len(runnable)
        progress.set_total(len(todo) - summary.blocked)
        if runnable:
            with runnable[0].settings.placement.running():  # its memory given back to what runs next
                _evaluate(runnable, store, targets, make_scorer(runnable[0].settings), progress, summary)
        progress.describe("all jobs")
    return summary


def _evaluate(runnable: list[Job], store: Store, targets: dict[str, pd.DataFrame], scorer: Scorer,
              progress: JobProgress, summary: RunSummary) -> None:
    """Score `runnable` with `scorer`, counting into `summary`. A scorer that mixes adapters in
    one batch gets each target's models together."""
    groups = ([[j for j in runnable if j.target == t] for t in dict.fromkeys(j.target for j in runnable)]
              if scorer.mixed else [[job] for job in runnable])
    for group in groups:
        label = group[0].label if len(group) == 1 else f"eval {len(group)} models on {group[0].target}"
        progress.describe(label)
        started = time.perf_counter()
        outcomes = evaluate_cells(group, store, scorer, targets[group[0].target], progress=progress)
        errors = []
        for job, (status, value) in zip(group, outcomes):
            if status == "ok":
                summary.ran += 1
            else:
                errors.append(f"{type(value).__name__}: {value}")
                summary.failed.append((job.label, errors[-1]))
        progress.done(label, time.perf_counter() - started, "; ".join(errors) or None, count=len(group))
