"""Helpers shared by the benchmarks: machine description, matmul peak, repeat statistics, contention flags.

Every figure a benchmark reports is a list of repeats summarised as min / median / max (:func:`spread`), next
to the machine it ran on (:func:`machine_info`: CPU model, cores, torch threads, versions) and a contention
record (:func:`loadavg` before and after; a repeat's neighbouring matmul peak where the benchmark measures it).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["ROOT", "sync", "matmul_peak", "spread", "time_repeats", "loadavg", "machine_info", "contention",
           "attention_backend"]


def sync(device: torch.device | str) -> None:
    """Wait for queued kernels (CUDA); a no-op on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device | str, dtype: torch.dtype, n: int, reps: int = 3,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """Best-of-``reps`` rate of an n x n x n matmul in FLOP/s (2 n^3 FLOPs per product)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = clock()
        a @ b
        sync(device)
        best = min(best, clock() - t0)
    return 2 * n**3 / best


def spread(values: list[float]) -> dict:
    """``{"min", "median", "max", "n"}`` of a list of repeat measurements."""
    if not values:
        raise ValueError("spread needs at least one measurement, got an empty list")
    return dict(min=min(values), median=statistics.median(values), max=max(values), n=len(values))


def time_repeats(fn: Callable[[], object], repeats: int, warmup: int = 1, device="cpu") -> tuple[list[float], object]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls; returns (times, last result)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times, out


def loadavg() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def contention(load_before: float, load_after: float, threads: int | None = None) -> dict:
    """Load averages around a measurement; ``contended`` when either exceeds the torch thread count + 0.5."""
    threads = threads or torch.get_num_threads()
    return dict(loadavg_before=load_before, loadavg_after=load_after,
                contended=bool(max(load_before, load_after) > threads + 0.5))


def machine_info(device: torch.device | str = "cpu") -> dict:
    """CPU model, core count, torch threads, versions and the device (GPU name on CUDA)."""
    device = torch.device(device)
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = dict(python=platform.python_version(), torch=torch.__version__, platform=platform.platform(),
                cpu=cpu, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                ld_preload=os.environ.get("LD_PRELOAD", ""), device=str(device))
    for mod in ("lightning", "hydra", "torch_fidelity", "torchdiffeq"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # not installed or no version attribute
            info[mod] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


ATTENTION = ("sdpa", "math")


@contextmanager
def attention_backend(name: str):
    """``sdpa``: let ``scaled_dot_product_attention`` pick its kernel (flash / memory-efficient / math);
    ``math``: force the reference math kernel (explicit softmax(QK^T / sqrt(d)) V)."""
    if name not in ATTENTION:
        raise ValueError(f"unknown attention backend {name!r}; valid choices: {list(ATTENTION)}")
    if name == "sdpa":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield
