"""The short-training probe: the same study with every adapter trained for a fraction of its steps
and every target scored on a fraction of its items, within a budget counted by `forecast.cost`.

The probe is an ordinary study, run by the ordinary pipeline: resumable, on Ray if the study
uses it, into the same store. Its step count and item limits enter its jobs' keys, so its
adapters and cells are stored beside the full study's and never replace them. Its name records
the budget (`<study>-probe-20` for 0.2).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from traitlens.config.schema import Study
from traitlens.errors import TraitlensError
from traitlens.forecast.cost import StudyCost

MIN_ITEMS = 16  # below this a target's delta is mostly item noise


def probe_study(study: Study, budget: float, full: StudyCost, cost_of: Callable[[Study], StudyCost]
                ) -> tuple[Study, StudyCost]:
    """A probe of `study` whose cost (`cost_of`) is within `budget` x `full.total`: steps (and
    warm-up) and item limits scaled by the budget, then shrunk by a tenth at a time until it fits.
    Where sources train for different step counts (epochs, not `max_steps`), the probe's
    `max_steps` scales the fewest, so that no adapter trains longer than in the full study.
    Raises a `TraitlensError` when even one step and MIN_ITEMS items per target cost more."""
    if not 0 < budget < 1:
        raise TraitlensError(f"--budget must be a fraction of the full study's cost between 0 and 1; got {budget}")
    steps = int(full.training["steps"].min())
    items = full.evaluation.drop_duplicates("target").set_index("target")["items"]
    fraction = budget
    while True:
        probe = _scaled(study, budget, fraction, steps, items)
        cost = cost_of(probe)
        if cost.total <= budget * full.total:
            return probe, cost
        if probe.training.max_steps == 1 and all(t.limit <= MIN_ITEMS for t in probe.targets):
            raise TraitlensError(
                f"a budget of {budget} is {budget * full.total:,.0f} tokens, less than the smallest probe "
                f"(1 step per adapter, {MIN_ITEMS} items per target: {cost.total:,} tokens); raise --budget.")
        fraction *= 0.9


def _scaled(study: Study, budget: float, fraction: float, steps: int, items) -> Study:
    training = study.training.model_copy(update={
        "max_steps": max(1, math.floor(fraction * steps)),
        "warmup_steps": math.floor(fraction * study.training.warmup_steps)})
    targets = [t.model_copy(update={"limit": min(int(items[t.name]), max(MIN_ITEMS, math.floor(fraction * items[t.name])))})
               for t in study.targets]
    return study.model_copy(update={"name": f"{study.name}-probe-{round(budget * 100):g}", "training": training,
                                    "targets": targets})
