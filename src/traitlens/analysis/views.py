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
    into one row named after the source. Rows and columns in the order they first appear; a
    row or column with no score at all is left out.

    By hand, not `pivot_table`: the stability analysis builds this matrix for every resample,
    16,653 times in traits-offline's reanalysis, where pandas' pivot took a third of the time
    (`.venv/bin/python -m cProfile -s cumtime studies/traits-offline/reproduce.py`)."""
    rows, row_names = pd.factorize(cells["source"].fillna(BASE))
    columns, column_names = pd.factorize(cells["target"])
    scores = cells["score"].to_numpy(dtype=float)
    scored = ~np.isnan(scores)  # a missing score is skipped, as a mean skips it
    sums = np.zeros((len(row_names), len(column_names)))
    counts = np.zeros_like(sums)
    np.add.at(sums, (rows[scored], columns[scored]), scores[scored])
    np.add.at(counts, (rows[scored], columns[scored]), 1)
    with np.errstate(invalid="ignore"):
        # Labels as lists, so that pandas infers their dtype as pivot_table would (strings, not objects).
        matrix = pd.DataFrame(sums / counts, index=pd.Index(list(row_names)), columns=pd.Index(list(column_names)))
    return matrix.loc[counts.any(axis=1), counts.any(axis=0)]


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
