"""The pilot: train a few sources at several lengths and seeds, score them on a sample of the
targets, and recommend the length, seeds and items of the full study (docs/design-a-study.md).

Read top to bottom: choose the sources and targets (`pick_sources`, `pick_targets`), build one
ordinary study per length (`pilot_parts`), check their summed cost against the budget, run each
part through the ordinary pipeline (resumable, into the study's store: each part's step count is
in its jobs' keys), then measure and recommend (`analysis.pilot.summarise_pilot`) and write the
pilot's page (`pilot`, which `Study.pilot` calls).

Every part trains with the study's own settings except its length (`max_steps`), its seeds and
its seed streams; where the study holds out no validation slice, each part holds out 16 examples
per source and measures their loss four times (no early stopping), so that the pilot reports
how far each adapter's validation loss fell.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from traitlens.analysis.pilot import Pilot, PilotPart, summarise_pilot
from traitlens.analysis.results import Results, study_diagonal
from traitlens.config.schema import Study, Training, Validation
from traitlens.errors import TraitlensError
from traitlens.forecast.cost import StudyCost, length_design_cost
from traitlens.report.pilot_page import write_pilot
from traitlens.store.db import Store

if TYPE_CHECKING:
    from traitlens.config.jobs import Plan
    from traitlens.recipes.workspace import Workspace

PILOT_SOURCES, PILOT_TARGETS, PILOT_SEEDS = 3, 3, (0, 1, 2)
PILOT_HOLDOUT = 16  # examples per source held out for the validation loss, where the study holds none


@dataclass(frozen=True)
class PilotPlan:
    """The pilot's parts (one study per length), what they cost together in forward tokens (the
    base's cells counted once: every part scores the same items), and that as a share of the
    full study."""

    parts: list[Study]
    tokens: int
    share: float


def pick_sources(study: Study, count: int = PILOT_SOURCES) -> list[str]:
    """Spread-out sources: those trained on a target's dataset first (their own-task gain is
    measurable), one family at a time, in the study's order; then the others the same way."""
    home = {source for source, _ in study_diagonal(study)}
    ordered = [s for s in study.sources if s.name in home] + [s for s in study.sources if s.name not in home]
    chosen: list[str] = []
    families: set[str] = set()
    for repeat in (False, True):  # first one per family, then fill up
        for source in ordered:
            if len(chosen) < count and source.name not in chosen and (repeat or source.family_name not in families):
                chosen.append(source.name)
                families.add(source.family_name)
    return chosen


def pick_targets(study: Study, sources: list[str], count: int = PILOT_TARGETS) -> list[str]:
    """The chosen sources' own targets, then targets of abilities not yet covered, in order."""
    chosen = [t for s, t in sorted(study_diagonal(study)) if s in sources]
    chosen = list(dict.fromkeys(chosen))[:count]
    covered = {a for t in study.targets if t.name in chosen for a in t.abilities}
    for repeat in (False, True):
        for target in study.targets:
            if len(chosen) < count and target.name not in chosen and (repeat or not set(target.abilities) <= covered):
                chosen.append(target.name)
                covered |= set(target.abilities)
    return chosen


