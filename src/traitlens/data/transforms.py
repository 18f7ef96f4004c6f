"""Dataset transforms a study declares to test a hypothesis about a source.

Each is deterministic for the spec's seed, and each is part of the data fingerprint (the spec's
`transforms:` list enters the content key), so changing one retrains what depends on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from traitlens.config.schema import Transform
from traitlens.errors import TraitlensError


def apply_transform(table: pd.DataFrame, transform: Transform, seed: int, field: str) -> pd.DataFrame:
    return TRANSFORMS[transform.kind](table, getattr(transform, transform.kind), seed, field)


def subsample(table: pd.DataFrame, count: int, seed: int, field: str) -> pd.DataFrame:
    if count > len(table):
        raise TraitlensError(f"{field}.subsample: asks for {count} rows but only {len(table)} are "
                             f"there; use at most {len(table)} or drop the transform.")
    return table.sample(n=count, random_state=seed).sort_index()


def rebalance(table: pd.DataFrame, target: str | dict[str, float], seed: int, field: str) -> pd.DataFrame:
    """Downsample classes to the given proportions, keeping as many rows as the rarest allows.

    Counts are apportioned by largest remainder, so they match the proportions exactly whenever
    the proportions times the total are whole numbers, and within one row otherwise.
    """
    counts = table["answer"].value_counts()
    if target == "balanced":
        proportions = {label: 1 / len(counts) for label in counts.index}
    else:
        proportions = dict(target)
        unknown = sorted(set(proportions) - set(counts.index))
        unlisted = sorted(set(counts.index) - set(proportions))
        if unknown or unlisted:
            raise TraitlensError(
                f"{field}.rebalance: the proportions must name exactly the labels in the data "
                f"({', '.join(map(repr, counts.index))}); "
                + (f"not in the data: {unknown}. " if unknown else "")
                + (f"missing: {unlisted} (give them a proportion, or relabel them first)." if unlisted else ""))
    total = math.floor(min(counts[label] / share for label, share in proportions.items()) + 1e-9)
    wanted = _apportion(total, proportions)
    parts = [table[table["answer"] == label].sample(n=n, random_state=seed)
             for label, n in wanted.items() if n > 0]
    return pd.concat(parts).sort_index()


def _apportion(total: int, proportions: dict[str, float]) -> dict[str, int]:
    exact = {label: total * share for label, share in proportions.items()}
    counts = {label: math.floor(value + 1e-9) for label, value in exact.items()}
    by_remainder = sorted(exact, key=lambda label: exact[label] - counts[label], reverse=True)
    for label in by_remainder[: total - sum(counts.values())]:
        counts[label] += 1
    return counts


def relabel(table: pd.DataFrame, mapping: dict[str, str], seed: int, field: str) -> pd.DataFrame:
    present = set(table["answer"])
    unused = sorted(set(mapping) - present)
    if unused:
        raise TraitlensError(f"{field}.relabel: {unused} match no answer in the data (answers "
                             f"there: {sorted(present)[:10]}); fix the keys.")
    table = table.copy()
    table["answer"] = table["answer"].map(lambda answer: mapping.get(answer, answer))
    return table


def cap_answer_length(table: pd.DataFrame, limit: int, seed: int, field: str) -> pd.DataFrame:
    """Cut answers to at most `limit` characters, at a word boundary where there is one."""
    def cap(answer: str) -> str:
        if len(answer) <= limit:
            return answer
        cut = answer[:limit]
        if answer[limit].isspace() or not any(c.isspace() for c in cut.strip()):
            return cut.rstrip()
        return cut.rsplit(None, 1)[0]

    table = table.copy()
    table["answer"] = table["answer"].map(cap)
    return table


# One literal dict per extensible set (a rule of this codebase: docs/architecture.md); keys are the `Transform` field names.
TRANSFORMS: dict[str, Callable[[pd.DataFrame, object, int, str], pd.DataFrame]] = {
    "subsample": subsample,
    "rebalance": rebalance,
    "relabel": relabel,
    "cap_answer_length": cap_answer_length,
}
