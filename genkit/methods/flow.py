"""Rectified flow (Liu et al. 2022) with SD3's timestep densities and shift (Esser et al. 2024)."""
from __future__ import annotations

import torch

from genkit.config import MethodConfig
from genkit.methods.base import DenoisingMethod
from genkit.methods.time_densities import build_density
from genkit.paths import FlowPath
from genkit.paths.flow import shift_time, unshift_time


class RectifiedFlow(DenoisingMethod):
    """Regress the velocity eps - x0 at x_t = (1 - t) x0 + t eps.

    t comes from the configured density, then the shift; with `density_as: weight`, t is uniform
    instead and the loss is weighted by the density of the shifted t, which has the same
    expected loss (and more variance)."""

    def __init__(self, cfg: MethodConfig, num_classes: int = 0):
        super().__init__(cfg, num_classes)
        self.path = FlowPath(cfg.flow.shift)
        self.density = build_density(cfg.flow)

    def sample_time(self, n: int, generator: torch.Generator | None):
        shift = self.cfg.flow.shift
        if self.cfg.flow.density_as == "sample":
            return shift_time(self.density.sample(n, generator), shift), None
        t = torch.rand(n, generator=generator, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
        raw = unshift_time(t, shift)
        return t, self.density.pdf(raw) * shift / (shift - (shift - 1) * t) ** 2  # pdf of the shifted t
