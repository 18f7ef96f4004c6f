"""Forecasting a study's matrix with a cheap probe (`Study.forecast`, `traitlens forecast`),
read top to bottom: run or compute the probe, store its cells beside the study (never in place
of a measured one), and once the study is finished, write the measured deltas beside its
stored forecasts so that they calibrate later forecasts' intervals (`forecast.calibrate`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from traitlens.analysis.results import Results, study_diagonal
from traitlens.config.schema import Study as StudyConfig
from traitlens.errors import TraitlensError
from traitlens.forecast.calibrate import stored_width
from traitlens.forecast.cost import StudyCost
from traitlens.progress import working

if TYPE_CHECKING:
    from rich.console import Console

    from traitlens.analysis.features import Features
    from traitlens.forecast.quality import ForecastQuality
    from traitlens.models.device import Placement
    from traitlens.recipes.workspace import Workspace
    from traitlens.store.db import Store

PROBE_KINDS = ("short", "gradient", "combined")


@dataclass
class ProbeForecast:
    """`Study.forecast`: the probe kind (`probe`), the share of the full study's compute it
    spent (`spent`; `tokens` of `full_tokens`), the forecast (`delta`, sources x targets) with
    its interval bounds (`low`, `high`: NaN until finished studies in the store calibrate
    them). The short probe's `delta` is extrapolated to the full step count; `study`, `last`
    and `results` are its longer probe study, that study's own deltas and its results. The
    gradient probe's `delta` is an affinity score (a cosine), which ranks sources per target.
    The combination's `delta` is in delta units, read from its `components` by a ridge fitted
    on the finished studies it was `learned_on`, which also set its intervals.

    Example:
        >>> probe = study.forecast(budget=0.2)
        >>> probe.results.traits().loadings_.round(2)
    """

    probe: str
    spent: float
    tokens: int
    full_tokens: int
    delta: pd.DataFrame
    low: pd.DataFrame
    high: pd.DataFrame
    study: Any = None  # the longer probe as a `traitlens.Study`
    last: pd.DataFrame | None = None
    results: Results | None = None
    short: Any = None  # the half-length probe as a `traitlens.Study`; None where the budget paid for one length
    components: tuple[tuple[str, float, float], ...] = ()  # the combination's stored probes: (probe, budget, spent)
    learned_on: tuple[str, ...] = ()  # the finished studies the combination was fitted on


def forecast(ws: Workspace, budget: float, probe: str, run_part: Callable[[StudyConfig], tuple[Any, Results]],
             features: Callable[[], Features]) -> ProbeForecast:
    """The whole forecast (`Study.forecast`): the probe within `budget` of the full study's
    compute, its cells stored beside the study's, and the measured deltas beside them where the
    study is finished. `run_part`: runs a probe study (the short probe); `features`: the study's
    dataset features (the combination)."""
    if probe not in PROBE_KINDS:
        raise TraitlensError(f"probe {probe!r} is not one of {', '.join(PROBE_KINDS)}.")
    prepared = ws.prepared()
    cost_of = ws.cost_of(prepared)
    full, store = cost_of(ws.config), ws.store(create=True)
    if probe == "short":
        result = short_forecast(ws.config, budget, full, cost_of, run_part)
    elif probe == "gradient":
        result = gradient_forecast(ws.config, ws.plan().placements["probe"], budget, full, prepared, ws.console)
    else:
        result = combined_forecast(ws.config, budget, full, store, features)
    with store.locked(f"traitlens forecast {ws.file}"):
        store_forecast(store, ws.config.name, result, budget)
        record_measured(store, ws.config.name, ws.measured)
    return result


def quality(ws: Workspace, result: ProbeForecast) -> ForecastQuality | None:
    """`Study.forecast_quality`: `result` against the finished matrix (None until finished),
    the trait congruence with as many traits as the study's own analysis finds."""
    from traitlens.forecast.quality import forecast_quality

    if (measured := ws.measured()) is None:
        return None
    settings = ws.config.analysis
    return forecast_quality(result.delta, measured, len(ws.results().traits().names_), result.low, result.high,
                            rotation=settings.rotation, standardize=settings.standardize)


