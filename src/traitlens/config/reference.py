"""What a `dataset:` string names: a catalog entry, a hub dataset, or a local file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from traitlens.errors import TraitlensError

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class DatasetRef:
    kind: Literal["catalog", "hub", "file"]
    value: str


def parse_reference(text: str) -> DatasetRef:
    """`catalog:NAME` and `hf:ID` are explicit; a path-like string or data suffix is a file;
    anything else is taken as a hub id, as a user of `datasets.load_dataset` would expect."""
    if text.startswith("catalog:"):
        return DatasetRef("catalog", text.removeprefix("catalog:"))
    if text.startswith("hf:"):
        return DatasetRef("hub", text.removeprefix("hf:"))
    if looks_like_path(text):
        return DatasetRef("file", text)
    return DatasetRef("hub", text)


def looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text.lower().endswith(FILE_SUFFIXES)


def resolve_path(text: str, base_dir: Path) -> str:
    """A relative path in a study file means relative to that file, not to the working dir."""
    if "\x00" in text:  # no file system takes one; os.path would raise a bare ValueError
        raise TraitlensError(f"path {text!r} contains a NUL character; no file can have that name.")
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # "~name/..." where no such user (or no home) exists on this machine
        raise TraitlensError(f"path {text!r}: {text.split('/')[0]!r} names no home directory on this machine; "
                             "write the path out in full.") from None
    try:
        return str(path if path.is_absolute() else (base_dir / path).resolve())
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before Python 3.13), or a name too long
        raise TraitlensError(f"path {text!r} cannot be resolved ({exc}); fix the path.") from None


def split_file(path: Path, split: str) -> Path | None:
    """The file a local dataset reads for `split`: the file itself, or `<split>.<suffix>` in a
    folder of split files; None when there is none."""
    try:
        if path.is_dir():
            return next((path / f"{split}{suffix}" for suffix in FILE_SUFFIXES
                         if (path / f"{split}{suffix}").is_file()), None)
        return path if path.is_file() else None
    except OSError:  # a name the file system cannot hold: no such file
        return None
