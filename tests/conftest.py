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
training:
  learning_rate: 0.001
  max_steps: 4
"""


@pytest.fixture
def write_study(tmp_path: Path):
    """Write a study file (default: a small valid one) and return its path."""

    def write(text: str = MINIMAL, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write
