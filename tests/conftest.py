from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MINIMAL = """\
name: tiny
base: smollm2-135m-instruct
sources:
  - name: movie
    dataset: catalog:sentiment-movie
    labels: [negative, positive]
  - name: boolq
    dataset: catalog:boolq
targets:
  - name: movie
    dataset: catalog:sentiment-movie
    kind: classification
    labels: [negative, positive]
    abilities: [sentiment]
  - name: asdiv
    dataset: catalog:asdiv
    kind: generative
    abilities: [arithmetic]
    generation: {max_new_tokens: 12}
evaluation:
  limit: 4
  dtype: float32
training:
  learning_rate: 0.001
  max_steps: 4
  dtype: float32
"""


@pytest.fixture
def write_study(tmp_path: Path):
    """Write a study file (default: a small valid one) and return its path."""

    def write(text: str = MINIMAL, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A real Llama architecture with random weights, small enough to train in milliseconds,
    with the catalog model's real tokenizer. Saved as a local model folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from traitlens.models.load import materialize_catalog_model

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(materialize_catalog_model("smollm2-135m-instruct"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


TINY_TRAIN = """\
name: tiny-train
base: {base}
sources:
  - name: movie
    dataset: catalog:sentiment-movie
    labels: [negative, positive]
    template: {{instruction: "Sentiment?", trigger: Sentiment}}
    transforms: [{{subsample: 24}}]
targets:
  - name: movie
    dataset: catalog:sentiment-movie
    kind: classification
    labels: [negative, positive]
    abilities: [sentiment]
lora: {{r: 4, alpha: 8, dropout: 0.1}}
training:
  learning_rate: 0.01
  warmup_steps: 1
  max_steps: 6
  batch_size: 4
  gradient_accumulation: 2
  max_length: 64
  checkpoint_every: 2
  dtype: float32
evaluation: {{limit: 8, dtype: float32}}
"""

# Put in place of "targets:\n" in TINY_TRAIN: a second source (tweets) and a second target (amazon).
MORE_SOURCES = """\
  - name: tweets
    dataset: catalog:sentiment-tweets
    transforms: [{subsample: 16}]
targets:
  - name: amazon
    dataset: catalog:sentiment-amazon
    kind: classification
    labels: [negative, positive]
    abilities: [sentiment]
"""


EVIL = "<script>alert(1)</script>"
EVIL_LABEL = "neg<img src=x onerror=alert(2)>"


@pytest.fixture(scope="session")
def report(tmp_path_factory, tiny_model) -> Path:
    """A finished study with four targets (one of each kind, one with HTML in its labels and
    texts), scored by the fake scorer, explained (features from the tiny model) and reported
    with `traitlens report`: the page's path; the study is study.yaml beside it."""
    folder = tmp_path_factory.mktemp("report-study")
    rows = [{"input": f"{EVIL} review {i}", "answer": EVIL_LABEL if i % 2 else "pos"} for i in range(40)]
    for split, part in (("train", rows[:24]), ("test", rows[24:])):
        (folder / "evil").mkdir(exist_ok=True)
        (folder / "evil" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    text = TINY_TRAIN.format(base=tiny_model).replace("targets:\n", f"""\
  - name: tweets
    dataset: catalog:sentiment-tweets
    transforms: [{{subsample: 16}}]
  - name: evil
    dataset: ./evil
    labels: ["{EVIL_LABEL}", pos]
targets:
  - name: evil
    dataset: ./evil
    kind: classification
    labels: ["{EVIL_LABEL}", pos]
    abilities: [injection]
  - name: amazon
    dataset: catalog:sentiment-amazon
    kind: classification
    labels: [negative, positive]
    abilities: [sentiment]
  - name: arithmetic
    dataset: catalog:arithmetic
    kind: generative
    abilities: [arithmetic]
""").replace("evaluation: {limit: 8, dtype: float32}", "evaluation: {limit: 40, dtype: float32}\nanalysis: {bootstrap_samples: 30, mask_diagonal: false}")
    path = folder / "study.yaml"
    path.write_text(text)
    from rich.console import Console

    from traitlens.config import load_study
    from traitlens.data.load import prepare_study
    from traitlens.execution.local import run_plan
    from traitlens.execution.plan import plan_study
    from traitlens.models.fake import FakeScorer
    from traitlens.store import Store

    study = load_study(path)
    sources, targets = prepare_study(study)
    summary = run_plan(plan_study(study), Store(study.store), sources, targets, Console(quiet=True),
                       make_scorer=lambda s: FakeScorer())
    assert not summary.failed
    for command in (["explain", str(path)], ["report", str(path), "-o", str(folder / "out.html")]):
        result = subprocess.run([sys.executable, "-m", "traitlens", *command], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    return folder / "out.html"


def train_killed_after_checkpoint(job, store, table, step: int):
    """Train until the checkpoint of `step` is written, then die as a killed process would;
    return the checkpoint folder."""
    from traitlens.train import loop
    from traitlens.train.loop import train_adapter

    real_checkpoint = loop._checkpoint

    def checkpoint_then_die(folder, model, optimizer, scheduler, state, device):
        real_checkpoint(folder, model, optimizer, scheduler, state, device)
        if state["step"] == step:
            raise KeyboardInterrupt("killed")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(loop, "_checkpoint", checkpoint_then_die)
        train_adapter(job, store, table)
    return store.artifacts / "checkpoints" / job.key / "latest"
