"""Where a job runs and in which precision: `execution.device` and `dtype: auto` resolved.

bfloat16 is a speed setting, and only pays where the hardware computes it natively: a CUDA
device that supports it, or a CPU where oneDNN has bfloat16 kernels. Elsewhere PyTorch emulates
it: on a 2-core AMD EPYC (AVX2, no AVX512-BF16) a 512 x 512 bfloat16 matmul ran at 1.4 GFLOP/s
against 55 in float32, and a bfloat16 quickstart trained nothing in 11 minutes. So `auto`
resolves to bfloat16 only on native hardware, and an explicit bfloat16 on emulating hardware
warns once with the slowdown measured on the spot.

The resolution happens before job keys are computed (`execution.plan`), so a float32 cell is
never served where bfloat16 was resolved, or the other way round, when a study moves between
machines. The device is not in the keys: it changes speed, and scores only by float rounding.
"""

from __future__ import annotations

import functools
import os
import platform
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from traitlens.errors import TraitlensError, TraitlensWarning


class HardwareWarning(TraitlensWarning):
    """A setting the hardware runs far slower than an alternative would."""


@dataclass(frozen=True)
class Hardware:
    """What the machine that will run the jobs offers, as far as the settings care."""

    device: str  # "cpu" or "cuda:N"
    bf16_native: bool
    name: str  # the CPU's or GPU's model name, printed beside benchmark figures

    def describe(self) -> str:
        return f"{self.device} ({self.name}; bfloat16 {'native' if self.bf16_native else 'emulated'})"


def resolve_device(setting: str) -> str:
    """`auto` -> the first CUDA device if torch sees one, else `cpu`; `cuda` -> `cuda:0`.
    A CUDA device that torch cannot see is the user's to fix, with a message saying how."""
    import torch

    if setting == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if setting == "cpu":
        return "cpu"
    index = int(setting.partition(":")[2] or 0)
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise TraitlensError(
            f"execution.device: {setting!r} asked for a GPU, but torch {torch.__version__} ({build}) sees "
            "no CUDA device. Use device: auto or cpu, or install the CUDA build of torch (README, 'Install').")
    if index >= torch.cuda.device_count():
        raise TraitlensError(f"execution.device: {setting!r}, but torch sees {torch.cuda.device_count()} CUDA "
                             f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1}).")
    return f"cuda:{index}"


def bf16_native(device: str) -> bool:
    """Whether `device` computes bfloat16 in hardware (not emulated). For `cuda:N` it asks about
    device N itself (compute capability 8.0 or newer), not whichever device is current: a node
    can hold GPUs of two generations."""
    import torch

    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        return torch.cuda.get_device_capability(index) >= (8, 0)
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass(frozen=True)
class Placement:
    """Where one kind of work runs and how, resolved once by the planner (`execution.plan`) and
    handed to everything that loads or runs a model for it: the trainer, the scorer, the
    gradient probe, the datasets' features. Kinds: "train" and "eval" (where the executor puts
    those jobs), "features" and "probe" (this process, the driver).

    `dtype` is resolved for the hardware the kind runs on (it is in the keys); the device stays a
    setting until the work starts, because a Ray task learns its GPU only where it runs."""

    kind: str
    device: str  # auto, cpu, cuda or cuda:N (a Ray task holding no GPU: cpu, see `job_device`)
    dtype: str = "float32"  # float32 or bfloat16, never auto
    threads: int | None = None  # torch's CPU threads while it runs (a Ray task's cpus_per_job); None: as they are
    deterministic: bool = False  # torch's deterministic algorithms while it runs (training, the probe)

    def torch_device(self) -> Any:
        """The torch device this process runs the work on (a clear error for a GPU torch cannot see)."""
        import torch

        return torch.device(resolve_device(self.device))

    def load(self, spec, device: Any = None) -> tuple[Any, Any]:
        """(model, tokenizer) of the base `spec`, read straight into this dtype on `device`
        (default: `torch_device()`): never a float32 copy first, which would double the peak."""
        from traitlens.models.load import load_base

        return load_base(spec, self.dtype, self.torch_device() if device is None else device)

    def memory_budget(self, device: Any) -> int:
        """Bytes the work may fill with activations on `device`, what its batches are sized
        from: half of what a GPU reports free (the allocator's own blocks and fragmentation take
        the rest); an eighth of a CPU machine's memory (the model and other processes need the rest)."""
        import psutil
        import torch

        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return free // 2
        return psutil.virtual_memory().total // 8

    @contextmanager
    def running(self) -> Iterator[None]:
        """The work's process settings for its duration, each restored after: CPU threads, and
        deterministic algorithms (cuBLAS needs a fixed workspace for reproducible matmuls, set
        before the process first uses it, else torch warns); then the device memory the work's
        tensors held is given back, so the next job sizes its batches from memory really free."""
        import torch

        threads = torch.get_num_threads()
        before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
        if self.threads is not None:
            torch.set_num_threads(self.threads)  # tasks sharing a node must not oversubscribe it
        if self.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)  # warn where an operation has none
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(before[0], warn_only=before[1])
            torch.set_num_threads(threads)
            release_device_memory()


