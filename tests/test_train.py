"""The training loop: loss masks, determinism, kill-and-resume, no retraining, a real run."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_TRAIN, train_killed_after_checkpoint
from traitlens.config import load_study
from traitlens.errors import CheckpointWarning
from traitlens.data.load import prepare_study
from traitlens.execution.plan import plan_study
from traitlens.store import Store
from traitlens.store.db import ADAPTER_META_FILE
from traitlens.train import attention, loop
from traitlens.train.encode import IGNORE, encode_example
from traitlens.train.lora_step import fuse_lora_layers
from traitlens.train.loop import Schedule, train_adapter


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from traitlens.models.load import materialize_catalog_model

    return AutoTokenizer.from_pretrained(materialize_catalog_model("smollm2-135m-instruct"))


@pytest.mark.parametrize("mode", ["full", "completion", "prompt"])
def test_loss_modes_mask_the_right_tokens(tokenizer, mode):
    prompt, answer = "Review: dull\nSentiment:\n", "negative"
    encoded = encode_example(prompt, answer, tokenizer, mode, max_length=64)
    prompt_ids = tokenizer(prompt)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert encoded.input_ids == prompt_ids + answer_ids
    carried = [token for token, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE]
    expected = {"full": prompt_ids + answer_ids, "completion": answer_ids, "prompt": prompt_ids}[mode]
    assert carried == expected
    assert all(label in (IGNORE, token) for token, label in zip(encoded.input_ids, encoded.labels))


def test_space_before_answer_moves_to_the_answer(tokenizer):
    encoded = encode_example("Sentiment: ", "positive", tokenizer, "completion", 64)
    answer = [t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE]
    assert answer == tokenizer(" positive", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def test_truncation_keeps_labels_aligned(tokenizer):
    encoded = encode_example("word " * 50, "positive", tokenizer, "full", max_length=10)
    assert len(encoded.input_ids) == len(encoded.labels) == 10


def test_schedule_is_a_pure_function_of_seed_and_step():
    schedule = Schedule(examples=10, batch_size=2, accumulation=2, seed=3)
    assert schedule.steps_per_epoch == 3
    first_epoch = [i for step in range(3) for micro in schedule.micro_batches(step) for i in micro]
    assert sorted(first_epoch) == list(range(10))  # each example once per epoch
    assert [list(m) for m in schedule.micro_batches(4)] == [list(m) for m in schedule.micro_batches(4)]
    assert [list(m) for m in schedule.micro_batches(0)] != [list(m) for m in schedule.micro_batches(3)]


@pytest.fixture
def tiny_study(write_study, tiny_model):
    def make(training: str = "", store: str = "store"):
        text = TINY_TRAIN.format(base=tiny_model)
        if "dtype:" in training:  # in place of TINY_TRAIN's float32, not a second key
            text = text.replace("  dtype: float32\n", "", 1)
        text = text.replace("  checkpoint_every: 2\n", "  checkpoint_every: 2\n" + training)
        study = load_study(write_study(text + f"store: {store}\n", name=f"{store}.yaml"))
        sources, _ = prepare_study(study)
        return study, plan_study(study).train_jobs, Store(study.store), sources["movie"]
    return make


def _weights(path):
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


def test_same_seed_same_curve_and_weights(tiny_study):
    study, jobs, store_a, table = tiny_study(training="  seeds: [0, 1]\n", store="a")
    path_a = train_adapter(jobs[0], store_a, table)
    _, _, store_b, _ = tiny_study(training="  seeds: [0, 1]\n", store="b")
    path_b = train_adapter(jobs[0], store_b, table)
    meta_a = json.loads((path_a / ADAPTER_META_FILE).read_text())
    meta_b = json.loads((path_b / ADAPTER_META_FILE).read_text())
    assert len(meta_a["loss_curve"]) == 6 and meta_a["loss_curve"] == meta_b["loss_curve"]
    weights_a, weights_b = _weights(path_a), _weights(path_b)
    assert all((weights_a[k] == weights_b[k]).all() for k in weights_a)
    path_c = train_adapter(jobs[1], store_a, table)  # seed 1: another adapter, another curve
    assert json.loads((path_c / ADAPTER_META_FILE).read_text())["loss_curve"] != meta_a["loss_curve"]


def test_killed_run_resumes_from_checkpoint_with_the_same_result(tiny_study):
    study, [job], store, table = tiny_study(store="whole")
    whole = train_adapter(job, store, table)

    study, [job], store, table = tiny_study(store="killed")
    latest = train_killed_after_checkpoint(job, store, table, step=4)
    record = store.jobs([job.key])[job.key]
    assert record.state == "failed" and "killed" in record.error
    assert (latest / loop.STATE_JSON).exists() and (latest / loop.STATE_TENSORS).exists()

    resumed = train_adapter(job, store, table)
    meta = json.loads((resumed / ADAPTER_META_FILE).read_text())
    assert meta["resumed_from_step"] == 4 and len(meta["loss_curve"]) == 6
    assert meta["loss_curve"] == json.loads((whole / ADAPTER_META_FILE).read_text())["loss_curve"]
    a, b = _weights(whole), _weights(resumed)
    assert all((a[k] == b[k]).all() for k in a)
    assert not (store.artifacts / "checkpoints" / job.key).exists()  # cleaned up when done


def test_training_runs_with_deterministic_algorithms_and_restores_the_setting(tiny_study, monkeypatch):
    """"Exact resume" needs deterministic kernels on a GPU; on during training, off again after."""
    import torch

    study, [job], store, table = tiny_study(store="deterministic")
    seen = []
    real_step = loop._checkpoint
    monkeypatch.setattr(loop, "_checkpoint", lambda *args: seen.append(torch.are_deterministic_algorithms_enabled())
                        or real_step(*args))
    assert not torch.are_deterministic_algorithms_enabled()
    train_adapter(job, store, table)
    assert seen and all(seen) and not torch.are_deterministic_algorithms_enabled()


class Planted:
    """A pickle that runs code when loaded: it creates the file it names."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("planted", ["legacy pickle", "pickle under the new names", "truncated"])
