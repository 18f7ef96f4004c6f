"""What a study costs in compute, counted in tokens through the model, so that a forecast's
budget can be a share of the full study's cost on any machine.

The count, in forward-token units:
- training: every token of every example an optimizer step uses (prompt, answer and end token,
  cut at `max_length`), times TRAIN_PASSES. A backward pass costs about two forwards, so a
  trained token counts as three.
- evaluation, for every model (the base and each adapter) on each target's scored items:
  - each item's prompt once;
  - each choice's own tokens (labels, option letters or option texts);
  - a generated answer counts its full `max_new_tokens`, the most it can cost.

The scorer's shared-prefix cache and early stops make real evaluation cheaper than this count.
The count is an upper bound, and the same one for a study and for its forecast. Wall time is
not used because it depends on the machine; tokens do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from traitlens.config.schema import BASE, Study, Target
from traitlens.data.template import render
from traitlens.data.load import OPTION_LINE
from traitlens.evaluate.targets import select_items
from traitlens.train.encode import encode_table
from traitlens.train.loop import plan_training

TRAIN_PASSES = 3  # forward + backward, in forward-pass units


@dataclass(frozen=True)
class StudyCost:
    """`training`: one row per (source, seed) with its steps, examples seen and cost.
    `evaluation`: one row per (model, target) with its items and cost. Costs are in
    forward-token units (see the module docstring)."""

    training: pd.DataFrame
    evaluation: pd.DataFrame

    @property
    def total(self) -> int:
        return int(self.training["cost"].sum() + self.evaluation["cost"].sum())

    @property
    def without_base(self) -> int:
        """The total less the base model's evaluation: what a variant of a study adds when it
        scores the same items as another (their base cells have the same keys and run once)."""
        return self.total - int(self.evaluation.loc[self.evaluation["model"] == BASE, "cost"].sum())


def study_cost(study: Study, sources: dict[str, pd.DataFrame], targets: dict[str, pd.DataFrame],
               tokenizer: Any) -> StudyCost:
    """The full study's cost: `sources` and `targets` are the prepared tables
    (`data.load.prepare_study`), `tokenizer` the base model's."""
    training = []
    for source in study.sources:
        lengths = [len(e.input_ids) for e in encode_table(sources[source.name], source.template, tokenizer,
                                                          study.training.loss_mode, study.training.max_length)]
        for seed in study.training.seeds:
            steps, tokens, examples, validation = training_tokens(lengths, study, seed, source.name)
            training.append({"source": source.name, "seed": seed, "steps": steps, "examples": examples,
                             "tokens": tokens, "validation_tokens": validation,
                             "cost": TRAIN_PASSES * tokens + validation})
    models = [BASE] + [f"{s.name}@{seed}" for s in study.sources for seed in study.training.seeds]
    evaluation = []
    for target in study.targets:
        items = select_items(targets[target.name], target.limit or study.evaluation.limit, study.evaluation.seed)
        tokens = evaluation_tokens(target, items, tokenizer)
        evaluation += [{"model": model, "target": target.name, "items": len(items), "cost": tokens}
                       for model in models]
    return StudyCost(pd.DataFrame(training, columns=["source", "seed", "steps", "examples", "tokens",
                                                     "validation_tokens", "cost"]),
                     pd.DataFrame(evaluation, columns=["model", "target", "items", "cost"]))


def training_tokens(lengths: list[int], study: Study, seed: int, source: str) -> tuple[int, int, int, int]:
    """(steps, tokens, examples, validation tokens) of one adapter's training: the examples each
    step draws, in the trainer's own plan (`train.loop.plan_training`), and the held-out examples
    once per validation measurement (forward only). Steps are the planned ones: early stopping
    can only spend less."""
    plan = plan_training(study.training, lengths, seed, source)
    tokens = examples = 0
    for step in range(plan.steps):
        for rows in plan.step_rows(step):
            tokens += sum(lengths[i] for i in rows)
            examples += len(rows)
    measurements = 0 if plan.every is None else 1 + plan.steps // plan.every + (plan.steps % plan.every > 0)
    return plan.steps, tokens, examples, measurements * sum(lengths[i] for i in plan.holdout_rows)


def evaluation_tokens(target: Target, items: pd.DataFrame, tokenizer: Any) -> int:
    """Tokens one model spends on `items` of `target`: prompts once, every choice's tokens,
    and each generation's full `max_new_tokens`."""
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
    total = 0
    for row in items.to_dict("records"):
        total += len(tokenizer(render(target.template, row, tokenizer).prompt, add_special_tokens=True)["input_ids"])
        if target.kind == "classification":
            total += sum(count(label) for label in target.labels)
        elif target.kind == "multiple_choice":
            options = OPTION_LINE.findall(row.get("options") or "")
            total += sum(count(letter if target.choices == "letters" else text) for letter, text in options)
        else:
            total += target.generation.max_new_tokens
    return total


def design_cost(cost: StudyCost, seeds_now: int):
    """`cost(seeds, items)` of the same study with `seeds` adapters per source and `items` items
    per target, as a share of this study's cost: training scales with the seeds, evaluation
    with the models (base + sources x seeds) and the items."""
    price = length_design_cost(cost, seeds_now)
    return lambda seeds, items: price(None, seeds, items)


def length_design_cost(cost: StudyCost, seeds_now: int):
    """`cost(steps, seeds, items)`: as `design_cost`, with every adapter trained for `steps`
    optimizer steps (None: as this study trains them); a step costs what this study's average
    step of that source does."""
    per_seed = cost.training["cost"].sum() / max(seeds_now, 1)
    per_step = (cost.training["cost"] / cost.training["steps"].clip(lower=1)).sum() / max(seeds_now, 1)
    evaluation = cost.evaluation.groupby("target").agg(cost=("cost", "sum"), items=("items", "first"))
    models = cost.evaluation["model"].nunique()
    per_model_item = (evaluation["cost"] / evaluation["items"].clip(lower=1)).sum() / max(models, 1)
    sources = cost.training["source"].nunique()
    return lambda steps, seeds, items: ((seeds * (per_seed if steps is None else steps * per_step)
                                         + (1 + sources * seeds) * items * per_model_item) / max(cost.total, 1))
