"""The typed settings one job runs with, cut from the study by the planner.

Workers (local or on a Ray node) get these and nothing else of the study: a training job its
source, base, LoRA and training settings; an evaluation job its target, base and evaluation
settings. Precision is already resolved (`dtype: auto` never reaches a worker), and the base's
identity and the dataset's fingerprint are the ones in the job's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from traitlens.config.schema import BaseModelSpec, Evaluation, Lora, Source, Target, Training
from traitlens.train import KEYED_WHEN_SET, NOT_RESULT_TRAINING


@dataclass(frozen=True)
class TrainSettings:
    source: Source
    seed: int
    base: BaseModelSpec
    base_identity: dict[str, Any]
    fingerprint: dict[str, Any]  # the source's, as in the key
    lora: Lora
    training: Training  # dtype resolved for the hardware
    device: str  # execution.device
    threads: int  # CPU threads of a Ray task (execution.cpus_per_job), so tasks don't oversubscribe a node

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
    device: str
    threads: int
