"""Each target kind: which requests it sends a scorer, and how it scores the answers.

| kind                      | request        | prediction                                  |
|---------------------------|----------------|---------------------------------------------|
| classification            | loglikelihood  | the label with the highest log-probability  |
| multiple_choice           | loglikelihood  | the option letter (or text) scoring highest |
| generation_classification | generate       | the label the output starts with, else invalid |
| generative                | generate       | the final number of the output (exact match)|
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from traitlens.config.schema import Target
from traitlens.data.load import OPTION_LINE
from traitlens.data.template import render
from traitlens.evaluate.metrics import final_number, numbers_equal, parse_label
from traitlens.models.scorer import ChoiceRequest, GenerateRequest, Scorer



def select_items(table: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """The items a cell scores: a seeded sample of `limit`, the same for every model."""
    if limit is None or len(table) <= limit:
        return table
    return table.sample(n=limit, random_state=seed).sort_index()


def prompts(target: Target, items: pd.DataFrame, scorer: Scorer) -> list[str]:
    return [render(target.template, row, scorer.tokenizer).prompt for row in items.to_dict("records")]


def evaluate_target(target: Target, items: pd.DataFrame, scorer: Scorer) -> list[dict[str, Any]]:
    """Score `items` of `target` with the scorer's active model; one result dict per item."""
    return evaluate_models(target, items, scorer, None)[0]


def evaluate_models(target: Target, items: pd.DataFrame, scorer: Scorer, adapters: list[str | None] | None
                    ) -> list[list[dict[str, Any]]]:
    """Score `items` of `target` with each of `adapters` (keys the scorer has loaded; None for
    the base) in shared batches (`Scorer.loglikelihood_mixed`), or with the active model alone
    when `adapters` is None: one list of result dicts per model."""
    contexts = prompts(target, items, scorer)
    rows = items.to_dict("records")
    if target.kind == "classification":
        answers = _ask(scorer, "loglikelihood", [ChoiceRequest(c, tuple(target.labels)) for c in contexts], adapters)
        return [[_choice_item(row["answer"], list(target.labels), s.logprobs) for row, s in zip(rows, scores)]
                for scores in answers]
    if target.kind == "multiple_choice":
        return _multiple_choice(target, rows, contexts, scorer, adapters)
    requests = [GenerateRequest(c, target.generation.max_new_tokens, tuple(target.generation.stop)) for c in contexts]
    return [[_generated_item(target, row, generation) for row, generation in zip(rows, generations)]
            for generations in _ask(scorer, "generate", requests, adapters)]


def _ask(scorer: Scorer, method: str, requests: list, adapters: list[str | None] | None) -> list[list]:
    if adapters is None:
        return [getattr(scorer, method)(requests)]
    return getattr(scorer, f"{method}_mixed")(requests, adapters)


def _generated_item(target: Target, row: dict, generation: Any) -> dict[str, Any]:
    gold = row["answer"]
    if target.kind == "generation_classification":
        prediction = parse_label(generation.text, list(target.labels))
        correct = prediction == gold
    else:
        prediction = final_number(generation.text)
        correct = numbers_equal(prediction, final_number(gold))
    return {"gold": gold, "prediction": prediction, "score": float(correct),
            "generated": generation.text, "generated_tokens": generation.tokens}


def label_set(target: Target, items: pd.DataFrame) -> list[str] | None:
    """The labels metrics are computed over: the target's, or the option letters seen."""
    if target.kind in ("classification", "generation_classification"):
        return list(target.labels)
    if target.kind == "multiple_choice":
        letters = {letter for options in items["options"] for letter, _ in OPTION_LINE.findall(options)}
        return sorted(letters | set(items["answer"]))
    return None


def _multiple_choice(target: Target, rows: list[dict], contexts: list[str], scorer: Scorer,
                     adapters: list[str | None] | None) -> list[list[dict]]:
    options = [OPTION_LINE.findall(row.get("options") or "") for row in rows]
    for row, parsed in zip(rows, options):
        if row["answer"] not in {letter for letter, _ in parsed}:
            raise ValueError(f"item {row['input'][:60]!r}: answer {row['answer']!r} is not one of its "
                             "option letters; multiple_choice needs options written 'A. ...' per line")
    if target.choices == "letters":
        requests = [ChoiceRequest(c, tuple(letter for letter, _ in parsed)) for c, parsed in zip(contexts, options)]
    else:
        requests = [ChoiceRequest(c, tuple(text for _, text in parsed)) for c, parsed in zip(contexts, options)]
    models = []
    for answers in _ask(scorer, "loglikelihood", requests, adapters):
        out = []
        for row, parsed, scores in zip(rows, options, answers):
            logprobs = scores.logprobs
            if target.length_normalized:
                logprobs = tuple(lp / n for lp, n in zip(logprobs, scores.tokens))
            out.append(_choice_item(row["answer"], [letter for letter, _ in parsed], logprobs))
        models.append(out)
    return models


def _choice_item(gold: str, choices: list[str], logprobs: tuple[float, ...]) -> dict[str, Any]:
    if not all(math.isfinite(lp) for lp in logprobs):  # argmax over NaN would pick the first choice
        raise ValueError(f"non-finite log-probabilities {logprobs} for choices {choices}: the model's weights are "
                         "damaged (NaN or infinite); no prediction is made from them.")
    best = max(range(len(choices)), key=lambda i: logprobs[i])
    return {"gold": gold, "prediction": choices[best], "score": float(choices[best] == gold),
            "choice_logprobs": dict(zip(choices, logprobs))}
