"""Peak memory of reading a base model for bfloat16 work: straight in bfloat16, as traitlens
reads it (`Placement.load`), against float32 first and cast after, as training read it before.

Each way runs in a fresh process, which imports torch and transformers, notes its memory, then
reads the model (and, on a GPU, moves it there). The figure is the growth of the peak: resident
memory (VmHWM on Linux, memory-mapped checkpoint pages included) on a CPU,
`torch.cuda.max_memory_allocated` on a GPU. The ratio is the cast's growth over the direct
read's. Both are measured for the checkpoint as given and for a bfloat16 copy of it (written
to a temporary folder first), since hub checkpoints mostly ship in bfloat16.

    .venv/bin/python benchmarks/load_memory.py                   # SmolLM2-135M, on the CPU
    python3 benchmarks/load_memory.py --model DIR --device cuda  # a model folder, on a GPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout, installed or not

ONE_WAY = """
import json, sys
sys.path.insert(0, {src!r})
import torch, transformers
from traitlens.config.schema import BaseModelSpec
from traitlens.models.device import Placement
from traitlens.models.load import load_base

spec, device, way = BaseModelSpec(name={model!r}), torch.device({device!r}), {way!r}
gpu = device.type == "cuda"
def peak():
    if gpu:
        return torch.cuda.max_memory_allocated(device)
    # This process's own high-water mark (ru_maxrss would carry over the parent's from before exec).
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

before = peak()
if way == "direct":
    model, _ = Placement("train", {device!r}, "bfloat16").load(spec)
else:
    model, _ = load_base(spec, "float32")
    model = model.to(device).to(torch.bfloat16)
print(json.dumps({{"grew": peak() - before, "params": sum(p.numel() for p in model.parameters())}}))
"""


def one_way(model: str, device: str, way: str) -> dict:
    code = ONE_WAY.format(src=str(ROOT / "src"), model=model, device=device, way=way)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{way}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model folder or hub id (default: the catalog's SmolLM2-135M)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda[:N]: device memory is measured there")
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per way, alternating")
    args = parser.parse_args()
    from traitlens.models.device import local_hardware

    model = args.model
    if model is None:
        from traitlens.models.load import materialize_catalog_model

        model = str(materialize_catalog_model("smollm2-135m-instruct"))
    print(f"machine: {local_hardware(args.device).describe()}")
    with tempfile.TemporaryDirectory() as scratch:
        for checkpoint, folder in (("as given", model), ("bfloat16 copy", bfloat16_copy(model, Path(scratch)))):
            grew: dict[str, list[int]] = {"direct": [], "cast": []}
            for _ in range(args.repeats):
                for way in grew:
                    result = one_way(folder, args.device, way)
                    grew[way].append(result["grew"])
            weights = 2 * result["params"]
            for way, values in grew.items():
                print(f"{checkpoint:13s} {way:6s} peak grew {max(values) / 2**20:8.1f} MiB "
                      f"({max(values) / weights:.2f}x the bfloat16 weights)")
            print(f"{checkpoint:13s} cast / direct: {max(grew['cast']) / max(max(grew['direct']), 1):.2f}x")


def bfloat16_copy(model: str, scratch: Path) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16).save_pretrained(scratch)
    AutoTokenizer.from_pretrained(model).save_pretrained(scratch)
    return str(scratch)


if __name__ == "__main__":
    main()
