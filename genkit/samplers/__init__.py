"""Samplers: functions `sampler(denoiser, x, ts, noise=None, progress=False) -> x0`."""
from __future__ import annotations

from genkit.samplers.base import Denoiser, SampleNoise
from genkit.samplers.ddim import ddim, ddpm

SAMPLERS = {
    "ddim": ddim,
    "ddpm": ddpm,
}

__all__ = ["SAMPLERS", "Denoiser", "SampleNoise", "ddim", "ddpm"]
