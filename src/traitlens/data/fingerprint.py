"""A dataset spec's fingerprint: everything about its data that can change a result."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from traitlens.config.schema import DatasetSpec
from traitlens.config.reference import parse_reference, split_file
from traitlens.errors import TraitlensError
from traitlens.store.keys import file_digest

# Bump when a catalog entry's materialized rows change (new split seed, new binning, ...).
CATALOG_VERSION = 1
NOT_RESULT_FIELDS = {"name", "dataset", "subset", "revision", "abilities", "limit", "family"}


def fingerprint(spec: DatasetSpec, field: str) -> dict[str, Any]:
    """`field` names the spec in errors, e.g. "sources[2] (movie)"."""
    ref = parse_reference(spec.dataset)
    if ref.kind == "file":
        path = split_file(Path(ref.value), spec.split)
        if path is None:
            what = f"no {spec.split!r} split file in folder" if Path(ref.value).is_dir() else "file"
            raise TraitlensError(f"{field}.dataset: {what} {ref.value} does not exist; fix the path "
                                 "(relative paths are relative to the study file).")
        origin: dict[str, Any] = {"file_sha256": _file_digest(path, path.stat().st_mtime_ns)}
    elif ref.kind == "catalog":
        origin = {"catalog": ref.value, "catalog_version": CATALOG_VERSION}
    else:
        origin = {"hub": ref.value, "subset": spec.subset, "revision": spec.revision or "main"}
    # Names, families and ability tags label a result but cannot change it; a target's item limit is
    # keyed by the planner, which knows the study-wide default.
    settings = spec.model_dump(mode="json", exclude=NOT_RESULT_FIELDS)
    return {"origin": origin, **settings}


@lru_cache(maxsize=256)
def _file_digest(path: Path, mtime_ns: int) -> str:  # mtime in the cache key: an edit rehashes
    return file_digest(path)
