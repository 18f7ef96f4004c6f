"""The committed studies' findings are reproducible: each study's reproduce.py recomputes, from
its committed item-level exports alone, every table its FINDINGS.md quotes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

STUDIES = Path(__file__).resolve().parents[1] / "studies"
BLOCK = re.compile(r"<!-- reproduce:(?P<name>[\w-]+) -->\n(?P<body>.*?)\n<!-- /reproduce -->", re.S)


@pytest.mark.parametrize("study", sorted(p.parent.name for p in STUDIES.glob("*/reproduce.py")))
def test_findings_tables_are_what_reproduce_prints(study):
    folder = STUDIES / study
    result = subprocess.run([sys.executable, str(folder / "reproduce.py")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = {m["name"]: m["body"] for m in BLOCK.finditer(result.stdout)}
    quoted = {m["name"]: m["body"] for m in BLOCK.finditer((folder / "FINDINGS.md").read_text())}
    assert quoted, "FINDINGS.md quotes no reproduced table"
    assert set(quoted) <= set(printed), f"FINDINGS.md quotes tables reproduce.py does not print: {set(quoted) - set(printed)}"
    for name, body in quoted.items():
        assert body == printed[name], f"FINDINGS.md's table {name!r} differs from what reproduce.py prints now"