def short_forecast(config: StudyConfig, budget: float, full: StudyCost, cost_of: Callable[[StudyConfig], StudyCost],
                   run_part: Callable[[StudyConfig], tuple[Any, Results]]) -> ProbeForecast:
    """The short-training probe (`forecast.short`): its one or two lengths run by `run_part`,
    each cell extrapolated along its learning curve to the full step count."""
    from traitlens.forecast.short import extrapolate, probe_study

    planned = probe_study(config, budget, full, cost_of)
    runs = {part.name: run_part(part) for part in filter(None, (planned.short, planned.long))}
    long, results = runs[planned.long.name]
    last = delta = results.matrix("delta")
    if planned.short:
        delta = extrapolate(runs[planned.short.name][1].matrix("delta"), last, planned.short.training.max_steps,
                            planned.long.training.max_steps, int(full.training["steps"].min()))
    none = pd.DataFrame(float("nan"), index=delta.index, columns=delta.columns)
    return ProbeForecast("short", planned.tokens / full.total, planned.tokens, full.total, delta, none, none.copy(),
                         long, last, results, runs[planned.short.name][0] if planned.short else None)


def gradient_forecast(config: StudyConfig, placement: Placement, budget: float, full: StudyCost, prepared,
                      console: Console) -> ProbeForecast:
    """The gradient-affinity probe (`forecast.gradient`): no training; a cosine per pair."""
    from traitlens.forecast.gradient import gradient_affinity, gradient_encodings, probe_size

    encoded = gradient_encodings(config, *prepared)
    examples, tokens = probe_size({**encoded[0], **{f"target {k}": v for k, v in encoded[1].items()}},
                                  budget * full.total)
    diagonal = study_diagonal(config) if config.analysis.mask_diagonal else set()
    with working(console, f"gradient probe: {examples} examples per dataset"):
        affinity = gradient_affinity(config, placement, *encoded, examples, diagonal)
    none = pd.DataFrame(float("nan"), index=affinity.index, columns=affinity.columns)
    return ProbeForecast("gradient", tokens / full.total, tokens, full.total, affinity, none, none.copy())


def combined_forecast(config: StudyConfig, budget: float, full: StudyCost, store: Store,
                      features: Callable[[], Features]) -> ProbeForecast:
    """The combination (`forecast.combine`): this study's stored probes within `budget`, read by
    a ridge learned on the finished studies in `store` forecast the same way; `features`: this
    study's dataset features (computed on first use)."""
    from traitlens.analysis.features import Features
    from traitlens.forecast.combine import combine, components, stored_table

    stored = store.forecasts()
    chosen = components(stored, config.name, budget)
    finished = {}
    for name in stored.loc[stored["measured"].notna() & (stored["study"] != config.name), "study"].unique():
        saved = store.analysis(name, "features")
        table = stored_table(stored, name, chosen, Features.from_json(saved[1]) if saved else None)
        if table is not None and table["delta"].notna().any():
            finished[name] = table
    forecast = combine(finished, stored_table(stored, config.name, chosen, features()))
    spent = sum(s for *_, s in chosen)
    return ProbeForecast("combined", spent, round(spent * full.total), full.total, forecast.delta, forecast.low,
                         forecast.high, components=tuple(chosen), learned_on=tuple(finished))


def store_forecast(store: Store, study: str, result: ProbeForecast, budget: float) -> None:
    """Store the forecast's cells; a short or gradient forecast first gets the interval width
    that finished studies' forecasts of the same kind calibrate (the combination has its own)."""
    if result.probe != "combined":
        width = stored_width(store.forecasts(), result.probe, budget, study)
        if width is not None:
            result.low, result.high = result.delta - width, result.delta + width
    cells = pd.concat({column: frame.rename_axis(index="source", columns="target").stack(future_stack=True)
                       for column, frame in (("delta", result.delta), ("low", result.low), ("high", result.high))},
                      axis=1).reset_index().dropna(subset=["delta"]).assign(measured=float("nan"))
    store.put_forecast(study, result.probe, budget, result.spent, cells)


def record_measured(store: Store, study: str, measured: Callable[[], pd.DataFrame | None]) -> None:
    """Write the measured deltas beside `study`'s stored forecasts, once it has them all
    (`measured()`: its delta matrix, or None while jobs are left; read only when needed)."""
    stored = store.forecasts(study)
    if stored.empty or not stored["measured"].isna().any() or (matrix := measured()) is None:
        return
    for (probe, budget, spent), cells in stored.groupby(["probe", "budget", "spent"]):
        cells = cells.assign(measured=[matrix.at[s, t] if s in matrix.index and t in matrix.columns
                                       else float("nan") for s, t in zip(cells["source"], cells["target"])])
        store.put_forecast(study, probe, budget, spent, cells)