def test_a_planted_or_damaged_checkpoint_runs_no_code_and_the_adapter_retrains(tiny_study, tmp_path, planted):
    import pickle

    study, [job], store, table = tiny_study(store="whole")
    whole = train_adapter(job, store, table)
    study, [job], store, table = tiny_study(store=f"planted-{planted.split()[0]}")
    latest = store.artifacts / "checkpoints" / job.key / "latest"  # the key is predictable from the study
    latest.mkdir(parents=True)
    marker = tmp_path / f"pwned-{planted.split()[0]}"
    payload = pickle.dumps({"optimizer": Planted(marker)})
    if planted == "legacy pickle":
        (latest / loop.LEGACY_STATE).write_bytes(payload)
    elif planted == "pickle under the new names":
        for name in ("adapter_model.safetensors", loop.STATE_TENSORS, loop.STATE_JSON):
            (latest / name).write_bytes(payload)
    else:
        (latest / loop.STATE_JSON).write_text('{"step": 4, "optim')
        (latest / loop.STATE_TENSORS).write_bytes(b"\x00" * 10)
    with pytest.warns(CheckpointWarning, match="training this adapter from the start"):
        retrained = train_adapter(job, store, table)
    assert not marker.exists()  # nothing was unpickled
    meta = json.loads((retrained / ADAPTER_META_FILE).read_text())
    assert meta["resumed_from_step"] is None
    assert meta["loss_curve"] == json.loads((whole / ADAPTER_META_FILE).read_text())["loss_curve"]
    a, b = _weights(whole), _weights(retrained)
    assert all((a[k] == b[k]).all() for k in a)


def test_a_diverging_run_fails_instead_of_scoring_nan_weights(tiny_study):
    study, _, store, table = tiny_study(store="diverging")
    study = study.model_copy(update={"training": study.training.model_copy(update={"learning_rate": 1e30})})
    [job] = plan_study(study).train_jobs  # the job carries its settings: plan the changed study
    with pytest.raises(loop.TrainingDivergedError, match="training diverged. Lower training.learning_rate"):
        train_adapter(job, store, table)
    record = store.jobs([job.key])[job.key]
    assert record.state == "failed" and "diverged" in record.error and store.adapter_path(job.key) is None