def pilot_parts(study: Study, sources: list[str], targets: list[str], lengths: list[int], seeds: list[int],
                items: int | None, streams: str = "shared", smallest: int | None = None) -> list[Study]:
    """One study per training length: the chosen sources, seeds and targets (scored on `items`
    items each, default the study's own limits). `smallest`: the fewest examples a chosen source
    has, so that the validation holdout (where the pilot adds one) keeps four fifths of it."""
    _known("source", sources, [s.name for s in study.sources])
    _known("target", targets, [t.name for t in study.targets])
    if len(set(lengths)) != len(lengths) or not lengths or min(lengths) < 1:
        raise TraitlensError(f"--lengths must be distinct positive step counts, e.g. 8,24,64; got {lengths}")
    if len(seeds) < 2:
        raise TraitlensError("--seeds must be 2 or more: with one seed the pilot cannot measure training noise")
    parts = []
    for steps in sorted(lengths):
        holdout = PILOT_HOLDOUT if smallest is None else max(1, min(PILOT_HOLDOUT, smallest // 5))
        validation = study.training.validation or Validation(holdout=holdout, every=max(1, steps // 4))
        try:  # validated like the YAML (model_copy would skip the schema's checks of seeds and steps)
            training = Training.model_validate(study.training.model_dump() | {
                "max_steps": steps, "max_tokens": None, "seeds": list(seeds), "seed_streams": streams,
                "validation": validation})
        except ValidationError as exc:
            raise TraitlensError("--lengths / --seeds: " + "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
        chosen = [t.model_copy(update={"limit": items or t.limit or study.evaluation.limit})
                  for t in study.targets if t.name in targets]
        suffix = "" if streams == "shared" else "-own-streams"
        parts.append(study.model_copy(update={
            "name": f"{study.name}-pilot-{steps}{suffix}", "training": training, "targets": chosen,
            "sources": [s for s in study.sources if s.name in sources]}))
    return parts


def plan_pilot(parts: list[Study], full: StudyCost, cost_of: Callable[[Study], StudyCost],
               budget: float) -> PilotPlan:
    """The pilot's cost, refused when over `budget` x the full study's."""
    costs = [cost_of(part) for part in parts]
    tokens = costs[0].total + sum(cost.without_base for cost in costs[1:])  # the same items: base cells run once
    share = tokens / max(full.total, 1)
    if share > budget:
        raise TraitlensError(
            f"this pilot costs {tokens:,} tokens, {share:.2f} of the full study ({full.total:,}), over --budget "
            f"{budget:g}; raise --budget to {share:.2f}, or use fewer or shorter --lengths, fewer --seeds or --items.")
    return PilotPlan(parts, tokens, share)


def pilot(ws: Workspace, run_part: Callable[[Study], tuple[Any, Results]], page: Path | None, *,
          sources: list[str] | None = None, targets: list[str] | None = None, lengths: list[int] | None = None,
          seeds: list[int] | None = None, items: int | None = None, budget: float = 1.0, goal: float = 0.8,
          study_budget: float | None = None, streams: str = "shared") -> Pilot:
    """The whole pilot (`Study.pilot`): choose, build and price the parts, run each through
    `run_part` (the ordinary pipeline: the part as a `traitlens.Study`, and its results), read
    its adapters' training records, summarise and recommend, and write the page to `page`
    (default: in the store's report/)."""
    study, prepared = ws.config, ws.prepared()
    cost_of = ws.cost_of(prepared)
    full = cost_of(study)
    sources = sources or pick_sources(study)
    targets = targets or pick_targets(study, sources)
    if lengths is None:  # a quarter, one and three times the study's own length
        steps = int(full.training["steps"].min())
        lengths = sorted({max(1, steps // 4), steps, 3 * steps})
    seeds = list(seeds or PILOT_SEEDS)
    parts = pilot_parts(study, sources, targets, lengths, seeds, items, streams,
                        smallest=min((len(prepared[0][name]) for name in sources if name in prepared[0]),
                                     default=None))
    plan = plan_pilot(parts, full, cost_of, budget)
    page = page or ws.store(create=True).root / "report" / f"{study.name}-pilot.html"
    ran = []
    for part in plan.parts:
        ran_part, results = run_part(part)
        adapters = adapter_records(ran_part.planned(), Store(part.store))
        ran.append((part.name, PilotPart(part.training.max_steps, results, adapters)))
    price = length_design_cost(full, len(study.training.seeds))
    summary = summarise_pilot([measured for _, measured in ran], goal, price, study_budget)
    write_pilot(summary, study.name, [(name, m.results, m.adapters) for name, m in ran], {
        "sources": sources, "targets": targets, "lengths": sorted(lengths), "seeds": seeds, "items": items,
        "streams": streams, "tokens": plan.tokens, "share": round(plan.share, 4), "budget": budget,
        "study_budget": study_budget, "parts": [part.name for part in parts]}, page)
    return replace(summary, page=page)


def adapter_records(plan: Plan, store: Store) -> list[dict[str, Any]]:
    """Each trained adapter of a part with its training record (validation curve included)."""
    return [{"source": job.source, "seed": job.seed, "key": job.key, "meta": store.adapter_meta(job.key)}
            for job in plan.train_jobs]


def _known(kind: str, given: list[str], known: list[str]) -> None:
    for name in given:
        if name not in known:
            guess = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else f" (the study's: {', '.join(known)})"
            raise TraitlensError(f"--{kind} {name!r} is not a {kind} of the study{hint}")
