"""Devices and precisions for inference: which device `auto` means, and which half precision it computes fast."""
from __future__ import annotations

import os

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
