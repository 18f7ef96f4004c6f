"""Source-quality proxy: how surprising a source's answers are to the base model.

The perplexity of the answers given their prompts, before any training (the paper's quality
baseline to compare hidden statistics with), scored through the scorer's batched, cached
log-likelihood path.
"""

from __future__ import annotations

import math

import pandas as pd

from traitlens.config.schema import Template
from traitlens.data.template import render
from traitlens.models.scorer import ChoiceRequest, Scorer


def answer_perplexity(scorer: Scorer, table: pd.DataFrame, template: Template, sample: int = 64,
                      seed: int = 0) -> float:
    rows = table.sample(n=min(sample, len(table)), random_state=seed).to_dict("records")
    rendered = [render(template, row, scorer.tokenizer) for row in rows]
    scores = scorer.loglikelihood([ChoiceRequest(r.prompt, (r.answer,)) for r in rendered if r.answer])
    tokens = sum(s.tokens[0] for s in scores)
    return math.exp(-sum(s.logprobs[0] for s in scores) / tokens) if tokens else float("nan")
