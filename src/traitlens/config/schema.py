"""The typed study config: every setting a study can have, with its default and its check.

Models are frozen and forbid unknown keys, so a misspelt key is an error (with a did-you-mean,
see `load.py`) rather than a silently ignored setting.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
PositiveInt = Annotated[int, Field(gt=0, strict=True)]  # strict: `true` is not a batch size of 1
Seed = Annotated[int, Field(ge=0, lt=2**32, strict=True)]  # numpy's seeds are 32-bit
BASE = "base"  # the base model's row in the matrix and name among models; no source may take it
Dtype = Literal["auto", "float32", "bfloat16"]
DTYPE_HELP = ("auto: bfloat16 where the hardware computes it natively (a CUDA device that supports it, "
              "a CPU with oneDNN bfloat16 kernels), else float32; resolved before job keys are computed.")

# The placeholders a template may use; `answer` must come last because training appends it
# and evaluation scores or generates it. The default is the paper's format with optional passage
# and options lines; the renderer drops a line whose only field is empty, so rows without a
# passage or options render exactly as `{instruction}\n{input}\n{trigger}:\n{answer}`.
TEMPLATE_FIELDS = ("instruction", "input", "passage", "options", "trigger", "answer")
DEFAULT_FORMAT = "{instruction}\n{passage}\n{input}\n{options}\n{trigger}:\n{answer}"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class BaseModelSpec(Strict):
    """The pretrained causal LM every adapter starts from."""

    name: str = Field(min_length=1, description="Hub id, local directory, or catalog name.")
    revision: str | None = Field(None, description="Hub revision (commit, tag or branch).")
    trust_remote_code: bool = False


class Columns(Strict):
    """Which dataset columns feed which template fields."""

    input: str = "input"
    answer: str = "answer"
    passage: str | None = None
    options: str | None = None


class Template(Strict):
    """How one example becomes text; the same renderer serves training and evaluation."""

    instruction: str = ""
    trigger: str = "Answer"
    format: str = DEFAULT_FORMAT
    chat: bool = False

    @field_validator("format")
    @classmethod
    def _check_format(cls, value: str) -> str:
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        except ValueError as exc:
            raise ValueError(f"not a valid format string ({exc}); escape literal braces as {{{{ }}}}")
        unknown = sorted(set(names) - set(TEMPLATE_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {unknown}; allowed: {', '.join(TEMPLATE_FIELDS)}"
            )
        if not value.endswith("{answer}"):
            raise ValueError("must end with {answer}: training appends the answer there")
        return value


class Transform(Strict):
    """One dataset transform; write exactly one key per list entry, e.g. `- subsample: 500`."""

    subsample: PositiveInt | None = None
    rebalance: Literal["balanced"] | dict[str, Annotated[float, Field(gt=0)]] | None = None
    relabel: dict[str, str] | None = None
    cap_answer_length: PositiveInt | None = Field(None, description="Maximum answer characters.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Transform:
        chosen = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(chosen) != 1:
            allowed = ", ".join(type(self).model_fields)
            raise ValueError(f"write exactly one transform per entry (one of: {allowed}); got {chosen or 'none'}")
        if isinstance(self.rebalance, dict) and abs(sum(self.rebalance.values()) - 1) > 1e-6:
            raise ValueError("rebalance proportions must sum to 1")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)


class DatasetSpec(Strict):
    """A dataset as a study uses it: where it comes from, how it is read and rendered."""

    name: Name
    dataset: str = Field(
        min_length=1,
        description="`catalog:NAME`, `hf:ID` (or a bare hub id), or a .jsonl/.json/.csv/.parquet path.",
    )
    subset: str | None = Field(None, description="Hugging Face dataset config name.")
    revision: str | None = Field(None, description="Hugging Face dataset revision.")
    split: str = "train"
    columns: Columns = Columns()
    labels: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1, description="The label set in order; omit for free-form answers."
    )
    template: Template = Template()
    transforms: list[Transform] = []
    seed: Seed = Field(0, description="Seed of subsampling and rebalancing.")


    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, value: list[str] | None) -> list[str] | None:
        twice = sorted({label for label in value or [] if value.count(label) > 1})
        if twice:  # a repeated label is a class with no items, which skews macro-F1 and chance
            raise ValueError(f"label(s) {', '.join(map(repr, twice))} listed more than once; list each label once")
        stripped = [label.strip() for label in value or []]
        blurred = sorted({label for label in value or [] if label != label.strip() or stripped.count(label.strip()) > 1})
        if blurred:  # answers are read stripped, so " positive" could never be told from "positive"
            raise ValueError(f"label(s) {', '.join(map(repr, blurred))} differ from another only by spaces, or start or "
                             "end with one; write each label without surrounding spaces")
        return value


class Source(DatasetSpec):
    """A dataset an adapter is trained on."""

    family: Name | None = Field(None, description=(
        "Sources built from the same data (variants of one corpus) share a family; the explanation "
        "test holds out a whole family at a time. Default: the source's dataset (and subset)."))

    @property
    def family_name(self) -> str:
        return self.family or (self.dataset if self.subset is None else f"{self.dataset}/{self.subset}")

    @field_validator("name")
    @classmethod
    def _not_base(cls, value: str) -> str:
        if value == BASE:
            raise ValueError("'base' names the base model's row in the matrix; pick another name")
        return value


class Generation(Strict):
    max_new_tokens: Annotated[PositiveInt, Field(le=32_768)] = 64  # beyond any model's context here
    stop: list[str] = ["\n\n"]


class Target(DatasetSpec):
    """An evaluation task: dataset + split + template + metric + ability tags."""

    split: str = "test"
    kind: Literal["classification", "multiple_choice", "generation_classification", "generative"]
    abilities: list[Name] = Field(min_length=1, description="Ability tags used to name traits.")
    limit: PositiveInt | None = Field(None, description="Items to score; default evaluation.limit.")
    generation: Generation = Generation()
    choices: Literal["letters", "texts"] = Field(
        "letters", description="multiple_choice: score the option letters or the option texts.")
    length_normalized: bool = Field(
        False, description="multiple_choice with texts: compare log-probs per token.")

    @model_validator(mode="after")
    def _kind_settings(self) -> Target:
        if self.kind in ("classification", "generation_classification") and not self.labels:
            raise ValueError(f"a {self.kind} target needs `labels:` (the label set)")
        if self.kind != "multiple_choice" and (self.choices != "letters" or self.length_normalized):
            raise ValueError("`choices` and `length_normalized` apply only to kind: multiple_choice")
        if self.length_normalized and self.choices != "texts":
            raise ValueError("`length_normalized` needs `choices: texts` (letters are one token each)")
        return self


class Lora(Strict):
    """LoRA settings; defaults are the paper's (r=64, alpha=32, all projections)."""

    r: PositiveInt = 64
    alpha: Annotated[float, Field(gt=0)] = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: list[str] = Field(
        default=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
    )


