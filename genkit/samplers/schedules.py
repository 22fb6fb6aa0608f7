"""Time grids for samplers: descending t from the start time to 0, [steps + 1] float64.

Each takes the path, so it can place steps by the path's own noise level; `uniform` is evenly
spaced in t (through the path's time warp: SD3's shift for flows; for DDPM's discrete path
it is diffusers' "trailing" spacing), `log_snr` is evenly
spaced in log-SNR (Lu et al. 2022), `karras` is EDM's rho-spaced noise levels (Karras et al.
2022) in sigma / alpha; `trailing`, `leading` and `linspace` are diffusers' spacings of DDPM's
discrete steps.
"""
from __future__ import annotations

import math

import torch

from genkit.paths import DiscreteVPPath, GaussianPath


def _finish(path: GaussianPath, t: torch.Tensor) -> torch.Tensor:
    """Snap to the path's own times (DDPM's discrete steps) and append t = 0."""
    return torch.cat([path.snap(t), torch.zeros(1, dtype=torch.float64)])


def uniform(path: GaussianPath, steps: int, t_max: float = 1.0) -> torch.Tensor:
    u = torch.linspace(t_max, 0, steps + 1, dtype=torch.float64)[:-1]
    return _finish(path, path.time_warp(u))


def log_snr(path: GaussianPath, steps: int, t_max: float = 1.0, t_min: float | None = None) -> torch.Tensor:
    hi, lo = _log_snr_range(path, t_max, t_min)
    lam = torch.linspace(hi, lo, steps, dtype=torch.float64)
    return _finish(path, _start_at(path.t_of_log_snr(lam), t_max))


def karras(path: GaussianPath, steps: int, rho: float = 7.0, t_max: float = 1.0, t_min: float | None = None) -> torch.Tensor:
    hi, lo = _log_snr_range(path, t_max, t_min)
    s_max, s_min = (torch.tensor([hi, lo], dtype=torch.float64) * (-0.5 / rho)).exp()  # (sigma / alpha)^(1/rho)
    levels = (s_max + torch.linspace(0, 1, steps, dtype=torch.float64) * (s_min - s_max)) ** rho
    return _finish(path, _start_at(path.t_of_log_snr(-2 * torch.log(levels)), t_max))


def _log_snr_range(path: GaussianPath, t_max: float, t_min: float | None) -> tuple[float, float]:
    """log-SNR at the two ends; where it is -inf at t_max (alpha = 0: zero terminal SNR, flows),
    the spacing starts from the log-SNR a hair before it."""
    t_min = t_min if t_min is not None else path.t_min
    hi, lo = path.log_snr(torch.tensor([t_max, t_min], dtype=torch.float64)).tolist()
    if not math.isfinite(hi):
        hi = float(path.log_snr(torch.tensor([t_max - path.t_min], dtype=torch.float64)))
    return hi, lo


def _start_at(ts: torch.Tensor, t_max: float) -> torch.Tensor:
    ts[0] = t_max
    return ts


def _spacing(name: str):
    """diffusers' timestep spacing `name` on DDPM's discrete grid (see DiscreteVPPath.timesteps)."""
    def schedule(path: GaussianPath, steps: int) -> torch.Tensor:
        if not isinstance(path, DiscreteVPPath):
            raise ValueError(f"the '{name}' spacing needs DDPM's discrete path")
        return path.timesteps(steps, name)
    return schedule


SCHEDULES = {"uniform": uniform, "log_snr": log_snr, "karras": karras,
             "trailing": _spacing("trailing"), "leading": _spacing("leading"), "linspace": _spacing("linspace")}
