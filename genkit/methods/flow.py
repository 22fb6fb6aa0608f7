"""Rectified flow (Liu et al. 2022) with SD3's timestep densities and shift (Esser et al. 2024)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genkit.methods.base import DenoisingMethod
from genkit.methods.time_densities import build_density
from genkit.paths import FlowPath
from genkit.registry import ConfigError, one_of, require


@dataclass
class FlowConfig:
    """`method.flow`: SD3's timestep density and shift (Esser et al. 2024, sections 3.1 and 5.3.2)."""

    time_density: str = "logit_normal"  # uniform | logit_normal | mode | cosmap | noise_end (one-step distillation)
    logit_mean: float = 0.0  # logit_normal(m, s)
    logit_std: float = 1.0
    mode_scale: float = 1.29  # mode(s)
    shift: float = 1.0  # t' = a t / (1 + (a - 1) t) in training and sampling
    density_as: str = "sample"  # sample: draw t from the density; weight: draw t uniformly, weight the loss


def check(cfg) -> None:
    f = cfg.method.flow
    one_of(f.time_density, ("uniform", "logit_normal", "mode", "cosmap", "noise_end"), "method.flow.time_density")
    one_of(f.density_as, ("sample", "weight"), "method.flow.density_as")
    if f.time_density == "noise_end" and f.density_as == "weight":
        raise ConfigError("method.flow.density_as: noise_end is a point mass at t = 1, which can only be sampled")
    require(f, "method.flow", positive=["logit_std", "shift"])
    if not -1 < f.mode_scale < 2 / (math.pi - 2):
        raise ConfigError(f"method.flow.mode_scale: must lie in (-1, {2 / (math.pi - 2):.3f}) for a monotone map, "
                          f"got {f.mode_scale}")
    if cfg.method.resolved_prediction == "eps":
        raise ConfigError("method.prediction: eps cannot be inverted at t = 1 of a flow; use velocity, x0 or v")


def check_data(cfg, path, pairs: bool) -> None:
    """A flow trains on images or on reflow pairs; `noise_end` (one-step distillation) on pairs only."""
    if not pairs and cfg.flow.time_density == "noise_end":
        raise ConfigError("method.flow.time_density: noise_end (one-step distillation) trains on reflow "
                          f"pairs, and {path} holds images; draw pairs with `genkit reflow` first")


def build_path(method_cfg) -> FlowPath:
    return FlowPath(method_cfg.flow.shift)


class RectifiedFlow(DenoisingMethod):
    """Regress the velocity eps - x0 at x_t = (1 - t) x0 + t eps.

    t comes from the configured density, then the path's shift; with `density_as: weight`, t is
    uniform instead and the loss is weighted by the density of the shifted t, which has the same
    expected loss (and more variance)."""

    build_path = staticmethod(build_path)
    path: FlowPath

    def __init__(self, cfg, num_classes: int = 0, path: FlowPath | None = None):
        super().__init__(cfg, num_classes, path)
        self.density = build_density(cfg.flow)

    def sample_time(self, n: int, generator: torch.Generator | None):
        if self.cfg.flow.density_as == "sample":
            return self.path.time_warp(self.density.sample(n, generator)), None
        t = torch.rand(n, generator=generator, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
        return t, self.path.warped_density(self.density.pdf, t)
