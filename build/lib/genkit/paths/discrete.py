"""DDPM's discrete chain as a continuous-time path."""
from __future__ import annotations

import torch

from genkit.paths.base import GaussianPath


class DiscreteVPPath(GaussianPath):
    """DDPM's discrete variance-preserving chain (Ho et al. 2020) as a path in continuous time.

    Step k = 0..T-1 sits at t = (k + 1) / T with alpha^2 = alphas_cumprod[k]; t = 0 is clean
    data. Between the knots log(alphas_cumprod) follows a monotone cubic Hermite interpolant
    (Fritsch & Carlson 1980): exact at the knots, with a continuous derivative, so that
    adaptive ODE solvers see a smooth probability-flow ODE.
    """

    def __init__(self, betas: torch.Tensor):
        betas = betas.double()
        self.num_timesteps = T = len(betas)
        self.t_min = 1 / T
        self.betas = betas
        # A zero-terminal-SNR schedule ends on alpha-bar = 0 exactly. That entry alone is floored,
        # so that its log stays finite: at 2^-24 as in diffusers' Euler and DPM-Solver schedulers,
        # or at half the entry before it where that is smaller (rescaled linear: 4.2e-9), so that
        # alpha-bar keeps falling. Every other schedule keeps its own values (cosine ends at 2.4e-9).
        abar = torch.cumprod(1 - betas, dim=0)
        if abar[-1] == 0:
            abar[-1] = min(2.0**-24, float(abar[-2]) / 2) if T > 1 else 2.0**-24
        self.alphas_cumprod = abar
        # log alpha-bar at the T + 1 knots t = 0, 1/T, ..., 1, and its slopes there
        self._y = torch.cat([torch.zeros(1, dtype=torch.float64), torch.log(self.alphas_cumprod)])
        secant = torch.diff(self._y) * T  # [T]
        inner = 2 / (1 / secant[:-1] + 1 / secant[1:])  # harmonic mean: monotone (all secants < 0)
        self._m = torch.cat([secant[:1], inner, secant[-1:]])

    def timestep_to_t(self, k: torch.Tensor) -> torch.Tensor:
        return (k.double() + 1) / self.num_timesteps

    def snap(self, t: torch.Tensor) -> torch.Tensor:
        """Round to the discrete steps, dropping repeats."""
        T = self.num_timesteps
        return torch.unique_consecutive((t * T).round().clamp(min=1)) / T

    def _interp(self, t: torch.Tensor):
        """log alpha-bar(t) and its derivative."""
        T = self.num_timesteps
        pos = t.double().clamp(0, 1) * T
        i = pos.floor().long().clamp(max=T - 1)
        s = pos - i
        y0, y1 = self._y.to(t.device)[i], self._y.to(t.device)[i + 1]
        m0, m1 = self._m.to(t.device)[i] / T, self._m.to(t.device)[i + 1] / T  # slopes per unit of s
        value = (2 * s**3 - 3 * s**2 + 1) * y0 + (s**3 - 2 * s**2 + s) * m0 + (3 * s**2 - 2 * s**3) * y1 + (s**3 - s**2) * m1
        slope = (6 * s**2 - 6 * s) * (y0 - y1) + (3 * s**2 - 4 * s + 1) * m0 + (3 * s**2 - 2 * s) * m1
        return value, slope * T

    def alpha(self, t):
        return torch.exp(0.5 * self._interp(t)[0])

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(self._interp(t)[0]))

    def d_alpha(self, t):
        log_abar, slope = self._interp(t)
        return 0.5 * slope * torch.exp(0.5 * log_abar)

    def d_sigma(self, t):
        log_abar, slope = self._interp(t)
        return -0.5 * slope * torch.exp(log_abar) / torch.sqrt(-torch.expm1(log_abar))

    def timesteps(self, steps: int, spacing: str = "trailing", steps_offset: int = 0) -> torch.Tensor:
        """Descending sampling times on the discrete grid, followed by t = 0: [steps + 1].

        Spacings follow diffusers' names (Lin et al. 2024, table 2): `trailing` starts at the
        last step T - 1, `leading` and `linspace` at or below it; `steps_offset` shifts the
        `leading` steps up (Stable Diffusion uses 1). Unlike diffusers' float `arange`, trailing
        spacing gives exactly `steps` distinct steps for every (T, steps).
        """
        T = self.num_timesteps
        if not 0 < steps <= T:
            raise ValueError(f"steps must lie in 1..{T} for a {T}-step DDPM, got {steps}")
        if steps_offset and spacing != "leading":
            raise ValueError("steps_offset applies to leading spacing only")
        if spacing == "trailing":  # k_i = round(T (steps - i) / steps) - 1, computed without a float stride
            ks = torch.round(T * (steps - torch.arange(steps, dtype=torch.float64)) / steps) - 1
        elif spacing == "leading":
            ks = torch.arange(steps, dtype=torch.float64).flip(0) * (T // steps) + steps_offset
            if ks[0] > T - 1:
                raise ValueError(f"steps_offset {steps_offset} puts the first of {steps} leading steps past T - 1 = {T - 1}")
        elif spacing == "linspace":
            ks = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().flip(0)
        else:
            raise ValueError(f"unknown timestep spacing {spacing!r}; expected trailing, leading or linspace")
        return torch.cat([self.timestep_to_t(ks), torch.zeros(1, dtype=torch.float64)])
