"""The short-training probe: the same study with every adapter trained for a fraction of its steps
and every target scored on a fraction of its items, within a budget counted by `forecast.cost`.

It trains one seed (the study's first: the forecast is of the seed mean, and a second seed
would double the evaluation) at two lengths, `long` (the most steps the budget allows) and
`short` (half of them), and scores both on the same items; what the budget leaves after that
buys more items. The forecast extrapolates each cell
along a learning curve through the two, linear in log(steps), to the full study's step count
(`extrapolate`). Where the budget cannot pay for both lengths with MIN_ITEMS items per target,
only `long` runs and the forecast is its deltas.

Each length is an ordinary study, run by the ordinary pipeline: resumable, on Ray if the study
uses it, into the same store. Its step count and item limits enter its jobs' keys, so its
adapters and cells are stored beside the full study's and never replace them. The names record
the budget: `<study>-probe-20` and `<study>-probe-20-half` for 0.2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from traitlens.config.schema import Study
from traitlens.errors import TraitlensError
from traitlens.forecast.cost import StudyCost

MIN_ITEMS = 16  # below this a target's delta is mostly item noise


@dataclass(frozen=True)
class Probe:
    """The two probe studies (`short` is None when the budget pays for one length: no curve) and their
    cost in forward tokens, the base model's evaluation counted once: both score the same items,
    so the base cells have the same keys and are run once."""

    long: Study
    short: Study | None
    tokens: int


def probe_study(study: Study, budget: float, full: StudyCost, cost_of: Callable[[Study], StudyCost]) -> Probe:
    """The probe of `study` whose cost (`cost_of`) is within `budget` x `full.total`: steps (and
    warm-up) and item limits scaled by the budget, then shrunk by a tenth at a time until it fits.
    Where sources train for different step counts (epochs, not `max_steps`), the probe's
    `max_steps` scales the fewest, so that no adapter trains longer than in the full study.
    Raises a `TraitlensError` when even one step and MIN_ITEMS items per target cost more."""
    if not 0 < budget < 1:
        raise TraitlensError(f"--budget must be a fraction of the full study's cost between 0 and 1; got {budget}")
    steps = int(full.training["steps"].min())
    items = full.evaluation.drop_duplicates("target").set_index("target")["items"]
    for curve in (True, False):
        fraction = budget
        while True:
            long = _scaled(study, budget, fraction, steps, items)
            short = _half(long) if curve and long.training.max_steps >= 2 else None
            tokens = cost_of(long).total + (cost_of(short).without_base if short else 0)
            if tokens <= budget * full.total and (short or not curve):
                return _more_items(Probe(long, short, tokens), items, budget * full.total, cost_of)
            if long.training.max_steps <= (2 if curve else 1) and all(t.limit <= MIN_ITEMS for t in long.targets):
                break  # the smallest probe of this kind is over budget
            fraction *= 0.9
    raise TraitlensError(
        f"a budget of {budget} is {budget * full.total:,.0f} tokens, less than the smallest probe "
        f"(1 step per adapter, {MIN_ITEMS} items per target: {tokens:,} tokens); raise --budget.")


def _more_items(probe: Probe, items, limit: float, cost_of: Callable[[Study], StudyCost]) -> Probe:
    """Spend what the budget has left on items, a tenth more per target at a time: a probe's
    deltas are mostly item noise, and its steps are already as many as the budget's share."""
    while True:
        targets = [t.model_copy(update={"limit": min(int(items[t.name]), math.ceil(1.1 * t.limit))})
                   for t in probe.long.targets]
        if [t.limit for t in targets] == [t.limit for t in probe.long.targets]:
            return probe  # every target at the full study's items
        long = probe.long.model_copy(update={"targets": targets})
        short = probe.short.model_copy(update={"targets": targets}) if probe.short else None
        tokens = cost_of(long).total + (cost_of(short).without_base if short else 0)
        if tokens > limit:
            return probe
        probe = Probe(long, short, tokens)


def extrapolate(short: pd.DataFrame, long: pd.DataFrame, short_steps: int, long_steps: int,
                full_steps: int) -> pd.DataFrame:
    """Each cell's delta at `full_steps`, on the line through (log steps, delta) of the two probes.

    The slope of one cell is the difference of two noisy deltas, and the extrapolation multiplies
    it by log(full / long) / log(long / short) (2.3 from 4 and 2 steps to 20). Each target's slopes
    are therefore shrunk towards their mean by the reliability of a difference of two parallel
    measurements (classical test theory): r (sd_long - sd_short)^2 / var(long - short), with r
    the correlation of the two probes over sources. Where the two probes agree, only the spread
    they gained is kept; where they disagree, the target's mean slope is."""
    growth = math.log(full_steps / long_steps) / math.log(long_steps / short_steps)
    out = long.copy()
    for target in long.columns:
        pair = pd.DataFrame({"long": long[target], "short": short[target]}).dropna()
        if pair.empty:
            continue
        slope = pair["long"] - pair["short"]
        reliability = 0.0
        if len(pair) > 2 and slope.var() > 0 and pair["long"].std() > 0 and pair["short"].std() > 0:
            r = max(0.0, float(np.corrcoef(pair["long"], pair["short"])[0, 1]))
            reliability = min(1.0, r * (pair["long"].std() - pair["short"].std()) ** 2 / slope.var())
        shrunk = slope.mean() + reliability * (slope - slope.mean())
        out.loc[pair.index, target] = pair["long"] + growth * shrunk
    return out


def _scaled(study: Study, budget: float, fraction: float, steps: int, items) -> Study:
    training = study.training.model_copy(update={
        "max_steps": max(1, math.floor(fraction * steps)), "seeds": study.training.seeds[:1],
        "warmup_steps": math.floor(fraction * study.training.warmup_steps)})
    targets = [t.model_copy(update={"limit": min(int(items[t.name]), max(MIN_ITEMS, math.floor(fraction * items[t.name])))})
               for t in study.targets]
    return study.model_copy(update={"name": f"{study.name}-probe-{round(budget * 100):g}", "training": training,
                                    "targets": targets})


def _half(long: Study) -> Study:
    training = long.training.model_copy(update={"max_steps": long.training.max_steps // 2,
                                                "warmup_steps": long.training.warmup_steps // 2})
    return long.model_copy(update={"name": f"{long.name}-half", "training": training})