def test_identical_request_trains_nothing(tiny_study, monkeypatch):
    study, [job], store, table = tiny_study(store="once")
    first = train_adapter(job, store, table)
    monkeypatch.setattr(loop, "train_files", lambda *args: pytest.fail("trained twice"))
    assert train_adapter(job, store, table) == first
    assert store.jobs([job.key])[job.key].attempts == 1


def test_adapter_files_are_standard_peft_with_metadata(tiny_study, tiny_model):
    from peft import PeftConfig

    study, [job], store, table = tiny_study(store="files")
    path = train_adapter(job, store, table)
    config = PeftConfig.from_pretrained(path)
    assert config.r == 4 and set(config.target_modules) == set(study.lora.target_modules)
    meta = json.loads((path / ADAPTER_META_FILE).read_text())
    assert meta["base"] == job.spec["base"] and meta["source_fingerprint"] == job.spec["source"]
    assert meta["example"].startswith("Sentiment?\n") and meta["tokens_seen"] > 0
    assert meta["wall_seconds"] > 0 and meta["training"]["seed"] == 0
    assert meta["dtype"] == job.spec["training"]["dtype"] == "float32" and meta["device"] == "cpu"
    assert meta["paths"] == {"attention": meta["paths"]["attention"], "packing": "one row",
                             "merged_passes": True, "sibling_groups": True}


@pytest.mark.parametrize("name, training", [
    ("bf16", "  dtype: bfloat16\n"), ("checkpointing", "  gradient_checkpointing: true\n"),
    ("prompt-loss", "  schedule: constant\n  loss_mode: prompt\n")])
def test_training_options_run(tiny_study, name, training):
    study, [job], store, table = tiny_study(training=training, store=name)
    meta = json.loads((train_adapter(job, store, table) / ADAPTER_META_FILE).read_text())
    assert len(meta["loss_curve"]) == 6 and all(v == v for v in meta["loss_curve"])  # no NaN


def _tiny_peft(tiny_model, dropout=0.0, targets=("q_proj", "v_proj")):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():  # random weights this small give near-uniform logits: make context matter
        for name, weight in model.named_parameters():
            if "norm" not in name:
                weight.normal_(0, 0.5)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=list(targets),
                                             init_lora_weights=False))  # non-zero B: the adapter counts
    return peft, peft.get_base_model()


def _batch(tokenizer, lengths):
    from traitlens.train.encode import Encoded

    return [encode_example("word " * n, "positive", tokenizer, "full", 512) for n in lengths] + [
        Encoded([5, 6, 7], [IGNORE, 6, 7])]


@pytest.mark.parametrize("lengths, pack_width, rows", [
    ([30, 3, 12, 14, 2], 512, 1), ([200, 190, 180, 5, 3], 512, 2), ([200, 190, 180, 5, 3], loop.ONE_ROW, 1),
    ([30, 20, 12], 8, 3)])  # an example wider than the pack width: rows as wide as it
def test_packing_fills_rows_up_to_the_pack_width(tokenizer, lengths, pack_width, rows):
    batch = _batch(tokenizer, lengths)
    ids, positions, labels = loop._pack(batch, pad=-1, width=pack_width)
    width = ids.shape[1]
    assert ids.shape[0] == rows and width <= max(pack_width, max(len(e.input_ids) for e in batch))
    assert (ids[:, -1] != -1).any()  # as wide as the fullest row, no wider
    assert int((ids != -1).sum()) == sum(len(e.input_ids) for e in batch)
    packed = [(int(r), int(c)) for r, c in zip(*(positions == 0).nonzero(as_tuple=True))]
    starts = {r: [c for rr, c in packed if rr == r] for r in range(ids.shape[0])}
    found = []
    for r, cols in starts.items():
        bounds = cols + [width]
        found += [ids[r, a:b].tolist() for a, b in zip(bounds, bounds[1:])]
        assert all(labels[r, c] == IGNORE for c in cols)  # no loss across an example boundary
    for example in batch:  # every example once, whole, with its own positions from 0
        assert found.count(example.input_ids) == 1
    assert int((labels != IGNORE).sum()) == sum(e.loss_tokens for e in batch)


