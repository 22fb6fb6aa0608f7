"""Time grids fitted to a model: steps placed where its denoised estimate moves.

A pilot solve of the probability-flow ODE (DPM-Solver++(2M) with its corrector on a fine log-SNR
grid, from a few fixed noise draws) records the denoised estimate x0_hat along the way. A
second-order step in lambda = log(alpha / sigma) makes a local error that grows as h^3 times how
fast x0_hat bends; steps of equal error then have h proportional to |dx0_hat / dlambda|^(-1/3),
so a K-step grid puts its points at equal shares of the integral of |dx0_hat / dlambda|^(1/3)
(the RMS over the draws), the last share ending in the denoising jump to t = 0. Where the model's
data have fine detail the grid reaches low noise; where they have none it spends nothing there.
The same aim as Align Your Steps (Sabour et al. 2024) and GITS (Chen et al. 2024), by
equidistribution instead of an optimisation. One pilot serves every step count.
"""
from __future__ import annotations

import numpy as np
import torch

from genkit.paths import GaussianPath
from genkit.samplers.base import DenoiserLike
from genkit.samplers.ode import dpmpp_2m_pc
from genkit.samplers.schedules import _finish, log_snr

PILOT_DRAWS, PILOT_SEED = 32, 0  # the noise draws a model's pilot starts from
PILOT_STEPS = 32  # fine enough: 32, 64 and 200 pilot steps give the same grids to within a few percent
EXPONENT = 1 / 3  # step length ~ |dx0/dlambda|^(-1/3): the equal-error rule of a second-order method
SIGMA_MAX = 80.0  # the pilot (and the grid) start at noise level sigma / alpha = 80, as `auto`'s


class AdaptiveGrid:
    """A time grid fitted to one model (see the module): `grid(path, steps)` -> [steps + 1] times.

    `lam` [M] is the pilot's log-SNR (ascending) and `share` [M] the cumulative share, 0 to 1, of the
    integral of |dx0_hat / dlambda|^(1/3) reached at each pilot point; `t_start` the pilot's first time.
    """

    def __init__(self, lam: torch.Tensor, share: torch.Tensor, t_start: float, pilot_nfe: int):
        self.lam, self.share, self.t_start, self.pilot_nfe = lam, share, t_start, pilot_nfe

    @classmethod
    def calibrate(cls, denoiser: DenoiserLike, x: torch.Tensor, steps: int = PILOT_STEPS) -> "AdaptiveGrid":
        """Fit a grid to `denoiser` from a pilot solve of `steps` steps starting at noise draws x [N, ...]
        (unit variance: scaled here to the pilot's first time)."""
        path = denoiser.path
        ts = log_snr(path, steps, sigma_max=SIGMA_MAX)
        x0 = []
        before = denoiser.nfe
        dpmpp_2m_pc(denoiser, x * path.prior_std(float(ts[0])), ts,
                    callback=lambda i, t, x_t, x0_hat: x0.append(x0_hat.double().flatten(1)))
        moved = torch.stack([(b - a).square().mean().sqrt() for a, b in zip(x0[:-1], x0[1:])])  # [steps - 1]
        lam = path.log_snr(ts[:-1]).double()  # [steps], ascending
        dlam = lam.diff()
        density = (moved / dlam) ** EXPONENT * dlam
        share = torch.cat([torch.zeros(1, dtype=torch.float64), density.cumsum(0)])
        if not share[-1] > 0:  # the estimate never moved (a constant net): fall back to even log-SNR steps
            share = torch.cat([torch.zeros(1, dtype=torch.float64), dlam.cumsum(0)])
        return cls(lam.cpu(), (share / share[-1]).cpu(), float(ts[0]), denoiser.nfe - before)

    def grid(self, path: GaussianPath, steps: int) -> torch.Tensor:
        """`steps` + 1 descending times: the pilot's start, then the points where the share reaches
        1/steps, 2/steps, ... (steps - 1)/steps, then t = 0 (the last share is the jump to t = 0)."""
        if not isinstance(steps, int) or steps <= 0:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        fractions = np.arange(1, steps) / steps
        lam = torch.from_numpy(np.interp(fractions, self.share.numpy(), self.lam.numpy()))
        t = torch.cat([torch.tensor([self.t_start], dtype=torch.float64), path.t_of_log_snr(lam)])
        return _finish(path, t)

    __call__ = grid  # a schedule: (path, steps) -> times