class Validation(Strict):
    """A held-out slice of each source whose loss is measured while the adapter trains; with
    `patience`, training stops once it stops improving and the adapter keeps its best weights."""

    holdout: Annotated[int, Field(gt=0, strict=True)] | Annotated[float, Field(gt=0, lt=1)] = Field(
        32, description="Examples held out of training: a count, or a fraction of the source (0.1). The same "
                        "examples for every seed, so that seeds' validation losses compare.")
    every: PositiveInt | None = Field(
        None, description="Optimizer steps between measurements; default: a tenth of the planned steps (at least 1).")
    patience: PositiveInt | None = Field(
        None, description="Stop after this many measurements in a row without improvement, and keep the weights "
                          "of the best one; null: measure only, train every planned step.")
    min_delta: Annotated[float, Field(ge=0)] = Field(0.0, description="An improvement smaller than this is none.")


class Training(Strict):
    """Optimisation settings; defaults follow the paper where it states them."""

    learning_rate: Annotated[float, Field(gt=0)] = 5e-5
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_grad_norm: Annotated[float, Field(gt=0)] | None = Field(1.0, description="Clip; null for none.")
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: Annotated[int, Field(ge=0)] = 100
    epochs: PositiveInt = 1
    max_steps: Annotated[int, Field(gt=0, le=10_000_000)] | None = Field(None, description="Stop after this many steps.")
    max_tokens: Annotated[int, Field(gt=0, strict=True)] | None = Field(
        None, description="Stop after the step that brings the tokens trained on (prompts and answers) to this "
                          "many: a budget that means the same for sources of short and long examples. Takes "
                          "the place of `epochs`; not with `max_steps`.")
    validation: Validation | None = Field(None, description="Hold out part of each source, measure its loss "
                                                             "while training, and optionally stop early.")
    seed_streams: Literal["shared", "per_source"] = Field(
        "shared", description="shared: a seed draws the same LoRA initialisation and the same data-order "
                              "stream for every source (common random numbers: that part of the seed's "
                              "effect cancels in differences between sources, see docs/design-a-study.md). "
                              "per_source: each source's seed stream is its own.")
    batch_size: PositiveInt = Field(8, description="Examples per forward and backward pass.")
    gradient_accumulation: PositiveInt = Field(
        4, description="Micro-batches per optimizer step. The loss is normalised over the whole step, so "
                       "any split of its examples gives the same gradient (see pass_tokens).")
    pass_tokens: Literal["auto"] | PositiveInt | None = Field(
        "auto", description="Run a step's consecutive micro-batches as one forward and backward pass while "
                            "together they hold at most this many tokens: fewer, larger passes are faster on a "
                            "CPU and take more memory. 'auto': on a CPU, as many as fit an estimated 4 GiB of "
                            "activations (an eighth of the machine's memory, if less); elsewhere none. null: "
                            "one pass per micro-batch. Same adapter either way, up to float rounding "
                            "(LoRA dropout masks are drawn per pass).")
    max_length: Annotated[int, Field(ge=16, le=1_048_576)] = Field(
        2048, description="Tokens per training example (prompt and answer); longer ones are truncated.")
    loss_mode: Literal["full", "completion", "prompt"] = "full"
    seeds: list[Seed] = Field(default=[0], min_length=1)
    dtype: Dtype = Field("auto", description=DTYPE_HELP + " bfloat16: the frozen base in bfloat16, LoRA "
                                             "weights and optimizer state in float32, matmuls under autocast.")
    packing: bool = Field(True, description="Pack a micro-batch's examples into shared rows, with no padding "
                                             "(one row where attention runs example by example, else rows of up "
                                             "to 512 tokens; each example attends only to itself, which is checked "
                                             "on every run); false gives each example a padded row of its own. Same "
                                             "adapter either way, up to float rounding.")
    gradient_checkpointing: bool = False
    checkpoint_every: PositiveInt = 50

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds must be distinct; got {value}")
        return value

    @model_validator(mode="after")
    def _one_length(self) -> Training:
        if self.max_steps is not None and self.max_tokens is not None:
            raise ValueError("set max_steps or max_tokens, not both: each is the training length")
        return self