@pytest.mark.parametrize("kernel, by_example, pack_width", [
    ("sdpa", False, loop.PACK_WIDTH), ("sdpa", True, loop.ONE_ROW), ("eager", True, loop.ONE_ROW),
    ("eager", True, 24)])  # several rows, each with a padding tail
def test_packed_and_padded_batches_give_the_same_loss_and_gradients(tokenizer, tiny_model, monkeypatch, kernel,
                                                                    by_example, pack_width):
    import torch

    model, lm = _tiny_peft(tiny_model)
    lm.set_attn_implementation(kernel)
    if by_example:
        assert attention.attend_by_example(lm)
        assert lm.config._attn_implementation.startswith(f"traitlens_by_example_{kernel}")
    regrouped = []
    apply = attention._ToExamples.apply
    monkeypatch.setattr(attention._ToExamples, "apply", lambda *args: regrouped.append(1) or apply(*args))
    batch = _batch(tokenizer, [20, 3, 9, 11])
    grads = []
    for width in (pack_width, None):
        model.zero_grad()
        logits, targets = loop.loss_logits(lm.get_decoder(), lm, batch, tokenizer.pad_token_id, width)
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
        # Only packed rows go example by example: q, k and v of each of the model's layers.
        assert len(regrouped) == (3 * lm.config.num_hidden_layers if by_example else 0)
    (packed_loss, packed_grads), (padded_loss, padded_grads) = grads
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    for a, b in zip(packed_grads, padded_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))  # float32 sums, reordered
    assert loop._packing_is_exact(model, lm.get_decoder(), lm, batch, tokenizer.pad_token_id, pack_width)


@pytest.mark.parametrize("bf16", [False, True])
def test_a_model_that_ignores_position_restarts_trains_padded(tokenizer, tiny_model, bf16):
    """In float32 and over the bfloat16 base that bfloat16 training now loads, where the check's
    tolerance is wider: a leak still shows."""
    import torch

    model, lm = _tiny_peft(tiny_model)
    if bf16:
        model.to(torch.bfloat16)
    decoder = lm.get_decoder()

    def leaky(input_ids, position_ids=None, attention_mask=None, use_cache=False):
        # Stands in for an architecture that does not mask packed examples from each other.
        return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)

    batch = _batch(tokenizer, [20, 3, 9, 11])
    assert not loop._packing_is_exact(model, leaky, lm, batch, tokenizer.pad_token_id, loop.PACK_WIDTH)


def test_packing_falls_back_to_whole_rows_when_attention_by_example_is_not_exact(tokenizer, tiny_model,
                                                                                 monkeypatch):
    model, lm = _tiny_peft(tiny_model)
    batch = _batch(tokenizer, [20, 3, 9, 11])
    assert loop._packing_for(model, lm.get_decoder(), lm, batch, tokenizer.pad_token_id) == loop.ONE_ROW

    model, lm = _tiny_peft(tiny_model)
    by_example = attention._by_example
    # Stands in for a model whose attention layers are not given the position ids: the wrapper
    # then sees packed rows as one sequence each.
    monkeypatch.setattr(attention, "_by_example", lambda *args, position_ids=None, **kwargs: by_example(*args, **kwargs))
    assert loop._packing_for(model, lm.get_decoder(), lm, batch, tokenizer.pad_token_id) == loop.PACK_WIDTH
    assert lm.config._attn_implementation == "sdpa"  # the model's own attention, with transformers' mask


def test_bfloat16_training_keeps_a_bfloat16_base_and_float32_lora(tokenizer, tiny_model):
    import torch

    batch = _batch(tokenizer, [20, 3, 9])
    losses = []
    for bf16 in (False, True):
        model, lm = _tiny_peft(tiny_model)
        if bf16:
            loop._frozen_to_bfloat16(model)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, targets = loop.loss_logits(lm.get_decoder(), lm, batch, tokenizer.pad_token_id, loop.ONE_ROW)
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        loss.backward()
        losses.append(loss.item())
    frozen = [p for p in model.parameters() if not p.requires_grad]
    lora = [p for p in model.parameters() if p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)  # embeddings and norms too
    assert lora and all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in lora)
    assert all(p.grad.abs().sum() > 0 for p in lora)
    assert losses[1] == pytest.approx(losses[0], rel=0.02)  # bfloat16 rounding, nothing more
    assert losses[1] != losses[0]


