"""The training loop, written out in one place (no Trainer hiding it), PEFT for the LoRA layers.

Reproducible and resumable: the data order of every step is a pure function of (seed, step),
a checkpoint holds the LoRA weights, optimizer, scheduler and RNG state, and training runs with
torch's deterministic algorithms (cuBLAS with a fixed workspace on a GPU), so a run killed after
a checkpoint resumes there and ends with the same adapter as an uninterrupted run.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import sys
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from traitlens.config.schema import Training
from traitlens.data.template import render
from traitlens.errors import CheckpointWarning, TraitlensError
from traitlens.faults import crash_point
from traitlens.progress import StepMeter
from traitlens.store.db import ADAPTER_META_FILE, Store, file_digests
from traitlens.train.attention import attend_by_example, choose_kernel
from traitlens.train.encode import IGNORE, Encoded, encode_table
from traitlens.train.lora_step import fuse_lora_layers

if TYPE_CHECKING:
    from traitlens.config.jobs import Job
    from traitlens.progress import JobProgress

class TrainingDivergedError(TraitlensError):
    """A non-finite loss: the adapter's weights are garbage, so the job fails instead."""


DIVERGED = ("training diverged. Lower training.learning_rate (now {rate:g}) or set training.max_grad_norm, "
            "then rerun.")


# Trainer state without pickle (a store can be shared or downloaded, and unpickling a planted
# file runs its code): tensors (optimizer moments, RNG states) in safetensors, the rest in JSON.
STATE_TENSORS, STATE_JSON = "trainer_state.safetensors", "trainer_state.json"
LEGACY_STATE = "trainer_state.pt"  # written by traitlens before 0.2; never loaded
CHECKSUMS = "checksums.json"  # SHA-256 of every other file of a checkpoint, checked before resuming
# Packed rows hold examples up to this many tokens in all where attention spans whole rows (see
# `_pack`); where it runs example by example (`train/attention.py`), a micro-batch is one row.
PACK_WIDTH = 512
ONE_ROW = sys.maxsize
# Activations a pass may hold under `pass_tokens: auto` (the placement's memory budget if less).
AUTO_PASS_BYTES = 4 * 2**30
# PEFT still reads a transformers property that warns on every step; nothing for a user to do.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@dataclass(frozen=True)
class Schedule:
    """Which examples every optimizer step uses: shuffled per epoch by (seed, epoch)."""

    examples: int
    batch_size: int
    accumulation: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.examples / (self.batch_size * self.accumulation))

    def micro_batches(self, step: int) -> list[np.ndarray]:
        epoch, within = divmod(step, self.steps_per_epoch)
        order = _epoch_order(self.examples, self.seed, epoch)
        per_step = self.batch_size * self.accumulation
        chosen = order[within * per_step:(within + 1) * per_step]
        return [chosen[i:i + self.batch_size] for i in range(0, len(chosen), self.batch_size)]


@functools.lru_cache(maxsize=4)
def _epoch_order(examples: int, seed: int, epoch: int) -> np.ndarray:
    """An epoch's order, drawn once: every step of the epoch (and the cost counter and a token
    budget, which walk all steps) reads it rather than drawing the permutation again."""
    order = np.random.default_rng([seed, epoch]).permutation(examples)
    order.flags.writeable = False  # shared between callers
    return order


HOLDOUT_STREAM = 7919  # the validation holdout's draw: its own stream, the same for every seed


@dataclass(frozen=True)
class TrainingPlan:
    """One adapter's training, before it starts: the source's rows it trains on and those held out
    for validation, the order of its steps, how many it plans, and how often validation runs."""

    train_rows: np.ndarray
    holdout_rows: np.ndarray
    schedule: Schedule
    steps: int
    every: int | None  # steps between validation measurements; None: no validation

    def step_rows(self, step: int) -> list[np.ndarray]:
        """The source rows of each micro-batch of `step`."""
        return [self.train_rows[micro] for micro in self.schedule.micro_batches(step)]


def stream_seed(seed: int, source: str, streams: str) -> int:
    """The seed of an adapter's LoRA initialisation, dropout and data order: the study's seed
    itself when streams are shared across sources (common random numbers), else one drawn from
    (seed, source name) so that each source's stream is its own."""
    if streams == "shared":
        return seed
    return int(np.random.SeedSequence([seed, zlib.crc32(source.encode())]).generate_state(1)[0])


