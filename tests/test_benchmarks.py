"""Every script under benchmarks/ imports and parses its arguments, so none can break unseen.
The accuracy benchmarks also run a small case in their own tests (trait_count, metric_choice,
forecast in test_replication.py and test_analysis.py; gpu_check in test_gpu_check.py; load_memory
here, on the tiny model)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_every_benchmark_imports_and_parses_its_arguments(script):
    run = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True,
                         cwd=BENCHMARKS)
    assert run.returncode == 0, run.stderr
    assert "usage:" in run.stdout.lower()


def test_load_memory_measures_both_reads_of_a_small_model(tiny_model):
    run = subprocess.run([sys.executable, str(BENCHMARKS / "load_memory.py"), "--model", str(tiny_model)],
                         capture_output=True, text=True, cwd=BENCHMARKS)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("machine: cpu (") and sum("cast / direct: " in line for line in lines) == 2
    assert sum(" peak grew " in line for line in lines) == 4
