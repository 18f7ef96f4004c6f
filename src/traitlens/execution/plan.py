"""A study's jobs: one training job per (source, seed), one evaluation per (model, target).

Each job's key is the content hash of everything that can change its result, so the plan of a
finished study finds every job in the store, and a changed setting re-plans only what it touches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from traitlens.config.jobs import EvalSettings, Job, Plan, TrainSettings
from traitlens.config.schema import BASE, Study
from traitlens.data.fingerprint import fingerprint
from traitlens.errors import ConfigError, TraitlensError
from traitlens.evaluate import SCORING_CODE_VERSION
from traitlens.models.identity import base_identity
from traitlens.store.keys import content_key
from traitlens.train import TRAIN_CODE_VERSION

if TYPE_CHECKING:
    from traitlens.models.device import Hardware, Placement


# Kinds of work that run where the executor puts their jobs; "features" and "probe" run in this process.
JOB_KINDS = ("train", "eval")


def study_placements(study: Study, hardware: Hardware | dict[str, Hardware] | None = None) -> dict[str, Placement]:
    """Where and how each kind of work of `study` runs (`models.device.Placement`): training and
    evaluation where the executor puts their jobs, the datasets' features (the base scored as
    evaluation scores it) and the gradient probe (float32: gradients are compared) in this
    process. Each dtype is resolved for the hardware its own kind runs on (`auto` -> bfloat16
    where it is native, else float32): training on a GPU and evaluation on a CPU get different
    answers. `hardware`: one for every kind, or some per kind; the rest probed (`study_hardware`).
    Keys are computed from the result, so a cell or adapter is only reused in its precision."""
    from traitlens.models.device import Placement, job_device, resolve_dtype

    execution = study.execution
    threads = max(1, int(execution.cpus_per_job)) if execution.executor == "ray" else None
    asked = {"train": ("training.dtype", study.training.dtype), "eval": ("evaluation.dtype", study.evaluation.dtype),
             "features": ("evaluation.dtype", study.evaluation.dtype), "probe": ("", "float32")}
    placements = {}
    for kind, (field, dtype) in asked.items():
        device = job_device(execution, kind)
        # Probed where the dtype depends on it, or a GPU is named (a missing one fails here, before any job).
        if dtype != "float32" or device not in ("auto", "cpu"):
            given = hardware.get(kind) if isinstance(hardware, dict) else hardware
            dtype = resolve_dtype(dtype, given or study_hardware(study, kind), field)
        placements[kind] = Placement(kind, device, dtype, threads if kind in JOB_KINDS else None,
                                     deterministic=kind in ("train", "probe"))
    return placements


def study_hardware(study: Study, kind: str = "train") -> Hardware:
    """The hardware work of `kind` will run on: this machine's, or, for jobs on a Ray cluster
    that this process joins, a worker's as probed with that kind's resources (a task holding no
    GPU runs on the CPU, `models.device.job_device`)."""
    from traitlens.models.device import job_device, local_hardware

    execution = study.execution
    device = job_device(execution, kind)
    if kind in JOB_KINDS and execution.executor == "ray" and execution.address is not None and device != "cpu":
        from traitlens.execution.distributed import cluster_hardware

        return cluster_hardware(study, kind)
    return local_hardware(device)


def plan_study(study: Study, hardware: Hardware | dict[str, Hardware] | None = None) -> Plan:
    """Every job of `study`, keyed. `hardware` (default: probed, see `study_hardware`; or some
    per kind of work) resolves `dtype: auto`; the plan's study carries the resolved dtypes that
    its jobs run with, and each job the placement of its kind (`study_placements`)."""
    placements = study_placements(study, hardware)
    study = study.model_copy(update={
        "training": study.training.model_copy(update={"dtype": placements["train"].dtype}),
        "evaluation": study.evaluation.model_copy(update={"dtype": placements["eval"].dtype})})
    base = base_identity(study.base)
    sources, targets, problems = {}, {}, []
    for section, specs, out in (("sources", study.sources, sources), ("targets", study.targets, targets)):
        for index, spec in enumerate(specs):
            try:
                out[spec.name] = fingerprint(spec, f"{section}[{index}] ({spec.name})")
            except TraitlensError as exc:
                problems.append(str(exc))
    if problems:
        raise ConfigError(study.name, problems)

    lora = study.lora.model_dump(mode="json")
    several_seeds = len(study.training.seeds) > 1
    jobs: list[Job] = []
    models: list[tuple[str, str | None]] = [(BASE, None)]
    for source in study.sources:
        for seed in study.training.seeds:
            settings = TrainSettings(source, seed, study.base, base, sources[source.name], study.lora,
                                     study.training, placements["train"])
            spec = {"base": base, "source": sources[source.name], "lora": lora,
                    "training": settings.result_training, "code": TRAIN_CODE_VERSION}
            model = f"{source.name}/s{seed}" if several_seeds else source.name
            job = Job("train", content_key("train", spec), model, spec, settings, source=source.name, seed=seed)
            jobs.append(job)
            models.append((model, job.key))

    for model, adapter_key in models:
        for target in study.targets:
            spec = {"base": base, "adapter": adapter_key, "target": targets[target.name],
                    "limit": target.limit or study.evaluation.limit,
                    "dtype": study.evaluation.dtype, "seed": study.evaluation.seed,
                    "code": SCORING_CODE_VERSION}
            settings = EvalSettings(target, spec["limit"], study.base, base, targets[target.name], study.evaluation,
                                    placements["eval"])
            jobs.append(Job("eval", content_key("eval", spec), model, spec, settings,
                            target=target.name, needs=adapter_key))
    return Plan(study, jobs, placements)