def plan_training(training: Training, lengths: list[int], seed: int, source: str) -> TrainingPlan:
    """The plan of one adapter from its examples' token `lengths`. The length is `max_steps`, else
    the steps whose examples bring the tokens to `max_tokens`, else `epochs` passes over the rows
    that train. Shared by the trainer and the cost counter (`forecast.cost`), so they agree."""
    n = len(lengths)
    holdout = np.array([], dtype=int)
    if training.validation is not None:
        wanted = training.validation.holdout
        count = wanted if isinstance(wanted, int) else max(1, round(wanted * n))
        if count >= n:
            raise TraitlensError(
                f"training.validation.holdout: {wanted} holds out {count} of the source's {n} examples and leaves "
                "none to train on; hold out fewer (a count, or a fraction such as 0.1).")
        holdout = np.sort(np.random.default_rng([HOLDOUT_STREAM, n]).permutation(n)[:count])
    train_rows = np.setdiff1d(np.arange(n), holdout)
    schedule = Schedule(len(train_rows), training.batch_size, training.gradient_accumulation,
                        stream_seed(seed, source, training.seed_streams))
    plan = TrainingPlan(train_rows, holdout, schedule, 0, None)
    if training.max_steps:
        steps = training.max_steps
    elif training.max_tokens:
        steps = tokens = 0
        while tokens < training.max_tokens:
            tokens += sum(lengths[i] for micro in plan.step_rows(steps) for i in micro)
            steps += 1
    else:
        steps = training.epochs * schedule.steps_per_epoch
    every = None if training.validation is None else training.validation.every or max(1, steps // 10)
    return TrainingPlan(train_rows, holdout, schedule, steps, every)


def train_adapter(job: Job, store: Store, table: pd.DataFrame,
                  progress: JobProgress | None = None, worker: str = "local") -> Path:
    """Train the adapter of `job` (resuming from its checkpoint if one exists) and register it."""
    existing = store.adapter_path(job.key)
    if existing is not None and store.jobs([job.key])[job.key].state == "done":
        return existing  # an identical request is never trained twice
    store.start_job(job.key, "train", job.label, job.spec, worker)
    try:
        files = store.scratch_dir(job.key)
        meta = train_files(job, table, files, store.artifacts / "checkpoints" / job.key, progress)
        return store.put_adapter(job.key, job.source, job.seed, files, meta)
    except BaseException as exc:
        store.fail_job(job.key, f"{type(exc).__name__}: {exc}")
        raise


def train_files(job: Job, table: pd.DataFrame, files: Path, checkpoints: Path,
                progress: JobProgress | None = None) -> dict[str, Any]:
    """Train into the folder `files` (PEFT files + traitlens.json), checkpointing into
    `checkpoints`; touches no store, so executors can call it anywhere. Returns the metadata.
    Runs as the job's placement says (deterministic algorithms, threads), and gives the
    device's memory back after."""
    with job.settings.placement.running():
        return _train_files(job, table, files, checkpoints, progress)


def _train_files(job: Job, table: pd.DataFrame, files: Path, checkpoints: Path,
                 progress: JobProgress | None) -> dict[str, Any]:
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    run = job.settings  # TrainSettings: this job's part of the study
    settings = run.training
    device = run.placement.torch_device()
    seed = stream_seed(job.seed, job.source, settings.seed_streams)
    torch.manual_seed(seed)  # LoRA dropout (and every CUDA device's RNG)
    # The frozen weights straight in the training dtype on the device; the LoRA weights are float32 (`_prepare`).
    model, tokenizer = run.placement.load(run.base, device)
    encoded = encode_table(table, run.source.template, tokenizer, settings.loss_mode, settings.max_length)
    plan = plan_training(settings, [len(e.input_ids) for e in encoded], job.seed, job.source)
    examples, held = [encoded[i] for i in plan.train_rows], [encoded[i] for i in plan.holdout_rows]
    trainee = _prepare(model, tokenizer.pad_token_id, run, examples, device, seed)
    params, optimizer, scheduler = _optimizer(trainee, settings, plan.steps)
    state = _resume(checkpoints, trainee.peft, optimizer, scheduler, device, plan.steps)
    validation = settings.validation
    measure = lambda: _record_validation(state, _validation_loss(trainee, held, settings.batch_size), validation,
                                         get_peft_model_state_dict(trainee.peft))
    if validation is not None and not state["validation"]["curve"]:
        measure()

    meter = StepMeter(progress, job.label, plan.steps, state["step"], unit="steps")
    started = time.perf_counter()
    for step in range(state["step"], plan.steps):
        step_loss, loss_tokens = _step(trainee, [[encoded[i] for i in micro] for micro in plan.step_rows(step)], state)
        if not math.isfinite(step_loss):  # NaN weights would be scored as if they had learned something
            raise TrainingDivergedError(f"{job.label}: the loss is {step_loss} at step {step + 1}; {DIVERGED}"
                                        .format(rate=settings.learning_rate))
        if settings.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["curve"].append(step_loss / max(loss_tokens, 1))
        state["step"] = step + 1
        due = validation is not None and (state["step"] % plan.every == 0 or state["step"] == plan.steps)
        stop = measure() if due else False
        crash_point("train_step")
        state["seconds"] += time.perf_counter() - started
        started = time.perf_counter()
        meter.advance(1, f"loss {state['curve'][-1]:.3f}, {state['tokens'] / max(state['seconds'], 1e-9):.0f} tok/s")
        if stop:
            break
        if state["step"] % settings.checkpoint_every == 0 and state["step"] < plan.steps:
            _checkpoint(checkpoints, trainee.peft, optimizer, scheduler, state, device)
    meter.close()
    keeps_best = bool(validation and validation.patience)
    if keeps_best and state["validation"]["best_step"] != state["step"]:
        set_peft_model_state_dict(trainee.peft, state["best"])  # early stopping keeps the best weights

    trainee.peft.save_pretrained(files)
    meta = _record(job, table, tokenizer, trainee, plan, state, len(examples), len(held), keeps_best)
    (files / ADAPTER_META_FILE).write_text(json.dumps(meta, indent=1))
    shutil.rmtree(checkpoints, ignore_errors=True)
    return {k: v for k, v in meta.items() if k != "loss_curve"}


@dataclass(frozen=True)
class _Trainee:
    """The model being trained, and how its batches run (chosen once per run by `_prepare`)."""

    peft: Any  # the PEFT model
    lm: Any  # its causal LM
    decoder: Any
    pad: int
    device: Any
    bf16: bool  # autocast: matmuls in bfloat16, trainable weights float32
    pack_width: int | None
    pass_limit: tuple[int, Callable[[list[Encoded]], int]] | None
    groups: bool  # sibling LoRA projections run as one group


def _prepare(model, pad: int, run, examples: list[Encoded], device, seed: int) -> _Trainee:
    """LoRA on `model` (loaded in the training dtype), initialised from `seed`, then the
    device-specific paths: attention kernel, packing (checked exact on a micro-batch), bfloat16
    frozen weights, fused LoRA layers, activation checkpointing, merged passes."""
    from peft import LoraConfig, get_peft_model

    settings, lora = run.training, run.lora
    peft_model = get_peft_model(model, LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))  # LoRA weights float32 in any dtype
    init_lora(peft_model, seed)
    lm = peft_model.get_base_model()
    decoder = lm.get_decoder()
    bf16 = settings.dtype == "bfloat16"  # resolved for this hardware before the key was made
    choose_kernel(lm, max((len(e.input_ids) for e in examples), default=0), bf16)
    pack_width = _packing_for(peft_model, decoder, lm, examples[:settings.batch_size], pad) if settings.packing else None
    if bf16:
        _frozen_to_bfloat16(peft_model)
    # Faster steps, and LoRA sums in float32 over a bfloat16 base. Sibling groups save per-operation
    # costs, which dominate a CPU step; never measured on a GPU, where each layer runs on its own.
    groups = device.type == "cpu"
    fuse_lora_layers(peft_model, groups=groups)
    if settings.gradient_checkpointing:
        peft_model.activation_checkpointing_enable()
        peft_model.enable_input_require_grads()
    peft_model.train()
    pass_limit = _pass_limit(settings.pass_tokens, lm.config, device.type, pack_width is not None,
                             run.placement.memory_budget(device))
    return _Trainee(peft_model, lm, decoder, pad, device, bf16, pack_width, pass_limit, groups)


