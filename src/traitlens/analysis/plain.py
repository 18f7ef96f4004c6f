"""Analysis results as plain JSON values, for the store and the exports."""

from __future__ import annotations

from typing import Any


def json_ready(value: Any) -> Any:
    """Plain JSON values: NaN as null, numpy scalars as Python ones, keys as strings."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "item"):  # numpy scalars
        return json_ready(value.item())
    return value
