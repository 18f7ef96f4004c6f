"""Every read-only CLI command's output, compared with a golden copy (tests/golden/cli/), so that a
refactor cannot change what a user sees unnoticed. The study is the suite's finished report
study (fake scorer, tiny model). Paths, content keys, durations, decimal numbers and percentages are
replaced by placeholders: the numbers are tested where they are computed, and their last digits may
differ between CPUs; what is compared is every line, label, count and the order of things.

After an intended change of output: `TRAITLENS_UPDATE_GOLDEN=1 pytest tests/test_cli_golden.py`,
then read the diff of tests/golden/cli/ before committing it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden" / "cli"
COMMANDS = {
    "plan": ["plan", "{study}"],
    "status": ["status", "{study}"],
    "traits": ["traits", "{study}"],
    "reliability": ["reliability", "{study}", "--unpriced"],
    "explain": ["explain", "{study}"],
    "compare-cells": ["compare-cells", "{study}", "movie", "tweets", "--target", "amazon"],
    "doctor": ["doctor", "{study}"],
    "analyze": ["analyze", "{export}"],
    "data-list": ["data", "list"],
}


def normalise(text: str, folder: Path) -> str:
    # Progress lines say whether an analysis was recomputed, which depends on what ran before.
    text = "\n".join(line for line in text.splitlines() if not re.match(r"\[\d+/\d+\] ", line))
    text = text.replace(str(folder), "<STUDY>")
    text = re.sub(r"/tmp/\S+", "<PATH>", text)
    text = re.sub(r"\b[0-9a-f]{12,64}\b", "<KEY>", text)
    text = re.sub(r"\b\d+(\.\d+)?\s?(s|ms|min)\b", "<TIME>", text)
    text = re.sub(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?", "<DATE>", text)
    text = re.sub(r"(?<![\w.])[-+]?\d+\.\d+(e[-+]?\d+)?", "<x>", text)
    text = re.sub(r"\b\d+%", "<pct>", text)
    # Table widths follow the widest number in a column: spacing and rules are not compared.
    text = re.sub(r"([━─═])\1+", r"\1", re.sub(r" {2,}", " ", text))
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


@pytest.fixture(scope="module")
def study_copy(report, tmp_path_factory) -> Path:
    """The report study copied once, so that what other tests store in it cannot change these outputs."""
    return Path(shutil.copytree(report.parent, tmp_path_factory.mktemp("golden") / "study"))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_cli_output_is_unchanged(study_copy, name):
    folder = study_copy
    args = [a.format(study=folder / "study.yaml", export=folder / "out-data") for a in COMMANDS[name]]
    env = os.environ | {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    result = subprocess.run([sys.executable, "-m", "traitlens", *args], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    seen = normalise(result.stdout, folder)
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("TRAITLENS_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(seen)
    assert golden.exists(), f"no golden output for {name}: run with TRAITLENS_UPDATE_GOLDEN=1"
    assert seen == golden.read_text(), f"`traitlens {' '.join(args)}` prints something else than {golden}"
