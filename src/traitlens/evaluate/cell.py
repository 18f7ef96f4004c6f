"""One cell: a model (base or adapter) scored on one target, cached in the store by its key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from traitlens.config.schema import Study
from traitlens.errors import TraitlensError
from traitlens.evaluate.metrics import cell_metrics
from traitlens.evaluate.targets import evaluate_target, label_set, prompts, select_items
from traitlens.models.scorer import ChoiceRequest, Scorer
from traitlens.store.db import ADAPTER_META_FILE, Store

if TYPE_CHECKING:
    from traitlens.execution.plan import Job

# Bump when scoring changes what a cell contains, so cells of the old code are not reused.
SCORING_CODE_VERSION = 1
PROBES = 4  # inputs the adapter guard compares between adapter and base


class AdapterGuardError(TraitlensError):
    """An adapter that would silently report the base model's scores."""


def evaluate_cell(job: Job, study: Study, store: Store, scorer: Scorer, table: pd.DataFrame,
                  worker: str = "local") -> dict[str, Any]:
    """The cell of `job`: read from the store if done, else scored, stored and returned.

    A failure is recorded on the job (and re-raised) so the next run retries it.
    """
    cached = store.cell(job.key)
    if cached is not None:
        return cached
    store.start_job(job.key, "eval", job.label, job.spec, worker)
    try:
        adapter = store.adapter_path(job.needs) if job.needs else None
        store.put_cell(job.key, job.model, job.target, *score_cell(job, study, scorer, table, adapter))
    except BaseException as exc:
        store.fail_job(job.key, f"{type(exc).__name__}: {exc}")
        raise
    return store.cell(job.key)


def score_cell(job: Job, study: Study, scorer: Scorer, table: pd.DataFrame, adapter: Path | None
               ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(metrics, items, meta) of one cell, touching no store: executors call this anywhere."""
    target = study.target(job.target)
    items = select_items(table, job.spec["limit"], study.evaluation.seed)
    if job.needs is None:
        scorer.use_adapter(None)
    else:
        _activate_checked_adapter(job, adapter, scorer, prompts(target, items.head(PROBES), scorer))
    results = evaluate_target(target, items, scorer)
    metrics = cell_metrics(results, label_set(target, items))
    example = prompts(target, items.head(1), scorer)[0] + str(items.iloc[0]["answer"])
    meta = {"template": target.template.model_dump(mode="json"), "example": example,
            "target": job.spec["target"], "adapter": job.needs}
    return metrics, results, meta


def _activate_checked_adapter(job: Job, path: Path | None, scorer: Scorer, probes: list[str]) -> None:
    """Refuse an adapter made for another base, or one that does not change the model."""
    if path is None:
        raise AdapterGuardError(f"{job.label}: adapter {job.needs[:12]} is not in the store; train it first.")
    meta_file = path / ADAPTER_META_FILE
    recorded = json.loads(meta_file.read_text()).get("base") if meta_file.exists() else None
    if recorded != job.spec["base"]:
        raise AdapterGuardError(
            f"{job.label}: adapter {job.needs[:12]} was trained on base {recorded}, but the study's "
            f"base is {job.spec['base']}; retrain it for this base.")
    requests = [ChoiceRequest(p, (" the", "\n")) for p in probes]
    scorer.use_adapter(None)
    base = scorer.loglikelihood(requests)
    scorer.use_adapter(job.needs, path)
    adapted = scorer.loglikelihood(requests)
    change = max(abs(a - b) for x, y in zip(base, adapted) for a, b in zip(x.logprobs, y.logprobs))
    if change < 1e-6:
        raise AdapterGuardError(
            f"{job.label}: adapter {job.needs[:12]} leaves the model's outputs unchanged on "
            f"{len(probes)} probe inputs (max log-prob change {change:.1e}); its weights are "
            "probably zero or were not applied. Not reporting base scores as adapter scores.")
