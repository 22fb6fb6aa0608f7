"""Sampling with an average velocity (MeanFlow, Geng et al. 2025): between consecutive grid
times t > s, z_s = z_t - (t - s) u(z_t, s, t), one network evaluation per step; one step from
t = 1 to 0 draws an image with one evaluation."""
from __future__ import annotations

import torch

from genkit.samplers.base import Callback, DenoiserLike, NoiseSource, time_pairs


def meanflow(denoiser: DenoiserLike, x: torch.Tensor, ts: torch.Tensor, noise: NoiseSource | None = None,
             callback: Callback | None = None, progress: bool = False) -> torch.Tensor:
    """Jump across each interval of `ts` with the net's average velocity over it (the net must
    take a second time: `model.interval`). The callback's x0 estimate is the jump to t = 0."""
    for i, (t, s) in enumerate(time_pairs(ts, progress)):
        u = denoiser.raw(x, t, r=s)
        if callback:
            callback(i, t, x, x - t * u)
        x = x - (t - s) * u
    return x