def job_device(execution, kind: str) -> str:
    """The `execution.device` setting work of `kind` runs with. A Ray task ("train" or "eval")
    that holds no GPU runs on the CPU: Ray no longer hides a node's GPUs from such a task, so
    under `auto` every one of them would land on cuda:0 and size its batches from memory the
    tasks holding GPUs are using. Work in this process ("features", "probe") uses the setting."""
    if kind in ("train", "eval") and execution.executor == "ray" and getattr(execution, f"gpus_per_{kind}_job") == 0:
        return "cpu"
    return execution.device


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux) and its core count."""
    import os

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            name = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


@functools.cache
def local_hardware(device_setting: str = "auto") -> Hardware:
    """This process's hardware for `execution.device` (probed once per setting)."""
    import torch

    device = resolve_device(device_setting)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu_name()
    return Hardware(device, bf16_native(device), name)


def resolve_dtype(setting: str, hardware: Hardware, field: str) -> str:
    """`auto` -> bfloat16 where `hardware` runs it natively, else float32. An explicit bfloat16
    on emulating hardware is kept (the user asked for it) but warns once per process."""
    if setting == "auto":
        return "bfloat16" if hardware.bf16_native else "float32"
    if setting == "bfloat16" and not hardware.bf16_native:
        _warn_emulated(field, hardware)
    return setting


@functools.cache
def _warn_emulated(field: str, hardware: Hardware) -> None:
    slowdown = bf16_slowdown(hardware.device)
    warnings.warn(
        f"{field}: bfloat16 is emulated on {hardware.describe()}: a bfloat16 matmul ran {slowdown:.0f}x slower "
        f"than float32 just now. Set {field}: auto (or float32) to run in float32 here.",
        HardwareWarning, stacklevel=2)


@functools.cache
def bf16_slowdown(device: str, size: int = 256, repeats: int = 5) -> float:
    """How many times longer a `size`-square bfloat16 matmul takes than a float32 one on
    `device` (best of `repeats` each); about 0.1 s where bfloat16 is emulated on a CPU."""
    import torch

    def best(dtype: Any) -> float:
        a = torch.randn(size, size, device=device).to(dtype)
        times = []
        for _ in range(repeats + 1):
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            a @ a
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
        return min(times[1:])  # the first call pays for kernel selection

    return best(torch.bfloat16) / max(best(torch.float32), 1e-9)


def release_device_memory() -> None:
    """Give back the memory a finished job's tensors held on a GPU, so the next job in the same
    process (evaluation after training, a probe after a run) sizes its batches from memory that
    is really free (`torch.cuda.mem_get_info` counts the allocator's cached blocks as used)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