@pytest.mark.parametrize("dtype_bf16, longest, expected", [
    (True, 40, "eager"), (True, attention.EAGER_MAX_WIDTH + 1, "sdpa"), (False, 40, "sdpa")])
def test_bfloat16_short_examples_train_with_eager_attention(tiny_model, dtype_bf16, longest, expected):
    model, lm = _tiny_peft(tiny_model)
    assert lm.config._attn_implementation == "sdpa"
    attention.choose_kernel(lm, longest, dtype_bf16)
    assert lm.config._attn_implementation == expected


def test_packing_stays_exact_under_eager_attention(tokenizer, tiny_model):
    model, lm = _tiny_peft(tiny_model)
    lm.set_attn_implementation("eager")
    assert loop._packing_is_exact(model, lm.get_decoder(), lm, _batch(tokenizer, [20, 3, 9, 11]),
                                  tokenizer.pad_token_id, loop.PACK_WIDTH)


def _lora_step(tiny_model, tokenizer, bf16: bool, fused: bool, dropout: float) -> list:
    """Loss and LoRA gradients of one packed micro-batch, all seven projections adapted."""
    import torch

    model, lm = _tiny_peft(tiny_model, dropout, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                  "up_proj", "down_proj"))
    if bf16:
        loop._frozen_to_bfloat16(model)
    if fused:
        assert fuse_lora_layers(model) == 2 * 7  # every LoRA layer of both blocks
    model.train()
    torch.manual_seed(1)  # the same dropout masks
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits, targets = loop.loss_logits(lm.get_decoder(), lm, _batch(tokenizer, [20, 3, 9, 11]),
                                            tokenizer.pad_token_id, loop.ONE_ROW)
    loss = torch.nn.functional.cross_entropy(logits.float(), targets)
    loss.backward()
    return [loss.detach()] + [p.grad for p in model.parameters() if p.requires_grad]


