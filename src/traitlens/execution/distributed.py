"""The Ray executor: training and evaluation run as Ray tasks; only the driver writes the store.

Adapters travel as file bytes through Ray's object store, so workers need no shared disk. Each
model's evaluations run as one task, so a worker loads the base and the adapter once for all
targets. As soon as an adapter is trained its evaluation task is submitted, while other
adapters are still training.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from traitlens.config.jobs import EvalSettings
from traitlens.config.schema import Study
from traitlens.execution.local import RunSummary, default_scorer, pending_jobs
from traitlens.config.jobs import Job, Plan
from traitlens.models.device import Hardware
from traitlens.progress import JobProgress
from traitlens.models.scorer import Scorer
from traitlens.store.db import DamagedArtifactError, Store


def _read_folder(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _write_folder(files: dict[str, bytes], folder: Path) -> Path:
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def _ray_assignment() -> dict[str, Any]:
    """The GPUs Ray assigned this task, recorded with each result. Ray also sets
    CUDA_VISIBLE_DEVICES to them, so the job's `cuda:0` is the first of them."""
    import os

    import ray

    return {"ray_gpus": [str(gpu) for gpu in ray.get_gpu_ids()], "node": socket.gethostname(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _connect(execution) -> bool:
    """Join or start the cluster unless this process already has; whether it started it."""
    import ray

    if ray.is_initialized():
        return False
    # `address` None starts a private local cluster; "auto" or "ray://..." joins one.
    ray.init(address=execution.address, include_dashboard=False, log_to_driver=False,
             **({"num_cpus": None, "_node_ip_address": "127.0.0.1"} if execution.address is None else {}))
    return True


def _check_gpus(execution, cluster_gpus: float) -> None:
    """Ray waits forever for a task whose GPUs no node has: say so instead."""
    from traitlens.errors import TraitlensError

    for field in ("gpus_per_train_job", "gpus_per_eval_job"):
        wanted = getattr(execution, field)
        if wanted > cluster_gpus:
            raise TraitlensError(
                f"execution.{field}: {wanted:g}, but the Ray cluster has {cluster_gpus:g} GPU(s); start its "
                f"nodes with their GPUs (`ray start --num-gpus N`) or lower {field} (0 runs on CPUs).")


def _probe(device: str) -> Hardware:
    from traitlens.models.device import local_hardware

    return local_hardware(device)


def cluster_hardware(study: Study, kind: str = "train") -> Hardware:
    """The hardware a job of `kind` gets on the cluster: probed by a task holding that kind's
    resources, so `dtype: auto` resolves for the workers' devices, not the driver's. A
    connection opened only to probe is closed again."""
    import ray

    execution = study.execution
    opened = _connect(execution)
    try:
        probe = ray.remote(num_cpus=execution.cpus_per_job,
                           num_gpus=getattr(execution, f"gpus_per_{kind}_job"))(_probe)
        return ray.get(probe.remote(execution.device))
    finally:
        if opened:
            ray.shutdown()


def _train_task(job: Job, table: pd.DataFrame, checkpoints: str) -> tuple[dict, dict[str, bytes]]:
    from traitlens.train.loop import train_files

    with tempfile.TemporaryDirectory() as scratch, tempfile.TemporaryDirectory() as local:
        meta = train_files(job, table, Path(scratch), checkpoint_folder(checkpoints, Path(local)))
        return {**meta, **_ray_assignment()}, _read_folder(Path(scratch))


def checkpoint_folder(checkpoints: str, local: Path) -> Path:
    """Where a training task checkpoints: the store's folder where this node sees the store
    (its artifacts folder exists: the driver's node, or a shared disk), so a retried task
    resumes; else `local`, on this node's disk, and a retried task starts over. The driver's
    path on a node without the store would be created there, or fail."""
    folder = Path(checkpoints)
    return folder if folder.parents[1].is_dir() else local / folder.name


def _eval_task(jobs: list[Job], tables: dict[str, pd.DataFrame], adapter: dict[str, bytes] | None,
               make_scorer: Callable[[EvalSettings], Scorer]) -> list[tuple[str, Any]]:
    """One model on its targets; per job ("ok", (metrics, items, meta)) or ("error", message)."""
    from traitlens.evaluate.cell import score_cell

    out = []
    with jobs[0].settings.placement.running(), tempfile.TemporaryDirectory() as scratch:
        scorer = make_scorer(jobs[0].settings)
        path = _write_folder(adapter, Path(scratch)) if adapter is not None else None
        for job in jobs:
            try:
                metrics, items, meta = score_cell(job, scorer, tables[job.target], path)
                out.append(("ok", (metrics, items, {**meta, **_ray_assignment()})))
            except Exception as exc:  # one failing target must not lose the model's other cells
                out.append(("error", f"{type(exc).__name__}: {exc}"))
        del scorer  # before `running` gives the device's memory back
    return out


def run_plan_ray(plan: Plan, store: Store, sources: dict[str, pd.DataFrame], targets: dict[str, pd.DataFrame],
                 console: Console, make_scorer: Callable[[EvalSettings], Scorer] = default_scorer,
                 only: Callable[[Job], bool] = lambda job: True) -> RunSummary:
    import ray

    execution = plan.study.execution
    summary, states, todo = pending_jobs(plan, store, only)
    if not todo:
        return summary
    store.clean_scratch()
    started_here = _connect(execution)
    _check_gpus(execution, ray.cluster_resources().get("GPU", 0))
    worker = f"ray@{socket.gethostname()}"
    train = ray.remote(num_cpus=execution.cpus_per_job, num_gpus=execution.gpus_per_train_job)(_train_task)
    evaluate = ray.remote(num_cpus=execution.cpus_per_job, num_gpus=execution.gpus_per_eval_job)(_eval_task)
    evaluations: dict[str | None, list[Job]] = {}
    for job in (j for j in todo if j.kind == "eval"):
        evaluations.setdefault(job.needs, []).append(job)

    pending: dict[Any, tuple[str, Any]] = {}

    def submit_evaluations(adapter_key: str | None) -> None:
        jobs = evaluations.pop(adapter_key, [])
        if not jobs:
            return
        files = None
        if adapter_key is not None:
            if store.adapter_path(adapter_key) is None:  # its training failed: these cells wait for the next run
                summary.blocked += len(jobs)
                return
            try:
                files = _read_folder(store.verified_adapter(adapter_key))
            except DamagedArtifactError as exc:  # requeued: these cells wait for the retrained adapter
                summary.failed.append((f"adapter {adapter_key[:12]}", str(exc)))
                summary.blocked += len(jobs)
                return
        for job in jobs:
            store.start_job(job.key, "eval", job.label, job.spec, worker)
        ref = evaluate.remote(jobs, {j.target: targets[j.target] for j in jobs}, files, make_scorer)
        pending[ref] = ("eval", jobs)

    for job in (j for j in todo if j.kind == "train"):
        store.start_job(job.key, "train", job.label, job.spec, worker)
        checkpoints = str(store.artifacts / "checkpoints" / job.key)
        pending[train.remote(job, sources[job.source], checkpoints)] = ("train", job)
    for adapter_key in list(evaluations):
        if adapter_key is None or states.get(adapter_key) == "done":
            submit_evaluations(adapter_key)

    try:
        _drain(pending, store, summary, console, len(todo), submit_evaluations)
        summary.blocked += sum(len(jobs) for jobs in evaluations.values())
    finally:
        if started_here:
            ray.shutdown()
    return summary


def _drain(pending: dict[Any, tuple[str, Any]], store: Store, summary: RunSummary, console: Console, total: int,
           submit_evaluations: Callable[[str | None], None]) -> None:
    """Record each task's result as it finishes; a finished adapter submits its evaluations."""
    import ray

    resources = ray.cluster_resources()
    where = f"{resources.get('CPU', 0):.0f} CPUs" + (f", {resources['GPU']:.0f} GPUs" if resources.get("GPU") else "")
    with JobProgress(console, total, f"ray: all jobs on {where}") as progress:
        while pending:
            progress.status = f"ray: {len(pending)} tasks submitted or running, {progress.finished} jobs finished"
            [ready], _ = ray.wait(list(pending), num_returns=1)
            kind, what = pending.pop(ready)
            if kind == "train":
                error = _finish_training(ready, what, store, summary)
                submit_evaluations(what.key)
                progress.done(what.label, _seconds(store, [what]), error)
            else:
                errors = _finish_evaluations(ready, what, store, summary)
                progress.done(f"{len(what)} evaluations of {what[0].model}", _seconds(store, what),
                              "; ".join(errors) or None, count=len(what))


def _seconds(store: Store, jobs: list[Job]) -> float:
    """Wall time of finished jobs as the store recorded it (from submission to result)."""
    return sum(record.wall_s or 0 for record in store.jobs([job.key for job in jobs]).values())


def _finish_training(ref: Any, job: Job, store: Store, summary: RunSummary) -> str | None:
    """Store the trained adapter; the error, if training failed."""
    import ray

    try:
        meta, files = ray.get(ref)
    except Exception as exc:  # the task's error, re-raised by Ray
        store.fail_job(job.key, f"{type(exc).__name__}: {exc}")
        first_line = str(exc).splitlines()[0]
        summary.failed.append((job.label, first_line))
        return first_line
    scratch = _write_folder(files, store.scratch_dir(job.key))
    store.put_adapter(job.key, job.source, job.seed, scratch, meta)
    summary.ran += 1
    return None


def _finish_evaluations(ref: Any, jobs: list[Job], store: Store, summary: RunSummary) -> list[str]:
    """Store each evaluation's cell; the errors of those that failed."""
    import ray

    try:
        outcomes = ray.get(ref)
    except Exception as exc:  # the whole task died (e.g. the worker was lost)
        outcomes = [("error", f"{type(exc).__name__}: {exc}")] * len(jobs)
    for job, (status, value) in zip(jobs, outcomes):
        if status == "ok":
            store.put_cell(job.key, job.model, job.target, *value)
            summary.ran += 1
        else:
            store.fail_job(job.key, value)
            summary.failed.append((job.label, value))
    return [value for status, value in outcomes if status != "ok"]
