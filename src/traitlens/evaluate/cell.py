"""One cell: a model (base or adapter) scored on one target, cached in the store by its key."""

from __future__ import annotations

import math
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from traitlens.errors import TraitlensError
from traitlens.evaluate.metrics import cell_metrics
from traitlens.evaluate.targets import evaluate_models, label_set, prompts, select_items
from traitlens.models.scorer import ChoiceRequest, Scorer
from traitlens.progress import JobProgress, StepMeter
from traitlens.store.db import ADAPTER_META_FILE, DamagedArtifactError, Store, adapter_file_meta

if TYPE_CHECKING:
    from traitlens.config.jobs import Job
GUARD_INPUTS = 4  # inputs the adapter guard compares between adapter and base
# Per scorer, the adapters that passed the guard's output check (see `_activate_checked_adapter`).
_CHECKED: weakref.WeakKeyDictionary[Scorer, set[str]] = weakref.WeakKeyDictionary()


class AdapterGuardError(TraitlensError):
    """An adapter that would silently report the base model's scores."""


def evaluate_cell(job: Job, store: Store, scorer: Scorer, table: pd.DataFrame,
                  worker: str = "local", progress: JobProgress | None = None) -> dict[str, Any]:
    """The cell of `job`: read from the store if done, else scored, stored and returned.

    A failure is recorded on the job (and re-raised) so the next run retries it.
    """
    [(status, value)] = evaluate_cells([job], store, scorer, table, worker, progress)
    if status == "error":
        raise value
    return value


def evaluate_cells(jobs: list[Job], store: Store, scorer: Scorer, table: pd.DataFrame,
                   worker: str = "local", progress: JobProgress | None = None) -> list[tuple[str, Any]]:
    """The cells of `jobs` (one target, several models), scored together where the scorer mixes
    adapters in one batch. Per job ("ok", cell) or ("error", exception), the error recorded on
    its job; cells already in the store are read, not scored."""
    out: dict[str, tuple[str, Any]] = {}
    todo = []
    for job in jobs:
        cached = store.cell(job.key)
        if cached is not None:
            out[job.key] = ("ok", cached)
        else:
            store.start_job(job.key, "eval", job.label, job.spec, worker)
            todo.append(job)
    adapters = {}
    for job in list(todo):
        try:
            adapters[job.key] = store.verified_adapter(job.needs) if job.needs else None
        except DamagedArtifactError as exc:  # requeued by the store: never scored
            store.fail_job(job.key, str(exc))
            out[job.key] = ("error", exc)
            todo.remove(job)
    for job, (status, value) in zip(todo, score_cells(todo, scorer, table, adapters, progress)):
        if status == "ok":
            store.put_cell(job.key, job.model, job.target, *value)
            out[job.key] = ("ok", store.cell(job.key))
        else:
            store.fail_job(job.key, f"{type(value).__name__}: {value}")
            out[job.key] = ("error", value)
    return [out[job.key] for job in jobs]