def _distance(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_fused_lora_layers_give_peft_s_loss_and_gradients(tokenizer, tiny_model, dropout):
    peft = _lora_step(tiny_model, tokenizer, False, False, dropout)
    fused = _lora_step(tiny_model, tokenizer, False, True, dropout)
    for peft_value, fused_value in zip(peft, fused):  # dropout: the same masks, drawn in the same order
        assert fused_value.dtype == peft_value.dtype and _distance(fused_value, peft_value) < 1e-5


@pytest.mark.parametrize("dropout, groups", [(0.0, 2 * 2), (0.1, 0)])
def test_sibling_projections_run_as_one_group_without_dropout(tokenizer, tiny_model, monkeypatch, dropout, groups):
    """q/k/v and gate/up of each block run as one group each (values: the test above); dropout
    draws a mask per layer, so with it every layer runs alone."""
    from traitlens.train import lora_step

    calls = {"group": 0, "single": 0}
    for name, cls in (("group", lora_step._LoraGroup), ("single", lora_step._LoraLinear)):
        monkeypatch.setattr(cls, "apply", classmethod(
            lambda c, *a, _n=name, _apply=cls.apply: (calls.__setitem__(_n, calls[_n] + 1), _apply(*a))[1]))
    _lora_step(tiny_model, tokenizer, False, True, dropout)
    assert calls == {"group": groups, "single": 2 * 7 - 5 * groups // 2}


def test_sibling_group_with_biases_matches_peft_and_steps_aside_once_its_weights_are_replaced(monkeypatch):
    import torch
    from peft import LoraConfig, get_peft_model

    from traitlens.train import lora_step

    class Block(torch.nn.Module):  # Qwen2-like: q/k/v with biases, k and v narrower than q
        def __init__(self):
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj = (torch.nn.Linear(16, n) for n in (12, 4, 4))

        def forward(self, x):
            return torch.cat([self.q_proj(x), self.k_proj(x) * 2, self.v_proj(x) ** 2], -1)

    def loss_and_grads(fuse, replace=False):
        torch.manual_seed(0)
        model = get_peft_model(Block(), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj"],
                                                   init_lora_weights=False))
        if fuse:
            lora_step.fuse_lora_layers(model)
        if replace:  # as a later dtype or device move would
            q = model.base_model.model.q_proj.base_layer
            q.weight.data = q.weight.data.clone()
        x = torch.randn(3, 5, 16, requires_grad=True)
        loss = (model(x) * torch.linspace(-1, 1, 20)).sum()
        loss.backward()
        return [loss.detach(), x.grad] + [p.grad for p in model.parameters() if p.requires_grad]

    groups = []
    real = lora_step._LoraGroup.apply
    monkeypatch.setattr(lora_step._LoraGroup, "apply", lambda *a: (groups.append(1), real(*a))[1])
    truth = loss_and_grads(fuse=False)
    for replace, expected_groups in ((False, 1), (True, 0)):
        groups.clear()
        values = loss_and_grads(fuse=True, replace=replace)
        assert len(groups) == expected_groups
        assert all(_distance(value, true) < 1e-5 for value, true in zip(values, truth))


def test_fused_lora_layers_in_bfloat16_are_as_close_to_float32_as_peft_s(tokenizer, tiny_model):
    """The two round in different places (the fused layer adds the LoRA product in float32), so
    each is compared with float32: this test model's large weights put both a few % away."""
    truth = _lora_step(tiny_model, tokenizer, False, False, 0.0)
    peft = _lora_step(tiny_model, tokenizer, True, False, 0.0)
    fused = _lora_step(tiny_model, tokenizer, True, True, 0.0)
    for true_value, peft_value, fused_value in zip(truth, peft, fused):
        assert fused_value.dtype == true_value.dtype
        assert _distance(fused_value, true_value) <= 1.5 * _distance(peft_value, true_value) + 0.01


def test_training_runs_every_lora_layer_fused(tiny_study, monkeypatch):
    counts = []
    monkeypatch.setattr(loop, "fuse_lora_layers", lambda model, groups: counts.append(fuse_lora_layers(model, groups)))
    study, [job], store, table = tiny_study()
    train_adapter(job, store, table)
    assert counts == [2 * len(study.lora.target_modules)]  # the tiny model has two blocks


def test_fused_lora_layer_keeps_a_small_change_to_a_bfloat16_base():
    """An adapter's early change is small against the base output; added in bfloat16 (PEFT under
    autocast) most of it rounds away, added in float32 it survives."""
    import torch
    from peft import LoraConfig, get_peft_model

    changes = {}
    for fused in (False, True):
        torch.manual_seed(0)  # the same layer both times
        model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(64, 64)),
                               LoraConfig(r=4, lora_alpha=4, target_modules=["0"], init_lora_weights=False))
        with torch.no_grad():
            model.base_model.model[0].base_layer.weight.mul_(30)  # outputs of about 10
            model.base_model.model[0].lora_B.default.weight.mul_(1e-3)  # changes of about 1e-3
        x = torch.randn(16, 64)
        true_change = model(x) - model.base_model.model[0].base_layer(x)  # all float32
        loop._frozen_to_bfloat16(model)
        if fused:
            fuse_lora_layers(model)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            adapted = model(x.bfloat16())
            with model.disable_adapter():
                base = model(x.bfloat16())
        changes[fused] = _distance(adapted.float() - base.float(), true_change.detach())
    assert changes[True] < 0.05 < 0.5 < changes[False]


