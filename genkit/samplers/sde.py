"""Stochastic samplers of the reverse-time SDE dx = [f x - g^2 score] dt + g dW (Song et al.
2021, eq. 6), for any path through its forward SDE (`GaussianPath.drift_coef`, `diffusion_sq`)."""
from __future__ import annotations

import torch

from genkit.config import ConfigError
from genkit.samplers.base import Denoiser, time_pairs
from genkit.samplers.ddim import ddim_step


def _randn_like(noise, x: torch.Tensor) -> torch.Tensor:
    return noise.randn_like(x) if noise is not None else torch.randn_like(x)


def _check_start(denoiser: Denoiser, ts: torch.Tensor) -> None:
    if float(denoiser.path.alpha(ts[:1])) == 0:
        raise ConfigError("--sampler: the reverse SDE is singular where alpha(t) = 0 (a flow or zero-terminal-SNR "
                          "path at t = 1); use an ODE sampler (euler, heun, dpmpp_2m, ode)")


def em(denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor, noise=None, progress: bool = False,
       denoise: bool = True) -> torch.Tensor:
    """Euler-Maruyama on the reverse SDE. With `denoise`, the last step to t = 0 returns the
    denoised estimate E[x0 | x_t] (Tweedie) instead of a noiseless Euler step."""
    _check_start(denoiser, ts)
    path = denoiser.path
    for t, s in time_pairs(ts, progress):
        x0, eps = denoiser(x, t)
        if s == 0 and denoise:
            return x0
        tt = torch.tensor([t], dtype=torch.float64)
        f, g2, sigma = float(path.drift_coef(tt)), float(path.diffusion_sq(tt)), float(path.sigma(tt))
        x = x + (f * x + g2 * eps / sigma) * (s - t)  # score = -eps / sigma, dt = s - t < 0
        if s > 0:
            x = x + (g2 * (t - s)) ** 0.5 * _randn_like(noise, x)
    return x


def langevin(denoiser: Denoiser, x: torch.Tensor, t: float, snr: float, step_scale: float, noise) -> torch.Tensor:
    """One Langevin corrector step at time t (Song et al. 2021, algorithm 5).

    Song et al. set the step so that |step * score| / |sqrt(2 step) z| = snr with norms averaged
    over the batch. Here the norms are their expectations, |z|^2 = D and |score|^2 = D / sigma^2,
    giving step = 2 a (snr sigma)^2: the same in high dimension, and each sample stays
    independent of the batch it is drawn in (per-sample norms fling low-dimensional samples
    whose score happens to be small)."""
    _, eps = denoiser(x, t)
    sigma = float(denoiser.path.sigma(torch.tensor([t], dtype=torch.float64)))
    step = 2 * step_scale * (snr * sigma) ** 2
    return x - step * eps / sigma + (2 * step) ** 0.5 * _randn_like(noise, x)


def pc(denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor, noise=None, progress: bool = False,
       predictor: str = "reverse_diffusion", snr: float = 0.16, n_corrector: int = 1,
       denoise: bool = True) -> torch.Tensor:
    """Predictor-corrector sampling (Song et al. 2021, algorithms 2 and 3): at each time,
    `n_corrector` Langevin steps, then one predictor step to the next time. NFE per step:
    n_corrector + 1.

    predictor `reverse_diffusion` reverses the path's exact one-step kernel x_t = r x_s + G z
    (r = alpha_t / alpha_s, G^2 = sigma_t^2 - r^2 sigma_s^2): x_s = (2 - r) x_t + G^2 score + G z;
    `ancestral` draws from DDPM's posterior q(x_s | x_t, x0_hat).
    """
    if predictor not in ("reverse_diffusion", "ancestral"):
        raise ConfigError(f"--sampler pc: unknown predictor '{predictor}'; use reverse_diffusion or ancestral")
    _check_start(denoiser, ts)
    alpha, sigma = denoiser.path.alpha(ts).tolist(), denoiser.path.sigma(ts).tolist()
    for i, (t, s) in enumerate(time_pairs(ts, progress)):
        a_t, s_t, a_s, s_s = alpha[i], sigma[i], alpha[i + 1], sigma[i + 1]
        for _ in range(n_corrector):
            x = langevin(denoiser, x, t, snr, (a_s / a_t) ** 2, noise)
        x0, eps = denoiser(x, t)
        if s == 0 and denoise:
            return x0
        if predictor == "ancestral":
            x = ddim_step(x0, eps, a_t, s_t, a_s, s_s, 1.0, noise)
            continue
        r = a_t / a_s
        g2 = max(s_t**2 - (r * s_s) ** 2, 0.0)
        x = (2 - r) * x + g2 * (-eps / s_t)
        if s > 0:
            x = x + g2**0.5 * _randn_like(noise, x)
    return x
