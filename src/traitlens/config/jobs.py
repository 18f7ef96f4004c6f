"""Jobs and the typed settings each runs with, cut from the study by the planner
(`execution.plan.plan_study`). They live here, below every layer that runs or reads jobs.

Workers (local or on a Ray node) get these and nothing else of the study: a training job its
source, base, LoRA and training settings; an evaluation job its target, base and evaluation
settings. Precision is already resolved (`dtype: auto` never reaches a worker), and the base's
identity and the dataset's fingerprint are the ones in the job's key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from traitlens.config.schema import BaseModelSpec, Evaluation, Lora, Source, Study, Target, Training

if TYPE_CHECKING:
    from traitlens.models.device import Placement


# Training settings that change how a run proceeds but not the adapter it ends with: left out of
# the key (and of the settings recorded with the adapter).
NOT_RESULT_TRAINING = {"seeds", "checkpoint_every", "gradient_checkpointing", "packing", "pass_tokens"}

# Settings added after stores existed: in a key only when set away from their default, so
# adapters trained before them keep their keys (their value then was the default).
KEYED_WHEN_SET = {"max_tokens": None, "validation": None, "seed_streams": "shared"}


@dataclass(frozen=True)
class TrainSettings:
    source: Source
    seed: int
    base: BaseModelSpec
    base_identity: dict[str, Any]
    fingerprint: dict[str, Any]  # the source's, as in the key
    lora: Lora
    training: Training  # dtype resolved for the hardware
    placement: Placement  # where and how training runs (device, that dtype, threads, determinism)

    @property
    def result_training(self) -> dict[str, Any]:
        """The training settings that change the adapter, with this job's seed: what its key
        hashes and what is recorded beside its weights."""
        settings = self.training.model_dump(mode="json", exclude=NOT_RESULT_TRAINING)
        return {k: v for k, v in settings.items()
                if not (k in KEYED_WHEN_SET and v == KEYED_WHEN_SET[k])} | {"seed": self.seed}


@dataclass(frozen=True)
class EvalSettings:
    target: Target
    limit: int | None  # items scored (the target's limit, else evaluation.limit)
    base: BaseModelSpec
    base_identity: dict[str, Any]
    fingerprint: dict[str, Any]  # the target's, as in the key
    evaluation: Evaluation  # dtype resolved for the hardware
    placement: Placement  # where and how scoring runs


@dataclass(frozen=True)
class Job:
    kind: Literal["train", "eval"]
    key: str
    model: str  # "base", or the adapter's name: the source, plus "/s<seed>" with several seeds
    spec: dict[str, Any] = field(repr=False)  # what the key hashes (recorded with the job in the store)
    settings: TrainSettings | EvalSettings = field(repr=False)  # what the job runs with
    source: str | None = None
    seed: int | None = None
    target: str | None = None
    needs: str | None = None  # the training job an evaluation waits for

    @property
    def label(self) -> str:
        if self.kind == "train":
            return f"train {self.source} (seed {self.seed})"
        return f"eval {self.model} on {self.target}"


@dataclass(frozen=True)
class Plan:
    study: Study  # dtypes resolved
    jobs: list[Job]
    # Where and how each kind of work runs: "train", "eval" (as their jobs' settings carry),
    # "features" and "probe" (the driver, this process).
    placements: dict[str, Placement] = field(repr=False)

    @property
    def train_jobs(self) -> list[Job]:
        return [job for job in self.jobs if job.kind == "train"]

    @property
    def eval_jobs(self) -> list[Job]:
        return [job for job in self.jobs if job.kind == "eval"]

    def states(self, store) -> dict[str, str]:
        """Each job's state in `store` (a `store.Store`): done, failed, running, or new."""
        records = store.jobs(job.key for job in self.jobs)
        return {job.key: records[job.key].state if job.key in records else "new" for job in self.jobs}
