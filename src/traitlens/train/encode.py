"""Examples to token ids with a loss mask, for each of the paper's loss modes.

- full: every token carries loss (the paper's main setting);
- completion: only the answer (and the end-of-sequence token after it);
- prompt: only the prompt, the answer masked out (the paper's ablation).

Prompt and answer are tokenized separately at the same boundary evaluation uses
(`token_boundary`), so training sees exactly the tokens evaluation will score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from traitlens.config.schema import Template
from traitlens.data.template import render, token_boundary

IGNORE = -100  # label of a token that carries no loss


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # the token itself where it carries loss, IGNORE elsewhere

    @property
    def loss_tokens(self) -> int:
        # The first token is never predicted (nothing comes before it).
        return sum(1 for label in self.labels[1:] if label != IGNORE)


def encode_example(prompt: str, answer: str, tokenizer: Any, loss_mode: str, max_length: int) -> Encoded:
    prompt, answer = token_boundary(prompt, answer)
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        answer_ids = answer_ids + [tokenizer.eos_token_id]  # teach the model to stop
    ids = (prompt_ids + answer_ids)[:max_length]
    in_answer = [False] * len(prompt_ids) + [True] * len(answer_ids)
    keep = {"full": lambda a: True, "completion": lambda a: a, "prompt": lambda a: not a}[loss_mode]
    labels = [token if keep(a) else IGNORE for token, a in zip(ids, in_answer)]
    return Encoded(ids, labels)


def encode_table(table: pd.DataFrame, template: Template, tokenizer: Any, loss_mode: str,
                 max_length: int) -> list[Encoded]:
    out = []
    for row in table.to_dict("records"):
        rendered = render(template, row, tokenizer)
        out.append(encode_example(rendered.prompt, rendered.answer, tokenizer, loss_mode, max_length))
    return out
