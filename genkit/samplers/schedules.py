"""Time grids for samplers: descending t from the start time to 0, [steps + 1] float64.

Each takes the path, so it can place steps by the path's own noise level; `uniform` is evenly
spaced in t (through the path's time warp: SD3's shift for flows; for DDPM's discrete path
it is diffusers' "trailing" spacing), `log_snr` is evenly spaced in log-SNR (Lu et al. 2022),
`karras` is EDM's rho-spaced noise levels (Karras et al. 2022) in sigma / alpha; `flow` and
`angle` are evenly spaced in the rectified flow's and the cosine schedule's clocks, given as
functions of sigma / alpha alone, so they put the same noise levels on every path; `auto`
chooses between `flow` and `log_snr` by the step count; `trailing`, `leading` and `linspace` are
diffusers' spacings of DDPM's discrete steps.
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


def log_snr(path: GaussianPath, steps: int, t_max: float = 1.0, t_min: float | None = None,
            sigma_max: float | None = None, sigma_min: float | None = None) -> torch.Tensor:
    hi, lo = _log_snr_range(path, t_max, t_min, sigma_max, sigma_min)
    lam = torch.linspace(hi, lo, steps, dtype=torch.float64)
    return _finish(path, _start_at(path.t_of_log_snr(lam), t_max, sigma_max))


def karras(path: GaussianPath, steps: int, rho: float = 7.0, t_max: float = 1.0, t_min: float | None = None,
           sigma_max: float | None = None, sigma_min: float | None = None) -> torch.Tensor:
    hi, lo = _log_snr_range(path, t_max, t_min, sigma_max, sigma_min)
    s_max, s_min = (torch.tensor([hi, lo], dtype=torch.float64) * (-0.5 / rho)).exp()  # (sigma / alpha)^(1/rho)
    levels = (s_max + torch.linspace(0, 1, steps, dtype=torch.float64) * (s_min - s_max)) ** rho
    return _finish(path, _start_at(path.t_of_log_snr(-2 * torch.log(levels)), t_max, sigma_max))


def angle(path: GaussianPath, steps: int, t_max: float = 1.0) -> torch.Tensor:
    """Evenly spaced in arctan(sigma / alpha) from the start down to 0 (the cosine schedule's own
    clock, Nichol & Dhariwal 2021): the same noise levels on every path, and no evaluation spent
    at a nearly clean time."""
    return _clock(path, steps, t_max, torch.atan, torch.tan)


def flow(path: GaussianPath, steps: int, t_max: float = 1.0, rho: float = 1.0, shift: float = 1.0) -> torch.Tensor:
    """Evenly spaced in u^(1 / rho), u = sigma / (alpha + sigma), from the start down to 0. With rho = 1
    that is the rectified flow's own clock: the same noise levels on every path, and no evaluation
    spent at a nearly clean time. rho > 1 packs the steps toward the clean end, as EDM's rho does in
    sigma (Karras et al. 2022). `shift` s maps each point u to s u / (1 + (s - 1) u), SD3's time
    shift (Esser et al. 2024): s < 1 moves the steps toward the clean end, most near it."""
    if not 0 < shift < math.inf:
        raise ValueError(f"shift must be a positive number, got {shift!r}")

    def shifted(u, s):
        return s * u / (1 + (s - 1) * u)

    return _clock(path, steps, t_max, lambda sigma: shifted(sigma / (1 + sigma), 1 / shift),
                  lambda v: (u := shifted(v, shift)) / (1 - u), rho)


def _clock(path: GaussianPath, steps: int, t_max: float, clock, inverse, rho: float = 1.0) -> torch.Tensor:
    """steps + 1 times: `steps` evenly spaced in clock(sigma / alpha)^(1 / rho) from t_max, then t = 0
    (clock(0) = 0). With rho = 1 the spacing runs down to 0; a packed one (rho > 1) runs toward the
    path's least noisy time t_min, which one step more would reach, so that no two steps fall below
    it (on DDPM's discrete path they would snap to the same step)."""
    if not rho >= 1:
        raise ValueError(f"rho must be a number >= 1, got {rho!r}")
    hi, lo = _log_snr_range(path, t_max, None)
    top, bottom = clock(torch.tensor([math.exp(-hi / 2), math.exp(-lo / 2)], dtype=torch.float64)) ** (1 / rho)
    bottom = bottom if rho > 1 else 0.0
    fractions = torch.linspace(1, 0, steps + 1, dtype=torch.float64)[:-1]
    levels = inverse((bottom + (top - bottom) * fractions) ** rho)  # sigma / alpha > 0
    return _finish(path, _start_at(path.t_of_log_snr(-2 * torch.log(levels)), t_max))


def auto(path: GaussianPath, steps: int, t_max: float = 1.0) -> torch.Tensor:
    """A robust fixed grid for DPM-Solver++ and the ODE samplers: the flow clock (`flow`) below 10
    steps, where a log-SNR grid wastes its last evaluation at a nearly clean time and strides too
    far between the others; from 10 steps on, even in log-SNR with the noise level sigma / alpha
    capped at EDM's 80 (Karras et al. 2022), which keeps cosine and flow paths from spending steps
    at SNR 1e-8."""
    if steps < 10:
        return flow(path, steps, t_max)
    return log_snr(path, steps, t_max, sigma_max=80.0)


def _log_snr_range(path: GaussianPath, t_max: float, t_min: float | None, sigma_max: float | None = None,
                   sigma_min: float | None = None) -> tuple[float, float]:
    """log-SNR at the two ends; where it is -inf at t_max (alpha = 0: zero terminal SNR, flows),
    the spacing starts from the log-SNR a hair before it. `sigma_max` and `sigma_min` bound the
    noise level sigma / alpha (EDM's units, Karras et al. 2022) within the path's own range."""
    t_min = t_min if t_min is not None else path.t_min
    hi, lo = path.log_snr(torch.tensor([t_max, t_min], dtype=torch.float64)).tolist()
    if not math.isfinite(hi):
        hi = float(path.log_snr(torch.tensor([t_max - path.t_min], dtype=torch.float64)))
    if sigma_max is not None:
        hi = max(hi, -2 * math.log(sigma_max))
    if sigma_min is not None:
        lo = min(lo, -2 * math.log(sigma_min))
    return hi, lo


def _start_at(ts: torch.Tensor, t_max: float, sigma_max: float | None = None) -> torch.Tensor:
    """The grid starts at t_max, unless `sigma_max` starts it below (then the sampler's starting
    noise is drawn at that time: nearly pure noise, Karras et al. 2022, section 5)."""
    if sigma_max is None:
        ts[0] = t_max
    return ts


def _spacing(name: str):
    """diffusers' timestep spacing `name` on DDPM's discrete grid (see DiscreteVPPath.timesteps)."""
    def schedule(path: GaussianPath, steps: int, **options) -> torch.Tensor:
        if not isinstance(path, DiscreteVPPath):
            raise ValueError(f"the '{name}' spacing needs DDPM's discrete path")
        return path.timesteps(steps, name, **options)
    return schedule


SCHEDULES = {"auto": auto, "uniform": uniform, "log_snr": log_snr, "karras": karras, "angle": angle, "flow": flow,
             "trailing": _spacing("trailing"), "leading": _spacing("leading"), "linspace": _spacing("linspace")}