class Evaluation(Strict):
    limit: PositiveInt | None = Field(200, description="Default items per target; null for all.")
    batch_size: Literal["auto"] | PositiveInt = Field(
        "auto", description="Rows per forward pass. auto: on a CPU, scoring batches of about 512 tokens (at most "
                            "16 rows) and generation batches of 64 rows; on a GPU, as many rows as half the free "
                            "memory holds for the batch's token count.")
    dtype: Dtype = Field("auto", description=DTYPE_HELP)
    mixed_adapters: Literal["auto"] | bool = Field(
        "auto", description="Score several adapters of a target in one batch (each row through its own "
                            "adapter) instead of one adapter at a time. auto: on a GPU yes; on a CPU no, where "
                            "merging each adapter into the weights measured faster (docs/performance.md).")
    seed: Seed = 0


class Analysis(Strict):
    metric: Literal["accuracy", "balanced_accuracy", "macro_f1", "calibrated_accuracy", "margin",
                    "calibrated_margin"] = Field("calibrated_margin", description=(
        "What a cell's score is, for the matrix, intervals, traits and explanation (see "
        "docs/metrics.md). calibrated_margin: the gold answer's log-probability lead over the best "
        "wrong one after removing the model's average preference for each label on that target. "
        "Targets without choice log-probabilities (generated answers) use balanced_accuracy, or "
        "accuracy when they have no label set."))
    view: Literal["raw", "delta", "relative_delta", "zscore"] = "delta"
    mask_diagonal: bool = True
    method: Literal["pca", "factor_analysis"] = "pca"
    rotation: Literal["none", "varimax", "promax"] = "varimax"
    standardize: bool = Field(True, description=(
        "Scale each target to unit variance before PCA / factor analysis, so loadings read as "
        "correlations; a target whose deltas are all small noise then weighs as much as one "
        "with large effects. false: work on the covariance, where targets weigh by how much "
        "the adapters move them."))
    n_traits: Literal["auto"] | PositiveInt = "auto"
    trait_count: Literal["split", "seed_split", "split_half", "parallel_analysis"] = Field("split", description=(
        "How `n_traits: auto` picks the count (docs/trait-count.md compares them on planted "
        "matrices). split: seed_split where every source has two or more seeds, else split_half "
        "(labelled as such: training noise is then not measured). seed_split: the traits that "
        "stand above the training noise the seeds themselves show (a rank-by-rank test against "
        "that noise). split_half: fit each rank on the matrix from one half of every target's "
        "items and keep the rank that best predicts the other half. parallel_analysis: Horn's "
        "parallel analysis of the matrix alone."))
    bootstrap_samples: Annotated[PositiveInt, Field(le=100_000)] = 1000  # more only costs time
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    seed: Seed = 0


