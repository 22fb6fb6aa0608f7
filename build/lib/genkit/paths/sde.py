"""The score-SDE processes of Song et al. 2021 ("Score-Based Generative Modeling through
Stochastic Differential Equations", section 3.4 and appendix B) as Gaussian paths.

Each gives the marginals of its forward SDE in closed form; the drift and diffusion follow from
them (`GaussianPath.drift_coef`, `diffusion_sq`), and the samplers and the likelihood take them
from there.
"""
from __future__ import annotations

import math

import torch

from genkit.paths.base import GaussianPath, _bcast


class VPPath(GaussianPath):
    """Variance preserving: dx = -beta(t)/2 x dt + sqrt(beta(t)) dW, beta linear from beta_min to
    beta_max; alpha = exp(-B/2), sigma^2 = 1 - exp(-B) with B(t) = int_0^t beta."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = beta_min, beta_max

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def integral(self, t: torch.Tensor) -> torch.Tensor:
        """B(t) = int_0^t beta(s) ds."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def alpha(self, t):
        return torch.exp(-0.5 * self.integral(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(-self.integral(t)))

    def d_alpha(self, t):
        return -0.5 * self.beta(t) * self.alpha(t)

    def d_sigma(self, t):
        return 0.5 * self.beta(t) * torch.exp(-self.integral(t)) / self.sigma(t)

    def drift_coef(self, t):
        return -0.5 * self.beta(t)

    def diffusion_sq(self, t):  # the general formula is 0 * inf at t = 0
        return self.beta(t)


class SubVPPath(VPPath):
    """Sub-VP: the VP drift with diffusion beta(t) (1 - exp(-2B)); its std is 1 - exp(-B), below
    the VP's at every t (Song et al. 2021, eq. 11)."""

    def sigma(self, t):
        return -torch.expm1(-self.integral(t))

    def d_sigma(self, t):
        return self.beta(t) * torch.exp(-self.integral(t))

    def diffusion_sq(self, t):
        return self.beta(t) * -torch.expm1(-2 * self.integral(t))


class VEPath(GaussianPath):
    """Variance exploding: x_t = x0 + sigma(t) eps with sigma geometric from sigma_min to sigma_max.

    The net sees x_t / sqrt(1 + sigma^2), so that its input has about unit variance at every t."""

    t_min = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.log_ratio = math.log(sigma_max / sigma_min)

    def alpha(self, t):
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float64))

    def sigma(self, t):
        return self.sigma_min * torch.exp(self.log_ratio * t)

    def d_alpha(self, t):
        return torch.zeros_like(torch.as_tensor(t, dtype=torch.float64))

    def d_sigma(self, t):
        return self.sigma(t) * self.log_ratio

    def net_input(self, x, t):
        return x * _bcast(torch.rsqrt(1 + self.sigma(t) ** 2), x)