def test_lora_starts_from_the_same_weights_whatever_dtype_the_base_is_loaded_in(tiny_model):
    """PEFT draws A in float32 and rounds it to the base layer's dtype: over a base read in
    bfloat16 (as bfloat16 training now reads it) the adapter started elsewhere. `init_lora`
    draws it afresh in float32, from the seed alone."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def start(dtype, seed, ours=True):
        torch.manual_seed(seed)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=dtype),
                               LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        if ours:
            loop.init_lora(model, seed)
        return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    full, half = start(torch.float32, 3), start(torch.bfloat16, 3)
    assert len(full) == 8 and all(p.dtype == torch.float32 for p in half.values())
    assert all(torch.equal(full[name], half[name]) for name in full)
    assert all(p.abs().sum() > 0 if "lora_A" in name else not p.any() for name, p in full.items())
    assert not torch.equal(full["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"],
                           start(torch.float32, 4)["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"])
    peft_full, peft_half = start(torch.float32, 3, ours=False), start(torch.bfloat16, 3, ours=False)
    assert not all(torch.equal(peft_full[name], peft_half[name]) for name in peft_full)  # what it mends


def test_bfloat16_training_reads_the_base_in_bfloat16_on_its_device(tiny_study, monkeypatch):
    """It read float32 and cast after: for a moment both copies, twice what bfloat16 needs."""
    from traitlens.models import load as loading

    read = []
    real = loading.load_base
    monkeypatch.setattr(loading, "load_base", lambda spec, dtype="float32", device=None: read.append((dtype, device))
                        or real(spec, dtype, device))
    study, [job], store, table = tiny_study(training="  dtype: bfloat16\n", store="bf16-read")
    meta = json.loads((train_adapter(job, store, table) / ADAPTER_META_FILE).read_text())
    device = job.settings.placement.torch_device()  # the CPU here; a GPU where torch sees one
    assert read == [("bfloat16", device)] and meta["dtype"] == "bfloat16" and meta["device"] == str(device)
    assert all(v == v for v in meta["loss_curve"])


def test_packing_false_trains_every_example_in_a_padded_row_of_its_own(tiny_study, monkeypatch):
    def no_packing(*args, **kwargs):
        raise AssertionError("packed with packing: false")

    monkeypatch.setattr(loop, "_pack", no_packing)
    study, [job], store, table = tiny_study(training="  packing: false\n", store="padded")
    meta = json.loads((train_adapter(job, store, table) / ADAPTER_META_FILE).read_text())
    assert len(meta["loss_curve"]) == 6 and all(v == v for v in meta["loss_curve"])


def _examples(*lengths):
    from traitlens.train.encode import Encoded

    return [Encoded(list(range(1, n + 1)), [IGNORE] + list(range(2, n + 1))) for n in lengths]


def test_micro_batches_merge_into_passes_up_to_the_limit():
    micro = [_examples(10, 10), _examples(30), _examples(50, 20), _examples(5)]
    tokens = (60, lambda batch: sum(len(e.input_ids) for e in batch))
    passes = loop._passes(micro, tokens)
    # 20 + 30 fit in 60; 50 + 20 is over the limit alone and runs as it is; 5 would push it further.
    assert [[len(e.input_ids) for e in p] for p in passes] == [[10, 10, 30], [50, 20], [5]]
    assert loop._passes(micro, None) == micro


def test_pass_limit_counts_computed_tokens_padding_included():
    from transformers import LlamaConfig

    batch, config = _examples(10, 4), LlamaConfig()
    assert loop._pass_limit(None, config, "cpu", True, 2**30) is None
    limit, cost = loop._pass_limit(100, config, "cpu", True, 2**30)
    assert limit == 100 and cost(batch) == 14
    assert loop._pass_limit(100, config, "cpu", False, 2**30)[1](batch) == 20  # two padded rows of 10


def test_auto_passes_merge_small_micro_batches_of_a_small_model_only(monkeypatch):
    from types import SimpleNamespace

    import torch
    from transformers import LlamaConfig

    from traitlens.models.device import Placement

    def passes(micro, config, memory_gib=64, device="cpu"):
        monkeypatch.setattr("psutil.virtual_memory", lambda: SimpleNamespace(total=memory_gib * 2**30))
        budget = Placement("train", "cpu").memory_budget(torch.device("cpu"))
        return len(loop._passes(micro, loop._pass_limit("auto", config, device, True, budget)))

    reviews = [_examples(*[30] * 8) for _ in range(4)]  # the studies' default step: 4 x 8 short examples
    small = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, vocab_size=49152)  # 135M
    assert passes(reviews, small) == 1
    assert passes(reviews, small, memory_gib=8) == 4  # a pass may take an eighth of the memory
    assert passes([_examples(*[1000] * 8) for _ in range(4)], small) == 4
    eight_b = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, vocab_size=128256)
    assert passes(reviews, eight_b) == 4
    assert passes(reviews, small, device="cuda") == 4  # only CPUs merge passes by themselves


def test_merged_passes_train_the_same_adapter_in_fewer_passes(write_study, tiny_model):
    import torch

    metas, weights = {}, {}
    for setting in ("null", "10000"):
        text = TINY_TRAIN.format(base=tiny_model).replace("dropout: 0.1", "dropout: 0.0").replace(
            "  checkpoint_every: 2\n", f"  checkpoint_every: 2\n  pass_tokens: {setting}\n")
        study = load_study(write_study(text + f"store: passes-{setting}\n", name=f"passes-{setting}.yaml"))
        sources, _ = prepare_study(study)
        [job] = plan_study(study).train_jobs
        path = train_adapter(job, Store(study.store), sources["movie"])
        metas[setting], weights[setting] = json.loads((path / ADAPTER_META_FILE).read_text()), _weights(path)
    assert metas["null"]["passes"] == 12 and metas["10000"]["passes"] == 6  # 6 steps of 2 micro-batches
    assert metas["null"]["tokens_seen"] == metas["10000"]["tokens_seen"]
    assert metas["null"]["loss_curve"] == pytest.approx(metas["10000"]["loss_curve"], rel=1e-4)
    assert all(torch.allclose(weights["null"][k], weights["10000"][k], rtol=1e-3, atol=1e-6) for k in weights["null"])


def test_a_checkpoint_whose_files_changed_is_not_resumed(tiny_study):
    """A checkpoint replaced by other valid files (here: the optimizer state of another step)
    fails its checksums, so the adapter trains from the start rather than from foreign state."""
    from safetensors.torch import load_file, save_file

    study, [job], store, table = tiny_study(store="whole")
    whole = train_adapter(job, store, table)
    study, [job], store, table = tiny_study(store="swapped")
    latest = train_killed_after_checkpoint(job, store, table, step=4)
    tensors = load_file(latest / loop.STATE_TENSORS)
    save_file({k: v * 2 if v.is_floating_point() else v for k, v in tensors.items()}, latest / loop.STATE_TENSORS)
    with pytest.warns(CheckpointWarning, match="differ from their checksums"):
        retrained = train_adapter(job, store, table)
    meta = json.loads((retrained / ADAPTER_META_FILE).read_text())
    assert meta["resumed_from_step"] is None
    a, b = _weights(whole), _weights(retrained)
    assert all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("edit, said", [
    (lambda state: state.update(step=999), "step 999 is not one of this job's"),
    (lambda state: state["scheduler"].update(base_lrs=[1.0] * len(state["scheduler"]["base_lrs"])),
     "scheduler's state is not this job's"),
    (lambda state: state.update(curve=state["curve"][:1]), "1 losses for step 4"),
])
def test_an_edited_checkpoint_with_recomputed_checksums_is_not_resumed(tiny_study, edit, said):
    """Checksums catch damage, not an edit whose author recomputed them; the state itself must
    be one this job can reach, else the adapter trains from the start, naming the file."""
    from traitlens.store.keys import file_digest

    study, [job], store, table = tiny_study(store="whole")
    whole = train_adapter(job, store, table)
    study, [job], store, table = tiny_study(store="edited")
    latest = train_killed_after_checkpoint(job, store, table, step=4)
    state = json.loads((latest / loop.STATE_JSON).read_text())
    edit(state)
    (latest / loop.STATE_JSON).write_text(json.dumps(state))
    (latest / loop.CHECKSUMS).write_text(json.dumps(
        {p.name: file_digest(p) for p in latest.iterdir() if p.name != loop.CHECKSUMS}))
    with pytest.warns(CheckpointWarning, match=f"{latest}.*{said}"):
        retrained = train_adapter(job, store, table)
    assert json.loads((retrained / ADAPTER_META_FILE).read_text())["resumed_from_step"] is None
    a, b = _weights(whole), _weights(retrained)
    assert all((a[k] == b[k]).all() for k in a)
