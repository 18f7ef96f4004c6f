from __future__ import annotations

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