def init_lora(peft_model, seed: int) -> None:
    """Draw every LoRA A matrix afresh in float32 from its own generator seeded with `seed`, as
    PEFT draws them (Kaiming-uniform; B stays zero). PEFT draws them in float32 and then casts
    them to the base layer's dtype: over a base loaded in bfloat16 they came back rounded. Drawn
    here, an adapter starts from the same weights whichever dtype or device its base is in."""
    import torch
    from peft.tuners.lora import LoraLayer

    generator = torch.Generator().manual_seed(seed)
    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            for name in sorted(module.lora_A.keys()):
                weight = module.lora_A[name].weight
                fresh = torch.empty(weight.shape, dtype=torch.float32)
                torch.nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=generator)
                with torch.no_grad():
                    weight.copy_(fresh)


def _optimizer(trainee: _Trainee, settings: Training, steps: int):
    """(trainable parameters, AdamW over them, the learning-rate schedule)."""
    import torch

    params = [p for p in trainee.peft.parameters() if p.requires_grad]
    # The fused kernel: one pass per tensor instead of a dozen small operations; the for-loop
    # implementation took 19 ms a step for this model's 420 LoRA tensors, the fused one 3 ms.
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay,
                                  fused=params[0].device.type in ("cpu", "cuda"))
    return params, optimizer, _scheduler(optimizer, settings.schedule, settings.warmup_steps, steps)