def score_cell(job: Job, scorer: Scorer, table: pd.DataFrame, adapter: Path | None
               ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(metrics, items, meta) of one cell, touching no store: executors call this anywhere."""
    [(status, value)] = score_cells([job], scorer, table, {job.key: adapter})
    if status == "error":
        raise value
    return value


def score_cells(jobs: list[Job], scorer: Scorer, table: pd.DataFrame,
                adapters: dict[str, Path | None], progress: JobProgress | None = None) -> list[tuple[str, Any]]:
    """Per job of one target ("ok", (metrics, items, meta)) or ("error", exception), touching no
    store. Each adapter passes the guard first; those that pass are scored in one mixed batch
    when the scorer prefers it (`Scorer.mixed`), else one after another."""
    if not jobs:
        return []
    settings = jobs[0].settings  # the same target, limit and seed for every job here
    target = settings.target
    items = select_items(table, settings.limit, settings.evaluation.seed)
    probes = prompts(target, items.head(GUARD_INPUTS), scorer)  # the same for every adapter of the target
    outcomes: dict[str, tuple[str, Any]] = {}
    ready = []
    for job in jobs:
        try:
            if job.needs is not None:
                _activate_checked_adapter(job, adapters[job.key], scorer, probes)
            ready.append(job)
        except Exception as exc:  # this adapter fails; the target's other models go on
            outcomes[job.key] = ("error", exc)
    groups = [ready] if scorer.mixed and len(ready) > 1 else [[job] for job in ready]
    for group in groups:
        label = group[0].label if len(group) == 1 else f"eval {len(group)} models on {target.name}"
        meter = StepMeter(progress, label, len(items) * len(group), unit="items")
        scorer.on_rows = meter.advance
        try:
            if len(group) == 1:
                scorer.use_adapter(group[0].needs)
                results = evaluate_models(target, items, scorer, None)
            else:
                results = evaluate_models(target, items, scorer, [job.needs for job in group])
        except Exception as exc:
            outcomes.update({job.key: ("error", exc) for job in group})
            continue
        finally:
            scorer.on_rows = None
            meter.close()
        example = prompts(target, items.head(1), scorer)[0] + str(items.iloc[0]["answer"])
        for job, result in zip(group, results):
            meta = {"template": target.template.model_dump(mode="json"), "example": example,
                    "target": job.settings.fingerprint, "adapter": job.needs, "dtype": job.settings.evaluation.dtype,
                    "device": str(scorer.device), "mixed_batch": len(group) > 1}
            outcomes[job.key] = ("ok", (cell_metrics(result, label_set(target, items)), result, meta))
    return [outcomes[job.key] for job in jobs]


def _activate_checked_adapter(job: Job, path: Path | None, scorer: Scorer, probes: list[str]) -> None:
    """Refuse an adapter made for another base, or one that does not change the model. The
    second check runs once per adapter and scorer: once loaded and seen to change outputs, an
    adapter is applied the same way on every target (on long-passage targets the probes took a
    fifth of a cell's time)."""
    if path is None:
        raise AdapterGuardError(f"{job.label}: adapter {job.needs[:12]} is not in the store; train it first.")
    meta = adapter_file_meta(path)
    if meta is None:
        raise AdapterGuardError(f"{job.label}: adapter {job.needs[:12]} has no readable {ADAPTER_META_FILE} (missing or "
                                "damaged); `traitlens doctor STUDY.yaml --repair` requeues it for retraining.")
    recorded, wanted = meta.get("base"), job.settings.base_identity
    if recorded != wanted:
        raise AdapterGuardError(
            f"{job.label}: adapter {job.needs[:12]} was trained on base {recorded}, but the study's "
            f"base is {wanted}; retrain it for this base.")
    checked = _CHECKED.setdefault(scorer, set())
    if job.needs in checked:
        scorer.use_adapter(job.needs, path)
        return
    requests = [ChoiceRequest(p, (" the", "\n")) for p in probes]
    scorer.use_adapter(None)
    base = scorer.loglikelihood(requests)
    scorer.use_adapter(job.needs, path)
    adapted = scorer.loglikelihood(requests)
    if not all(math.isfinite(v) for y in adapted for v in y.logprobs):
        raise AdapterGuardError(
            f"{job.label}: adapter {job.needs[:12]} gives non-finite log-probabilities on the probe inputs; its "
            "weights are damaged (NaN or infinite). Delete it with `traitlens doctor --repair` and retrain.")
    change = max(abs(a - b) for x, y in zip(base, adapted) for a, b in zip(x.logprobs, y.logprobs))
    if change < 1e-6:
        raise AdapterGuardError(
            f"{job.label}: adapter {job.needs[:12]} leaves the model's outputs unchanged on "
            f"{len(probes)} probe inputs (max log-prob change {change:.1e}); its weights are "
            "probably zero or were not applied. Not reporting base scores as adapter scores.")
    checked.add(job.needs)
