"""The leakage guard: no evaluation item of a target may be in an adapter's training data.

Items are compared on their question side (input and passage, whitespace-normalised), not on
the answer, so a relabelled copy of the same example still counts as seen.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from traitlens.errors import TraitlensError


def item_keys(table: pd.DataFrame) -> pd.Series:
    passage = table["passage"] if "passage" in table else pd.Series("", index=table.index)
    return pd.Series(
        [hashlib.sha1(f"{' '.join(str(p).split())}\x1f{' '.join(str(i).split())}".encode()).hexdigest()
         for i, p in zip(table["input"], passage.fillna(""))], index=table.index)


def check_leakage(sources: dict[str, pd.DataFrame], targets: dict[str, pd.DataFrame]) -> None:
    """Raise naming every (target, source) pair that shares items."""
    source_keys = {name: set(item_keys(table)) for name, table in sources.items()}
    problems = []
    for target, table in targets.items():
        keys = item_keys(table)
        for source, seen in source_keys.items():
            shared = int(keys.isin(seen).sum())
            if shared:
                example = table.loc[keys.isin(seen), "input"].iloc[0]
                problems.append(f"target {target!r}: {shared} of its {len(table)} items are in the "
                                f"training data of source {source!r} (e.g. {example[:80]!r})")
    if problems:
        raise TraitlensError("evaluation items leak from training data:\n  " + "\n  ".join(problems)
                             + "\nEvaluate on a split the source does not train on (e.g. `split: test`).")
