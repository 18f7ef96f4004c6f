"""The prepared GPU check (benchmarks/gpu_check.py) runs end to end, here on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_prepares_small_inputs_and_reports_agreement(tmp_path):
    folder = tmp_path / "check"
    subprocess.run([sys.executable, SCRIPT, "prepare", folder, "--tiny", "--items", "24"], check=True)
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 64 * 2**20  # travels to a GPU
    report_file = tmp_path / "report.json"
    done = subprocess.run([sys.executable, SCRIPT, "run", folder, "--device", "cpu", "--steps", "2", "--items", "8",
                           "--mixed", "true", "--json", report_file], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert report["device"].startswith("cpu (") and report["mixed_batches"] == [True]
    assert report["train_tokens_per_s"] > 0 and report["eval_items_per_s"] == report["eval_items_per_s_mixed"] > 0
    assert report["mixed_speedup"] == report["eval_items_per_s_mixed"] / report["eval_items_per_s_one_at_a_time"]
    placements = report["placements"]  # what the plan resolved, as every job ran it
    assert set(placements) == {"train", "eval", "features", "probe"} and placements["probe"]["dtype"] == "float32"
    assert placements["train"]["deterministic"] and placements["eval"]["dtype"] == report["dtype"]
    assert 0 < report["train_share_of_peak"] and report["peak_tflops"] > 0
    assert len(report["agreement"]) == 3 * 2  # base + 2 adapters, 2 targets
    if report["dtype"] == "float32":  # mixed batches against one adapter at a time, both float32
        assert report["agreement_min"] == 1.0 and report["max_logprob_gap"] < 1e-3
    else:  # bfloat16 on a CPU that runs it natively, against float32
        assert report["agreement_min"] >= 0.5 and report["max_logprob_gap"] < 1.0
