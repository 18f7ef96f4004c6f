"""Item-level exports: every model's answer to every item, so any analysis can be redone later
with no model and no store.

`items.parquet` has one row per (model, target, item): model, source, seed, target, item,
gold, prediction, score, choice_logprobs (JSON text: option -> log-probability, since options
differ between targets), generated, generated_tokens. `items.json` beside it holds what the
analysis needs besides the items: each target's kind, label set and ability tags, each source's
family, which sources were trained on a target's dataset, and the study's analysis settings.
`analysis.read_export.load_items` reads them back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from traitlens.analysis.results import Results

ITEMS_FILE, META_FILE, FEATURES_FILE = "items.parquet", "items.json", "features.json"
FORECASTS_FILE = "forecasts.csv"  # the study's stored forecast cells, where it has any (`Study.forecasts`)
COLUMNS = ["model", "source", "seed", "target", "item", "gold", "prediction", "score", "choice_logprobs",
           "generated", "generated_tokens"]


def export_items(results: Results, folder: Path) -> Path:
    """Write `items.parquet` and `items.json` into `folder`; return the Parquet file."""
    rows = []
    for cell in results.cells.itertuples():
        for index, item in enumerate(results.outputs[cell.target][cell.model]):
            logprobs = item.get("choice_logprobs")
            rows.append({"model": cell.model, "source": cell.source, "seed": cell.seed, "target": cell.target,
                         "item": index, "gold": item["gold"], "prediction": item["prediction"],
                         "score": item["score"], "choice_logprobs": json.dumps(logprobs) if logprobs else None,
                         "generated": item.get("generated"), "generated_tokens": item.get("generated_tokens")})
    table = pd.DataFrame(rows, columns=COLUMNS).astype({"seed": "Int64", "generated_tokens": "Int64"})
    folder.mkdir(parents=True, exist_ok=True)
    table.to_parquet(folder / ITEMS_FILE, index=False)
    (folder / META_FILE).write_text(json.dumps({
        "study": results.study, "kinds": results.kinds, "labels": results.labels, "abilities": results.abilities,
        "families": results.families, "diagonal": sorted(results.diagonal),
        "shared_corpus": sorted(results.shared_corpus),
        "analysis": results.settings.model_dump(mode="json")}, indent=1))
    return folder / ITEMS_FILE
