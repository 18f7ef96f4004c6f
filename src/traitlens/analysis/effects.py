"""Side effects (significant negative transfer) and asymmetry between datasets that are used
both as a source and as a target (A -> B vs B -> A)."""

from __future__ import annotations

import pandas as pd


def side_effects(uncertainty: pd.DataFrame) -> pd.DataFrame:
    """Cells where an adapter is significantly worse than the base, worst first."""
    hurt = uncertainty[uncertainty["significant"] & (uncertainty["delta"] < 0)]
    return hurt.sort_values("delta").reset_index(drop=True)


def asymmetry(delta: pd.DataFrame, diagonal: set[tuple[str, str]]) -> pd.DataFrame:
    """For each pair of sources A, B whose own datasets are also targets: delta(A on B's
    target) against delta(B on A's target), and their difference."""
    home = {}
    for source, target in sorted(diagonal):
        home.setdefault(source, target)  # a source's own dataset, as a target
    rows = []
    sources = [s for s in delta.index if s in home]
    for i, a in enumerate(sources):
        for b in sources[i + 1:]:
            if home[a] == home[b]:  # variants of one dataset (e.g. balanced vs skewed): no direction
                continue
            forward, backward = delta.loc[a, home[b]], delta.loc[b, home[a]]
            rows.append({"a": a, "b": b, "a_to_b": forward, "b_to_a": backward,
                         "difference": forward - backward})
    return pd.DataFrame(rows, columns=["a", "b", "a_to_b", "b_to_a", "difference"])