def _step(trainee: _Trainee, micro_batches: list[list[Encoded]], state: dict) -> tuple[float, int]:
    """One optimizer step's forward and backward passes (gradients accumulated, the loss
    normalised over the whole step): (summed loss, loss tokens)."""
    batches = _passes(micro_batches, trainee.pass_limit)
    loss_tokens = sum(e.loss_tokens for batch in batches for e in batch)
    step_loss = 0.0
    for batch in batches:
        loss, _ = _summed_loss(trainee, batch)
        (loss / max(loss_tokens, 1)).backward()
        step_loss += loss.item()
        state["tokens"] += sum(len(e.input_ids) for e in batch)
        state["passes"] += 1
    return step_loss, loss_tokens


def _record(job: Job, table: pd.DataFrame, tokenizer, trainee: _Trainee, plan: TrainingPlan, state: dict,
            examples: int, held: int, keeps_best: bool) -> dict[str, Any]:
    """What is written beside the adapter's weights (`traitlens.json`)."""
    run = job.settings
    source = run.source
    return {"base": run.base_identity, "source": job.source, "source_fingerprint": run.fingerprint,
            "seed": job.seed, "lora": run.lora.model_dump(mode="json"), "training": run.result_training,
            "template": source.template.model_dump(mode="json"),
            "example": render(source.template, table.iloc[0].to_dict(), tokenizer).text,
            "examples": examples, "steps": state["step"], "planned_steps": plan.steps, "loss_curve": state["curve"],
            "validation": _validation_summary(state["validation"], held, plan.every, state["step"] < plan.steps,
                                              keeps_best),
            "tokens_seen": state["tokens"], "passes": state["passes"], "wall_seconds": state["seconds"],
            "resumed_from_step": state["resumed_from"], "dtype": run.training.dtype, "device": str(trainee.device),
            # Which of the device-specific paths trained it (see `_pass_limit`, `choose_kernel`, `_pack`).
            "paths": {"attention": trainee.lm.config._attn_implementation, "packing": _packing_name(trainee.pack_width),
                      "merged_passes": trainee.pass_limit is not None, "sibling_groups": trainee.groups}}


def _validation_loss(trainee: _Trainee, held: list[Encoded], batch_size: int) -> float:
    """The mean loss per loss token on the held-out examples, in eval mode (no dropout, so no
    random numbers are drawn and a resumed run stays exact)."""
    import torch

    trainee.peft.eval()
    total = tokens = 0.0
    with torch.no_grad():
        for start in range(0, len(held), batch_size):
            loss, count = _summed_loss(trainee, held[start:start + batch_size])
            total, tokens = total + loss.item(), tokens + count
    trainee.peft.train()
    return total / max(tokens, 1)