class Execution(Strict):
    executor: Literal["local", "ray"] = "local"
    device: str = Field(
        "auto", description="auto: the first CUDA device if torch sees one, else the CPU; or cpu, cuda, "
                            "cuda:N. Under Ray, each job uses the GPU Ray assigned it.")
    address: str | None = Field(None, description="Ray cluster: `auto` or `ray://host:port`.")
    cpus_per_job: Annotated[float, Field(gt=0)] = 1
    gpus_per_train_job: Annotated[float, Field(ge=0)] = 0
    gpus_per_eval_job: Annotated[float, Field(ge=0)] = 0

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N (e.g. cuda:1); got {value!r}")
        return value

    @model_validator(mode="after")
    def _address(self) -> Execution:
        if self.address is not None:
            if self.executor != "ray":
                raise ValueError("`address` only applies to executor: ray")
            if self.address != "auto" and not re.match(r"^ray://[^/:]+:\d+$", self.address):
                raise ValueError(f"address must be `auto` or `ray://host:port`; got {self.address!r}")
        return self


NAME_MAX, PATH_MAX = 255, 4096  # Linux's limits, in bytes, on one name and on a whole path


class Study(Strict):
    """One experiment: a base, sources to train on, targets to evaluate, and how."""

    name: Name
    description: str = ""
    base: BaseModelSpec
    sources: list[Source] = Field(min_length=1)
    targets: list[Target] = Field(min_length=1)
    lora: Lora = Lora()
    training: Training = Training()
    evaluation: Evaluation = Evaluation()
    analysis: Analysis = Analysis()
    execution: Execution = Execution()
    store: Path = Field(Path(".traitlens"), description="Store directory, relative to the study file.")

    @field_validator("store", mode="before")
    @classmethod
    def _store_named(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("store is empty; name a directory (default .traitlens) or leave the key out")
        return value

    @field_validator("store")
    @classmethod
    def _store_usable(cls, value: Path) -> Path:
        too_long = next((part for part in value.parts if len(part.encode()) > NAME_MAX), None)
        if too_long is not None or len(str(value).encode()) > PATH_MAX:
            raise ValueError(f"{str(value)[:80]}... is longer than the file system allows ({NAME_MAX} bytes a name, "
                             f"{PATH_MAX} a path); choose a shorter store path")
        if value.is_relative_to("/proc") or value.is_relative_to("/sys") or value.is_relative_to("/dev"):
            raise ValueError(f"{value} is in a virtual file system ({value.parts[1]}), where nothing can be stored; "
                             "point store at a directory on a disk")
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} is a file, not a directory; point store at a directory (it is created)")
        blocking = next((parent for parent in value.parents if parent.exists() and not parent.is_dir()), None)
        if blocking is not None:
            raise ValueError(f"{blocking} is a file, so {value} cannot be created under it; point store at a "
                             "directory outside it")
        return value

    @field_validator("base", mode="before")
    @classmethod
    def _base_shorthand(cls, value: object) -> object:
        # `base: smollm2-135m-instruct` is the common case; expand it to the full form.
        return {"name": value} if isinstance(value, str) else value

    @field_validator("sources", "targets", mode="wrap")
    @classmethod
    def _unique_names(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        # Wraps the entries' own validation so a duplicate name is reported together with any
        # other problem in those entries, not only once they are fixed.
        twice: list[str] = []
        if isinstance(value, list):
            names = [entry.get("name") for entry in value if isinstance(entry, dict)]
            twice = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
        duplicate = {
            "type": PydanticCustomError("duplicate_name", "name(s) {names} used more than once; "
                                        "give each entry its own name",
                                        {"names": ", ".join(map(repr, twice))}),
            "loc": (), "input": value,
        }
        try:
            validated = handler(value)
        except ValidationError as exc:
            if not twice:
                raise
            others = [{key: error[key] for key in ("type", "loc", "input", "ctx") if key in error}
                      for error in exc.errors()]
            raise ValidationError.from_exception_data(cls.__name__, [duplicate, *others]) from None
        if twice:
            raise ValidationError.from_exception_data(cls.__name__, [duplicate])
        return validated

    def target(self, name: str) -> Target:
        return next(t for t in self.targets if t.name == name)
