"""Multistep consistency sampling (Song et al. 2023, algorithm 1): jump to the x0 estimate, noise
it afresh to the next time of the grid, jump again; one network evaluation per step. Runs on any
model (it needs only x0 estimates); a consistency model draws an image in one step."""
from __future__ import annotations

import torch

from genkit.paths import _bcast
from genkit.samplers.base import Callback, DenoiserLike, NoiseSource, randn_like, time_pairs


def consistency(denoiser: DenoiserLike, x: torch.Tensor, ts: torch.Tensor, noise: NoiseSource | None = None,
                callback: Callback | None = None, progress: bool = False) -> torch.Tensor:
    """x0 = f(x, t); then x = alpha(s) x0 + sigma(s) z for the next time s > 0, with fresh z from
    `noise` (per sample), until the grid reaches 0."""
    path = denoiser.path
    for i, (t, s) in enumerate(time_pairs(ts, progress)):
        x0, _ = denoiser(x, t)
        if callback:
            callback(i, t, x, x0)
        if s == 0:
            return x0
        s_ = torch.tensor([s], dtype=torch.float64)
        x = _bcast(path.alpha(s_), x) * x0 + _bcast(path.sigma(s_), x) * randn_like(noise, x)
    return x