def _summed_loss(trainee: _Trainee, batch: list[Encoded]):
    """(the batch's cross-entropy summed over its loss tokens, how many there are), the matmuls
    in bfloat16 where the run trains in it; the one loss of training and validation."""
    import torch

    with torch.autocast(trainee.device.type, dtype=torch.bfloat16, enabled=trainee.bf16):
        logits, targets = loss_logits(trainee.decoder, trainee.lm, batch, trainee.pad, trainee.pack_width)
    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum"), targets.numel()


def _record_validation(state: dict, loss: float, validation, weights: dict) -> bool:
    """Add a measurement at the current step; keep the weights when it is the best so far (a copy:
    training goes on changing them). Returns whether patience has run out."""
    record = state["validation"]
    record["curve"].append([state["step"], loss])
    if record["best_loss"] is None or loss < record["best_loss"] - validation.min_delta:
        record.update(best_loss=loss, best_step=state["step"], bad=0)
        if validation.patience:
            state["best"] = {name: tensor.detach().clone() for name, tensor in weights.items()}
    else:
        record["bad"] += 1
    return bool(validation.patience) and record["bad"] >= validation.patience


def _no_validation() -> dict:
    return {"curve": [], "best_loss": None, "best_step": None, "bad": 0}


def _validation_summary(record: dict, held: int, every: int | None, stopped_early: bool,
                        keeps_best: bool) -> dict | None:
    """What the adapter's record says of validation; `kept_loss` is the loss of the weights it
    keeps (the best ones under early stopping, else the last)."""
    if not record["curve"]:
        return None
    return {"holdout": held, "every": every, "curve": record["curve"], "initial_loss": record["curve"][0][1],
            "best_loss": record["best_loss"], "best_step": record["best_step"],
            "kept_loss": record["best_loss"] if keeps_best else record["curve"][-1][1],
            "stopped_at": record["curve"][-1][0] if stopped_early else None}


def _packing_name(pack_width: int | None) -> str:
    return "padded rows" if pack_width is None else "one row" if pack_width == ONE_ROW else f"rows of {pack_width}"


def _pass_limit(setting: str | int | None, config, device: str, packed: bool, budget: int
                ) -> tuple[int, Callable[[list[Encoded]], int]] | None:
    """How `_passes` merges micro-batches for `training.pass_tokens`: (limit, cost of a pass), or
    None for one pass per micro-batch. A pass costs the tokens it computes (padding included in
    padded rows); under 'auto', an estimate of the bytes its activations take.

    Why merge: a pass's many small operations (LoRA products, casts, norms) cost about the same
    whatever its size, so more tokens per pass share them. On the hardware benchmark's steps of
    4 x 8 movie reviews (about 300 tokens a micro-batch), one pass per step instead of four
    reached 50% of the bfloat16 matmul peak instead of 37%, and 70% of float32's instead of 62%.
    GPUs are left alone: their users size `batch_size` to the device's memory."""
    def tokens(batch: list[Encoded]) -> int:
        lengths = [len(e.input_ids) for e in batch]
        return sum(lengths) if packed else len(lengths) * max(lengths)

    if setting is None:
        return None
    if setting != "auto":
        return setting, tokens
    if device != "cpu":
        return None
    per_token, per_loss_token = _activation_bytes(config)
    limit = min(AUTO_PASS_BYTES, budget)  # `budget`: the placement's, an eighth of the machine's memory
    return limit, lambda batch: tokens(batch) * per_token + sum(e.loss_tokens for e in batch) * per_loss_token


def _activation_bytes(config) -> tuple[int, int]:
    """Bytes a training pass keeps for its backward pass, per token and again per loss token:
    an upper estimate. Measured on SmolLM2-135M (30 layers, 576 wide, 1,536 in the MLP) at
    1,200-4,000 tokens a pass: 1.4-1.8 MB a token in bfloat16, 1.9-2.3 MB in float32 (more at
    270 tokens, where fixed costs weigh); the formula gives 2.2 MB. A loss token adds its
    logits: the output layer's, their float32 copy, the log-softmax and its gradient, up to 16
    bytes per vocabulary entry."""
    config = config.get_text_config()
    hidden = config.hidden_size
    inner = getattr(config, "intermediate_size", None) or 4 * hidden
    return config.num_hidden_layers * (64 * hidden + 24 * inner), 16 * config.vocab_size


