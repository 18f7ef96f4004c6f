"""Content keys: a job's or cell's identity is the hash of everything that can change its result.

A key is stable across runs, machines and Python versions (canonical JSON, sorted keys), so a
changed input can never be served a stale result and an unchanged one is never recomputed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

# Bump when the meaning of a key's payload changes, so old store rows are not reused.
KEY_SCHEMA = 1


def canonical_json(value: Any) -> str:
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_key(kind: str, payload: dict[str, Any]) -> str:
    """A 32-hex-digit key for `payload`, namespaced by `kind` (e.g. "train", "eval")."""
    text = canonical_json({"kind": kind, "schema": KEY_SCHEMA, "payload": payload})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _plain(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 32 and 32.0 are the same setting and must give the same key
    return value
