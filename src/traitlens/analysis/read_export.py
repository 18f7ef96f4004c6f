"""An item-level export read back into `Results` (`traitlens.load_items`, `traitlens analyze`,
`traitlens report --from-export`): no model and no store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from traitlens.analysis.export import COLUMNS, FEATURES_FILE, ITEMS_FILE, META_FILE
from traitlens.analysis.features import Features
from traitlens.analysis.results import CELL_COLUMNS, Results
from traitlens.config.schema import Analysis
from traitlens.errors import TraitlensError
from traitlens.evaluate.metrics import cell_metrics


def load_items(path: str | Path) -> Results:
    """The results in an item-level export folder (or its items.parquet), with no model or
    store: scored under the exported study's `analysis.metric`, its analysis settings the
    defaults of every method. Cell metrics are recomputed from the items. The datasets'
    features come from the report's `features.json` beside them, where it was written, so
    `explain()` works on an export too.

    Example:
        >>> res = traitlens.load_items("store/report/quickstart-data")
        >>> res.traits(metric="accuracy").loadings_
    """
    path = Path(path)
    folder = path.parent if path.suffix == ".parquet" else path
    if not (folder / ITEMS_FILE).exists() or not (folder / META_FILE).exists():
        raise TraitlensError(f"{folder} is not an item-level export: it needs {ITEMS_FILE} and {META_FILE} "
                             "(written by `traitlens report` into the report's -data folder).")
    meta, table = _read_export(folder)
    missing = set(COLUMNS) - set(table.columns)
    if missing:
        raise TraitlensError(f"{folder / ITEMS_FILE}: missing column(s) {', '.join(sorted(missing))}")
    outputs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    cells = []
    for (target, model), group in table.sort_values("item", kind="stable").groupby(["target", "model"], sort=False):
        items = [{"gold": r.gold, "prediction": r.prediction, "score": float(r.score),
                  "choice_logprobs": json.loads(r.choice_logprobs) if isinstance(r.choice_logprobs, str) else None,
                  "generated": r.generated, "generated_tokens": None if pd.isna(r.generated_tokens) else int(r.generated_tokens)}
                 for r in group.itertuples()]
        outputs.setdefault(target, {})[model] = items
        first = group.iloc[0]
        labels = meta["labels"].get(target)
        cells.append({"model": model, "source": None if pd.isna(first["source"]) else first["source"],
                      "seed": None if pd.isna(first["seed"]) else int(first["seed"]), "target": target,
                      "key": f"{model}@{target}", "n": len(items), "metrics": cell_metrics(items, labels)})
    try:
        settings = Analysis.model_validate(meta["analysis"])
    except ValueError as exc:
        raise TraitlensError(f"{folder / META_FILE}: its analysis settings are not valid: {exc}") from None
    results = Results(pd.DataFrame(cells, columns=CELL_COLUMNS), outputs, {tuple(pair) for pair in meta["diagonal"]},
                      meta["abilities"], meta["labels"], meta["families"], settings=settings,
                      study=meta["study"], kinds=meta["kinds"], features=_features(folder),
                      shared_corpus={tuple(pair) for pair in meta.get("shared_corpus", [])})
    return results.scored(settings.metric)


def _read_export(folder: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """The export's metadata and item table; a damaged or truncated file is named with the fix."""
    fix = "rewrite the export with `traitlens report` (or restore it from where it was committed)"
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TraitlensError(f"{folder / META_FILE}: cannot be read as JSON ({exc}); {fix}.") from None
    required = ("labels", "analysis", "diagonal", "abilities", "families", "study", "kinds")
    if not isinstance(meta, dict) or (absent := [key for key in required if key not in meta]):
        raise TraitlensError(f"{folder / META_FILE}: not an export's metadata (missing "
                             f"{', '.join(absent) if isinstance(meta, dict) else 'everything'}); {fix}.")
    try:
        table = pd.read_parquet(folder / ITEMS_FILE)
    except Exception as exc:  # pyarrow raises its own classes for an empty, truncated or foreign file
        raise TraitlensError(f"{folder / ITEMS_FILE}: cannot be read as Parquet ({type(exc).__name__}: "
                             f"{str(exc)[:160]}); {fix}.") from None
    return meta, table


def _features(folder: Path) -> Features | None:
    path = folder / FEATURES_FILE
    if not path.exists():
        return None
    try:
        return Features.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TraitlensError(f"{path}: not the feature tables a report writes ({exc}); delete it to load the "
                             "items without features, or rewrite it with `traitlens report`.") from None