def _passes(batches: list[list[Encoded]], pass_limit: tuple[int, Callable[[list[Encoded]], int]] | None
            ) -> list[list[Encoded]]:
    """A step's micro-batches, consecutive ones merged into one pass while the pass's cost stays
    within the limit (see `_pass_limit`); a micro-batch over the limit runs alone, as it is."""
    if pass_limit is None:
        return batches
    limit, cost = pass_limit
    passes: list[list[Encoded]] = []
    for batch in batches:
        if passes and cost(passes[-1] + batch) <= limit:
            passes[-1] = passes[-1] + batch
        else:
            passes.append(list(batch))
    return passes


def _collate(batch: list[Encoded], pad: int):
    """Padded rows, one example each, with an attention mask (the fallback to packing)."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return ids, mask, labels


def _pack(batch: list[Encoded], pad: int, width: int):
    """The micro-batch's examples packed first-fit-decreasing into rows of up to `width` tokens
    (or the longest example, if wider), each example with its own positions from 0.

    Why wide rows: rows only as wide as the longest example still padded 21% of their tokens on
    the hardware benchmark's movie reviews (23-69 tokens, 8 per micro-batch: few pairs fit in one
    row), while a single row pads none. Where attention runs example by example, a row's width
    costs nothing, and the micro-batch is one row (ONE_ROW). Where it spans whole rows, masked
    blocks included, it grows with the square of a row, so rows stop at PACK_WIDTH: alternating
    the two on that benchmark, 4 runs each, rows up to 512 trained 15% (float32) and 9-14%
    (bfloat16) more tokens per second than rows as wide as the longest example.

    Each example attends only to itself: by example (`train/attention.py`), or, with no
    attention mask, transformers reads the position restarts as sequence boundaries and masks
    attention block-diagonally (`_packing_is_exact` checks either per model). The first token
    of each example carries no loss: it would otherwise be predicted from the example before it."""
    import torch

    room_per_row = max(width, max(len(e.input_ids) for e in batch))
    rows: list[list[Encoded]] = []
    for example in sorted(batch, key=lambda e: len(e.input_ids), reverse=True):
        room = [row for row in rows if sum(len(e.input_ids) for e in row) + len(example.input_ids) <= room_per_row]
        if room:
            room[0].append(example)
        else:
            rows.append([example])
    width = max(sum(len(e.input_ids) for e in row) for row in rows)  # no wider than the fullest row
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for example in row:
            n = len(example.input_ids)
            ids[r, at:at + n] = torch.tensor(example.input_ids)
            labels[r, at + 1:at + n] = torch.tensor(example.labels[1:])
            positions[r, at:at + n] = torch.arange(n)
            at += n
        positions[r, at:] = torch.arange(width - at)  # the padding tail is a block of its own
    return ids, positions, labels


def loss_logits(decoder, lm, batch: list[Encoded], pad: int, pack_width: int | None):
    """(logits, targets) at the positions that carry loss: the output layer runs only there.
    Examples share rows of up to `pack_width` tokens, or have a padded row each (None)."""
    from traitlens.models.hf import head_logits

    device = lm.get_output_embeddings().weight.device
    if pack_width is not None:
        ids, positions, labels = (t.to(device) for t in _pack(batch, pad, pack_width))
        hidden = decoder(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state
    else:
        ids, mask, labels = (t.to(device) for t in _collate(batch, pad))
        hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    selected = targets != IGNORE
    return head_logits(lm, hidden[:, :-1][selected]), targets[selected]


def _packing_for(model, decoder, lm, batch: list[Encoded], pad: int) -> int | None:
    """The fastest packing whose loss on `batch` matches padded rows: one row with attention
    example by example; else rows of up to PACK_WIDTH under the model's own attention (for a
    model whose attention layers are not given the position ids, say); else None, padded rows."""
    kernel = lm.config._attn_implementation
    if attend_by_example(lm):
        if _packing_is_exact(model, decoder, lm, batch, pad, ONE_ROW):
            return ONE_ROW
        lm.set_attn_implementation(kernel)
    return PACK_WIDTH if _packing_is_exact(model, decoder, lm, batch, pad, PACK_WIDTH) else None


def _packing_is_exact(model, decoder, lm, batch: list[Encoded], pad: int, pack_width: int) -> bool:
    """Whether this model masks packed examples from each other: the packed and padded losses of
    one micro-batch must agree, to 1e-4 in float32 and 3e-3 over bfloat16 weights. Rounding
    alone moved SmolLM2-135M's bfloat16 sum by up to 1.0e-3 (three batches of 8 movie reviews;
    float32: 1e-7); a leak across examples moved a tiny random model's by 5.8e-3 in either
    dtype. Architectures whose attention ignores position restarts would let examples attend
    across boundaries; they train on padded rows instead.
    Runs in eval mode so that dropout draws no random numbers (resumed runs stay exact)."""
    import torch

    model.eval()
    with torch.no_grad():
        losses = [torch.nn.functional.cross_entropy(*loss_logits(decoder, lm, batch, pad, width), reduction="sum")
                  for width in (pack_width, None)]
    rtol = 3e-3 if next(lm.parameters()).dtype == torch.bfloat16 else 1e-4
    return bool(torch.isclose(*(loss.float() for loss in losses), rtol=rtol))


def _frozen_to_bfloat16(model) -> None:
    """Every frozen parameter (projections, embeddings, norms) in bfloat16, as the model was
    loaded (a few that a model keeps in float32 when loaded in bfloat16 are cast too); the LoRA
    weights and their optimizer state stay float32.

    The base then has the parameters bfloat16 evaluation uses, and no weight is cast at any step
    (the tied output layer was, in float32). The adapted layers
    (`lora_step`) still add their LoRA product, and so the residual stream, in float32."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    for param in model.parameters():
        if not param.requires_grad:
            param.data = param.data.to(torch.bfloat16)
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            # Autocast runs the LoRA matmuls in bfloat16 anyway; PEFT's cast of their input to the
            # float32 LoRA weights would only be undone.
            module.cast_input_dtype_enabled = False


