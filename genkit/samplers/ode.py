"""Deterministic samplers of the probability-flow ODE dx/dt = alpha'(t) x0 + sigma'(t) eps
(Song et al. 2021), written in the path's own time t so that they serve every path."""
from __future__ import annotations

import math

import torch

from genkit.samplers.base import Denoiser, time_pairs


def _velocity(denoiser: Denoiser, x: torch.Tensor, t: float):
    x0, eps = denoiser(x, t)
    tt = torch.tensor([t], dtype=torch.float64)
    return denoiser.path.from_x0_eps(x0, eps, tt, "velocity"), x0


def euler(denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor, noise=None, progress: bool = False) -> torch.Tensor:
    """Euler's method on the probability-flow ODE; the last step (to t = 0) lands on the
    denoised estimate, which is where an Euler step on a linear path lands too."""
    for t, s in time_pairs(ts, progress):
        u, x0 = _velocity(denoiser, x, t)
        x = x0 if s == 0 else x + (s - t) * u
    return x


def heun(denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor, noise=None, progress: bool = False) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, algorithm 1) in t; the last step to t = 0
    is a single evaluation, as in EDM. NFE = 2 * steps - 1."""
    for t, s in time_pairs(ts, progress):
        u, x0 = _velocity(denoiser, x, t)
        if s == 0:
            return x0
        guess = x + (s - t) * u
        u_next, _ = _velocity(denoiser, guess, s)
        x = x + (s - t) * 0.5 * (u + u_next)
    return x


def dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor, noise=None, progress: bool = False,
             corrector: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, algorithm 2): multistep second order in the data
    prediction, exponential integrator in lambda = log(alpha / sigma); first order on the
    first step and a denoising jump on the last.

    With `corrector`, each step is redone once the net has been evaluated at its end point,
    integrating the linear interpolant of the two data predictions exactly (a second-order
    corrector in the manner of UniC, Zhao et al. 2023). That evaluation is the one the next step
    needs anyway, so the corrector costs no network evaluation.
    """
    path = denoiser.path
    lam = (0.5 * path.log_snr(ts)).tolist()  # -inf where alpha = 0, +inf at t = 0
    alpha, sigma = path.alpha(ts).tolist(), path.sigma(ts).tolist()
    x0_prev, h_prev, x_prev = None, None, None
    for i, (t, s) in enumerate(time_pairs(ts, progress)):
        x0, _ = denoiser(x, t)
        if corrector and x_prev is not None:  # redo the step i-1 -> i with both end points known
            h = h_prev
            phi1 = -math.expm1(-h)  # 1 - e^{-h}
            phi2 = (h - phi1) / h if math.isfinite(h) else 1.0  # (h - 1 + e^{-h}) / h
            x = (sigma[i] / sigma[i - 1]) * x_prev + alpha[i] * (phi1 * x0_prev + phi2 * (x0 - x0_prev))
        if s == 0:
            return x0
        h = lam[i + 1] - lam[i]
        d = x0
        if x0_prev is not None:
            r = h_prev / h
            d = (1 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
        x_prev = x
        x = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


def dpmpp_2m_pc(denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor, noise=None, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) with the free second-order corrector (see `dpmpp_2m`)."""
    return dpmpp_2m(denoiser, x, ts, noise, progress, corrector=True)


def ode(denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor, noise=None, progress: bool = False,
        method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5) -> torch.Tensor:
    """The probability-flow ODE through torchdiffeq (Chen et al. 2018) with any of its methods.

    Adaptive methods integrate from ts[0] to the smallest positive time ts[-2] to tolerance;
    fixed-grid methods (euler, midpoint, rk4, ...) step on ts[:-1]. Then one denoising jump to
    t = 0. The NFE is whatever the solver spends (`denoiser.nfe`).
    """
    from torchdiffeq import odeint

    def velocity(t, y):
        return _velocity(denoiser, y, float(t))[0]

    adaptive = method in ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
    grid = ts[[0, -2]] if adaptive else ts[:-1]
    # adaptive solvers otherwise step past the end and interpolate back, evaluating at t < t_end
    options = {"jump_t": grid[-1:]} if adaptive else None
    x = odeint(velocity, x, grid, method=method, rtol=rtol, atol=atol, options=options)[-1]
    return denoiser(x, float(ts[-2]))[0]
