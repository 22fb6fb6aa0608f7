"""The rectified-flow path (Liu et al. 2022; Esser et al. 2024): x_t = (1 - t) x0 + t eps."""
from __future__ import annotations

import torch

from genkit.paths.base import GaussianPath


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's resolution shift t' = a t / (1 + (a - 1) t) (Esser et al. 2024, section 5.3.2)."""
    return shift * t / (1 + (shift - 1) * t)


def unshift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """The inverse of `shift_time`: t = t' / (a - (a - 1) t')."""
    return t / (shift - (shift - 1) * t)


class FlowPath(GaussianPath):
    """Straight lines from data (t = 0) to noise (t = 1), with a time shift for sampling grids.

    The velocity d x_t / dt = eps - x0 is the natural prediction; eps cannot be recovered at t = 1.
    """

    def __init__(self, shift: float = 1.0):
        self.shift = shift

    def alpha(self, t):
        return 1 - t

    def sigma(self, t):
        return t

    def d_alpha(self, t):
        return -torch.ones_like(torch.as_tensor(t, dtype=torch.float64))

    def d_sigma(self, t):
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float64))

    def time_warp(self, u):
        """SD3's shift, applied to training times and sampling grids alike."""
        return shift_time(u, self.shift)

    def default_schedule(self, registered: str) -> str:
        """Samplers registered with the `flow` grid step evenly in the shifted time t here, the grid
        SD3 samples on (and diffusers' UniPC with `flow_shift`); with shift 1 that is the `flow` grid."""
        return "uniform" if registered == "flow" else registered

    def warped_density(self, pdf, t: torch.Tensor) -> torch.Tensor:
        """The density at t of time_warp(u) for u ~ `pdf`: pdf(u) |du/dt|, u = unshift(t)."""
        a = self.shift
        return pdf(unshift_time(t, a)) * a / (a - (a - 1) * t) ** 2
