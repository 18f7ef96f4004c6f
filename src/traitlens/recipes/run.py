"""Running a study's jobs (`Study.run`, `traitlens run`), read top to bottom: read and check
the datasets and the base before any job starts, then, holding the store's lock, record the
study and hand the plan to the local or the Ray executor (both skip finished jobs and retry
failed ones)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Console

from traitlens.config.jobs import Job, Plan
from traitlens.config.schema import Study
from traitlens.data.load import prepare_study
from traitlens.errors import TraitlensError
from traitlens.execution.local import RunSummary, run_plan
from traitlens.models.load import check_base
from traitlens.store.db import Store


def check_study(config: Study) -> tuple[dict, dict]:
    """Read and check every dataset and the base model (found, with every LoRA target module)
    before hours of training find out; the prepared sources and targets."""
    sources, targets = prepare_study(config)
    check_base(config.base, config.lora)
    return sources, targets


def run_jobs(plan: Plan, console: Console, file: str, only: Callable[[Job], bool] | None = None,
             make_scorer=None) -> RunSummary:
    """Train the adapters and evaluate the cells the study's store lacks (of the jobs `only`
    selects); `make_scorer`: builds the evaluation scorer from a job's settings (tests pass a
    fake). The store is created only once the datasets and the base have passed their checks."""
    config = plan.study
    sources, targets = check_study(config)
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


MIN_SOURCES = 3  # a run ends with the analyses only when it has this many sources: traits need three


def ready_for_analysis(config: Study, summary: RunSummary) -> bool:
    """Whether a run ends with the analyses: every job done, and enough sources for traits (a
    smaller study's effects are still there: `results().traits()`)."""
    return len(config.sources) >= MIN_SOURCES and not summary.failed and not summary.blocked


def train_only(config: Study, sources: Sequence[str], seeds: Sequence[int]) -> Callable[[Job], bool]:
    """`Study.train`'s selection: the training jobs of `sources` and `seeds` (empty: all), each
    name checked against the study."""
    known = [source.name for source in config.sources]
    for name in sources:
        if name not in known:
            raise TraitlensError(f"sources: {name!r} is not a source of {config.name} ({', '.join(known)}).")
    for seed in seeds:
        if seed not in config.training.seeds:
            raise TraitlensError(f"seeds: {seed} is not in training.seeds {config.training.seeds}.")
    return lambda job: (job.kind == "train" and (not sources or job.source in sources)
                        and (not seeds or job.seed in seeds))
