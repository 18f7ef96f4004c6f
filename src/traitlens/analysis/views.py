"""Views of the transfer matrix: raw scores, delta vs base, relative delta, per-target z-score.

Rows are adapters (one per source, averaged over seeds), columns targets. The diagonal (an
adapter scored on its own source's dataset) can be masked, since in-domain gains dominate and
are not transfer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from traitlens.config.schema import BASE

VIEWS = ("raw", "delta", "relative_delta", "zscore")


def raw_matrix(cells: pd.DataFrame) -> pd.DataFrame:
    """Models x targets of mean scores; adapters of one source with several seeds are averaged
    into one row named after the source."""
    named = cells.assign(row=cells["source"].fillna(BASE))
    matrix = named.pivot_table(index="row", columns="target", values="score", aggfunc="mean", sort=False)
    matrix.index.name, matrix.columns.name = None, None
    return matrix


def seed_spread(cells: pd.DataFrame) -> pd.DataFrame:
    """Sources x targets standard deviation of the score across seeds (NaN with one seed)."""
    adapters = cells[cells["source"].notna()]
    spread = adapters.pivot_table(index="source", columns="target", values="score",
                                  aggfunc=lambda s: s.std(ddof=1) if len(s) > 1 else np.nan,
                                  sort=False, dropna=False)
    spread.index.name, spread.columns.name = None, None
    return spread


def view(raw: pd.DataFrame, kind: str, diagonal: set[tuple[str, str]] = frozenset(),
         mask_diagonal: bool = False) -> pd.DataFrame:
    """The adapters x targets matrix of `kind` computed from `raw` (which includes the base row)."""
    if kind not in VIEWS:
        raise ValueError(f"unknown view {kind!r}; use one of {VIEWS}")
    base = raw.loc[BASE]
    adapters = raw.drop(index=BASE)
    if kind == "raw":
        out = adapters.copy()
    elif kind == "delta":
        out = adapters - base
    elif kind == "relative_delta":
        out = (adapters - base) / base.where(base != 0)  # undefined where the base scores 0
    else:
        out = (adapters - adapters.mean()) / adapters.std(ddof=1).replace(0, np.nan)
    if mask_diagonal:
        for source, target in diagonal:
            if source in out.index and target in out.columns:
                out.loc[source, target] = np.nan
    return out
