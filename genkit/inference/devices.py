"""Devices and precisions: which device `auto` means, which half precision it computes fast, and
how a CPU process keeps its freed memory."""
from __future__ import annotations

import ctypes
import os
import platform

import torch

from genkit.registry import ArgumentError


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """`auto` (CUDA, else Apple's MPS, else the CPU), `cpu`, `cuda`, `cuda:N` or `mps`, checked
    against what this machine has."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ArgumentError("device", f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError("device", f"{name}: this machine has no CUDA device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ArgumentError("device", f"{name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ArgumentError("device", f"{name}: MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ArgumentError("device", f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


PRECISIONS = ("no", "bf16", "fp16", "auto")


def hardware_precision(device: torch.device) -> str:
    """The half precision `device` computes fast: bf16 where it has it (recent GPUs, CPUs with
    AMX), fp16 on other GPUs and on Apple's MPS, else none (`no`)."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"


def half_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` (no, bf16, fp16, or auto: `hardware_precision`), or None."""
    if precision not in PRECISIONS:
        raise ArgumentError("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        precision = hardware_precision(device)
    return {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def launched_on_cpus() -> bool:
    """Whether this process is one of several launched (`accelerate launch`, `torchrun`: WORLD_SIZE > 1)
    on a machine without CUDA: accelerate then sets up gloo only when told it is on CPUs."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


# malloc settings a user may have chosen (glibc's variables; a preloaded jemalloc or tcmalloc)
_MALLOC_CHOICES = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt's parameter numbers (glibc's malloc.h)
_kept_freed_memory = False


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory that freed tensors held, for the next ones, in this
    process: no block mapped afresh from the kernel (`mmap`), the heap never trimmed. By default
    glibc maps each block above its threshold (128 KiB, rising up to 32 MiB) anew and unmaps it
    when freed, so every large tensor of a CPU forward or backward pass is zero-filled page by page
    on first touch; kept, the next pass reuses the same memory. The resident memory then stays at
    its peak. Returns whether the settings are in force: never off glibc, nor where
    the environment chooses the allocator (GLIBC_TUNABLES, MALLOC_*_, LD_PRELOAD) or
    GENKIT_KEEP_FREED_MEMORY=0; benchmarks/throughput.py (`--part allocator`) measures what it buys."""
    global _kept_freed_memory
    if _kept_freed_memory:
        return True
    if (os.environ.get("GENKIT_KEEP_FREED_MEMORY", "1") == "0" or any(os.environ.get(v) for v in _MALLOC_CHOICES)
            or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc"):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    _kept_freed_memory = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _kept_freed_memory