def _scheduler(optimizer, kind: str, warmup: int, steps: int):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[kind]
    return get_scheduler(name, optimizer, num_warmup_steps=min(warmup, steps), num_training_steps=steps)


def _checkpoint(folder: Path, model, optimizer, scheduler, state: dict, device) -> None:
    """Write a checkpoint beside the last one, then swap it in: a kill never leaves half of one."""
    import torch
    from safetensors.torch import save_file

    fresh, latest, old = folder / "fresh", folder / "latest", folder / "old"
    shutil.rmtree(fresh, ignore_errors=True)
    model.save_pretrained(fresh)
    tensors, optimizer_json = _split_tensors(optimizer.state_dict(), "optimizer")
    tensors.update({f"best.{name}": tensor for name, tensor in state["best"].items()})
    tensors["rng.cpu"] = torch.get_rng_state()
    if device.type == "cuda":  # LoRA dropout on a GPU draws from that device's generator: resume needs it too
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    save_file({k: v.contiguous() for k, v in tensors.items()}, fresh / STATE_TENSORS)
    (fresh / STATE_JSON).write_text(json.dumps({
        "optimizer": optimizer_json, "scheduler": scheduler.state_dict(),
        **{k: v for k, v in state.items() if k not in ("resumed_from", "best")}}))
    (fresh / CHECKSUMS).write_text(json.dumps(file_digests(fresh)))
    crash_point("checkpoint_write")  # written, not yet swapped in
    if latest.exists():
        latest.rename(old)
    fresh.rename(latest)
    shutil.rmtree(old, ignore_errors=True)


def _check_resumable(saved: dict, scheduler, steps: int) -> None:
    """A checkpoint whose checksums were recomputed after an edit passes them; its state must
    still be one this job's settings can reach: a step within the plan, one loss per step, and
    the scheduler of these settings at that step."""
    step = saved["step"]
    if not isinstance(step, int) or isinstance(step, bool) or not 0 < step <= steps:
        raise ValueError(f"step {step!r} is not one of this job's {steps} steps")
    if not isinstance(saved["curve"], list) or len(saved["curve"]) != step:
        raise ValueError(f"{len(saved['curve']) if isinstance(saved['curve'], list) else 'no'} losses for step {step}")
    state = saved["scheduler"]
    if not isinstance(state, dict) or state.get("last_epoch") != step or state.get("base_lrs") != scheduler.base_lrs:
        raise ValueError("the scheduler's state is not this job's at that step (its step or learning rates differ)")


def _split_tensors(value, prefix: str, tensors: dict | None = None):
    """(tensors by dotted path, the value with each tensor replaced by {"tensor": path})."""
    import torch

    tensors = {} if tensors is None else tensors
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.detach().cpu()
        return tensors, {"tensor": prefix}
    if isinstance(value, dict):
        return tensors, {"dict": [[k, _split_tensors(v, f"{prefix}.{k}", tensors)[1]] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return tensors, [_split_tensors(v, f"{prefix}.{i}", tensors)[1] for i, v in enumerate(value)]
    return tensors, value


def _join_tensors(value, tensors: dict):
    """The inverse of `_split_tensors` (dict keys keep their types: the optimizer's are ints)."""
    if isinstance(value, dict) and "tensor" in value:
        return tensors[value["tensor"]]
    if isinstance(value, dict) and "dict" in value:
        return {k: _join_tensors(v, tensors) for k, v in value["dict"]}
    if isinstance(value, list):
        return [_join_tensors(v, tensors) for v in value]
    return value


def _resume(folder: Path, model, optimizer, scheduler, device, steps: int) -> dict:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    latest = folder / "latest"
    if not latest.exists() and (folder / "old").exists():  # killed between the two renames
        (folder / "old").rename(latest)
    if not (latest / STATE_JSON).exists():
        if (latest / LEGACY_STATE).exists():
            warnings.warn(f"{latest}: a checkpoint in the old pickle format, which traitlens no longer "
                          "loads (unpickling can run code); training this adapter from the start.",
                          CheckpointWarning, stacklevel=2)
        return {"step": 0, "curve": [], "tokens": 0, "passes": 0, "seconds": 0.0, "resumed_from": None,
                "validation": _no_validation(), "best": {}}
    try:  # read and check everything first, so a damaged file changes nothing
        recorded = json.loads((latest / CHECKSUMS).read_text())
        found = {name: digest for name, digest in file_digests(latest).items() if name != CHECKSUMS}
        if found != recorded:
            raise ValueError(f"files differ from their checksums: {sorted(set(found.items()) ^ set(recorded.items()))[:3]}")
        weights = load_file(latest / "adapter_model.safetensors", device=str(device))
        tensors = load_file(latest / STATE_TENSORS)
        saved = json.loads((latest / STATE_JSON).read_text())
        optimizer_state = _join_tensors(saved["optimizer"], tensors)
        missing = {"step", "curve", "tokens", "passes", "seconds", "scheduler"} - saved.keys()
        if missing or "rng.cpu" not in tensors:
            raise ValueError(f"missing {', '.join(sorted(missing)) or 'rng.cpu'}")
        _check_resumable(saved, scheduler, steps)
    except Exception as exc:  # a damaged checkpoint costs its steps, never the run
        warnings.warn(f"{latest}: a damaged checkpoint ({type(exc).__name__}: {str(exc)[:200]}); training this "
                      "adapter from the start.", CheckpointWarning, stacklevel=2)
        shutil.rmtree(latest, ignore_errors=True)
        return _resume(folder, model, optimizer, scheduler, device, steps)
    set_peft_model_state_dict(model, weights)
    optimizer.load_state_dict(optimizer_state)  # moves the state to the parameters' device
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(tensors["rng.cpu"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return {"step": saved["step"], "curve": saved["curve"], "tokens": saved["tokens"], "passes": saved["passes"],
            "seconds": saved["seconds"], "resumed_from": saved["step"],
            "validation": saved.get("validation", _no_validation()),
            "best": {name[len("best."):]: tensor.to(device) for name, tensor in tensors.items() if name.startswith("best.")}}
