"""DDIM (Song, Meng & Ermon 2021) with stochasticity eta; eta = 1 is DDPM's ancestral sampler."""
from __future__ import annotations

import torch

from genkit.registry import ArgumentError
from genkit.samplers.base import Callback, DenoiserLike, NoiseSource, time_pairs


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, a_t: float, s_t: float, a_s: float, s_s: float,
              eta: float, noise: NoiseSource | None) -> torch.Tensor:
    """One DDIM step from t to s, generalised to any Gaussian path:

    x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z,
    c^2 = eta^2 * (sigma_s^2 / sigma_t^2) * (sigma_t^2 - alpha_t^2 sigma_s^2 / alpha_s^2),
    where c^2 at eta = 1 is the variance of the posterior q(x_s | x_t, x0) (Ho et al. 2020, eq. 7).
    """
    c2 = 0.0
    if eta > 0 and s_s > 0:
        c2 = eta**2 * (s_s**2 / s_t**2) * max(s_t**2 - (a_t * s_s / a_s) ** 2, 0.0)
    x = a_s * x0 + max(s_s**2 - c2, 0.0) ** 0.5 * eps
    if c2 > 0:
        x = x + c2**0.5 * (noise.randn_like(x) if noise is not None else torch.randn_like(x))
    return x


def ddim(denoiser: DenoiserLike, x: torch.Tensor, ts: torch.Tensor, noise: NoiseSource | None = None,
         callback: Callback | None = None, progress: bool = False, eta: float = 0.0) -> torch.Tensor:
    """Step x from ts[0] down to ts[-1] with `ddim_step`; eta = 0 is deterministic."""
    if not 0 <= eta <= 1:  # beyond 1 the added noise would exceed sigma_s, and is clipped to it
        raise ArgumentError("eta", f"must lie in [0, 1] (0: deterministic DDIM, 1: DDPM's ancestral sampler), "
                                   f"got {eta}")
    alpha, sigma = denoiser.path.alpha(ts).tolist(), denoiser.path.sigma(ts).tolist()
    for i, (t, s) in enumerate(time_pairs(ts, progress)):
        x0, eps = denoiser(x, t)
        if callback:
            callback(i, t, x, x0)
        x = ddim_step(x0, eps, alpha[i], sigma[i], alpha[i + 1], sigma[i + 1], eta, noise)
    return x


def ddpm(denoiser: DenoiserLike, x: torch.Tensor, ts: torch.Tensor, noise: NoiseSource | None = None,
         callback: Callback | None = None, progress: bool = False) -> torch.Tensor:
    """DDPM's ancestral sampler (Ho et al. 2020, algorithm 2) on any time grid: DDIM at eta = 1."""
    return ddim(denoiser, x, ts, noise, callback, progress, eta=1.0)
