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
    from traitlens.models.device import Hardware


def resolve_precision(study: Study, hardware: Hardware | dict[str, Hardware] | None = None) -> Study:
    """`study` with `training.dtype` and `evaluation.dtype` resolved, each for the hardware its
    own jobs run on (`auto` -> bfloat16 where it is native, else float32): training on a GPU and
    evaluation on a CPU get different answers. `hardware`: one for both kinds, or per kind
    ("train", "eval"); default: probed (`study_hardware`). Keys are computed from the result, so
    a cell or adapter is only ever reused in the precision it was made in."""
    from traitlens.models.device import job_device, resolve_dtype

    settings = {"train": ("training", study.training), "eval": ("evaluation", study.evaluation)}
    if all(section.dtype == "float32" for _, section in settings.values()) and study.execution.device in ("auto", "cpu"):
        return study  # nothing depends on the hardware, and no GPU was asked for: no need to probe

    update = {}
    for kind, (name, section) in settings.items():
        if isinstance(hardware, dict):
            found = hardware[kind]
        elif hardware is not None:
            found = hardware
        else:
            # Probed where the dtype depends on it, or a GPU is named (a missing one fails here, before any job).
            probe = section.dtype != "float32" or job_device(study.execution, kind) not in ("auto", "cpu")
            found = study_hardware(study, kind) if probe else None
        update[name] = section if found is None else section.model_copy(
            update={"dtype": resolve_dtype(section.dtype, found, f"{name}.dtype")})
    return study.model_copy(update=update)


def study_hardware(study: Study, kind: str = "train") -> Hardware:
    """The hardware a job of `kind` will run on: this machine's, or, on a Ray cluster that this
    process joins, a worker's as probed with that kind's resources (a task holding no GPU runs
    on the CPU, `models.device.job_device`)."""
    from traitlens.models.device import job_device, local_hardware

    execution = study.execution
    device = job_device(execution, kind)
    if execution.executor == "ray" and execution.address is not None and device != "cpu":
        from traitlens.execution.distributed import cluster_hardware

        return cluster_hardware(study, kind)
    return local_hardware(device)


def plan_study(study: Study, hardware: Hardware | dict[str, Hardware] | None = None) -> Plan:
    """Every job of `study`, keyed. `hardware` (default: probed, see `study_hardware`; or one per
    job kind) resolves `dtype: auto`; the plan's study carries the resolved dtypes that its jobs
    run with, and each job the device setting of its kind (`models.device.job_device`)."""
    from traitlens.models.device import job_device

    study = resolve_precision(study, hardware)
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
    threads = max(1, int(study.execution.cpus_per_job))
    jobs: list[Job] = []
    models: list[tuple[str, str | None]] = [(BASE, None)]
    for source in study.sources:
        for seed in study.training.seeds:
            settings = TrainSettings(source, seed, study.base, base, sources[source.name], study.lora,
                                     study.training, job_device(study.execution, "train"), threads)
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
                                    job_device(study.execution, "eval"), threads)
            jobs.append(Job("eval", content_key("eval", spec), model, spec, settings,
                            target=target.name, needs=adapter_key))
    return Plan(study, jobs)
