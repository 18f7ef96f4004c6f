"""What every study's reproduce.py shares: tables as Markdown, and FINDINGS.md's reproduced
blocks (`<!-- reproduce:NAME -->` ... `<!-- /reproduce -->`) printed, or refreshed with
`--write`. tests/test_studies.py compares each block in FINDINGS.md with what the script prints."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

BLOCK = re.compile(r"(<!-- reproduce:(?P<name>[\w-]+) -->\n)(?P<body>.*?)\n?(<!-- /reproduce -->)", re.S)


def markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, values)) + " |" for values in frame.itertuples(index=False)]
    return "\n".join(lines)


def main(tables: Callable[[], dict[str, str]], findings: Path, description: str) -> int:
    """Print every table `tables()` makes between its markers; with `--write`, also put each
    into its block of `findings`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--write", action="store_true", help="refresh the tables in FINDINGS.md")
    args = parser.parse_args()
    out = tables()
    if args.write:
        findings.write_text(BLOCK.sub(lambda m: f"{m.group(1)}{out[m.group('name')]}\n{m.group(4)}", findings.read_text()))
    for name, text in out.items():
        print(f"<!-- reproduce:{name} -->\n{text}\n<!-- /reproduce -->\n")
    return 0
