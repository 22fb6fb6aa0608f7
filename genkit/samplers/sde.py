"""Stochastic samplers of the reverse-time SDE dx = [f x - g^2 score] dt + g dW (Song et al.
2021, eq. 6), for any path through its forward SDE (`GaussianPath.drift_coef`, `diffusion_sq`).

Where alpha(t) = 0 (a flow or a zero-terminal-SNR schedule at t = 1) the reverse SDE is
singular (f and g^2 are infinite), and where the SNR is below 2^-24 (DDPM's floored zero-SNR
and cosine ends) an Euler-Maruyama step across it is badly conditioned. A step that starts at
such a time is the exact posterior step q(x_s | x_t, x0_hat) instead (DDPM's ancestral step,
`ddim_step` at eta = 1): the limit of the reverse SDE's kernel, which needs only x0_hat, finite
there.
"""
from __future__ import annotations

import torch

from genkit.registry import ArgumentError
from genkit.samplers.base import Callback, DenoiserLike, NoiseSource, randn_like, time_pairs
from genkit.samplers.ddim import ddim_step


PURE_NOISE_SNR = 2.0**-24  # alpha^2 / sigma^2 at or below which a step starts from pure noise


def _pure_noise(alpha: float, sigma: float) -> bool:
    return alpha**2 <= PURE_NOISE_SNR * sigma**2


def em(denoiser: DenoiserLike, x: torch.Tensor, ts: torch.Tensor, noise: NoiseSource | None = None,
       callback: Callback | None = None, progress: bool = False, denoise: bool = True) -> torch.Tensor:
    """Euler-Maruyama on the reverse SDE. With `denoise`, the last step to t = 0 returns the
    denoised estimate E[x0 | x_t] (Tweedie) instead of a noiseless Euler step."""
    path = denoiser.path
    alpha, sigma = path.alpha(ts).tolist(), path.sigma(ts).tolist()
    for i, (t, s) in enumerate(time_pairs(ts, progress)):
        x0, eps = denoiser(x, t)
        if callback:
            callback(i, t, x, x0)
        if s == 0 and denoise:
            return x0
        if _pure_noise(alpha[i], sigma[i]):  # singular start: the exact posterior step
            x = ddim_step(x0, eps, alpha[i], sigma[i], alpha[i + 1], sigma[i + 1], 1.0, noise)
            continue
        tt = torch.tensor([t], dtype=torch.float64)
        f, g2 = float(path.drift_coef(tt)), float(path.diffusion_sq(tt))
        x = x + (f * x + g2 * eps / sigma[i]) * (s - t)  # score = -eps / sigma, dt = s - t < 0
        if s > 0:
            x = x + (g2 * (t - s)) ** 0.5 * randn_like(noise, x)
    return x


def langevin(denoiser: DenoiserLike, x: torch.Tensor, t: float, snr: float, step_scale: float, noise) -> torch.Tensor:
    """One Langevin corrector step at time t (Song et al. 2021, algorithm 5).

    Song et al. set the step so that |step * score| / |sqrt(2 step) z| = snr with norms averaged
    over the batch, times alpha_i = 1 - beta_i <= 1 (`step_scale`). Here the norms are their
    expectations, |z|^2 = D and |score|^2 = D / sigma^2, giving step = 2 alpha_i (snr sigma)^2:
    the same in high dimension, and each sample stays independent of the batch it is drawn in
    (per-sample norms fling low-dimensional samples whose score happens to be small)."""
    _, eps = denoiser(x, t)
    sigma = float(denoiser.path.sigma(torch.tensor([t], dtype=torch.float64)))
    step = 2 * step_scale * (snr * sigma) ** 2
    return x - step * eps / sigma + (2 * step) ** 0.5 * randn_like(noise, x)


def pc(denoiser: DenoiserLike, x: torch.Tensor, ts: torch.Tensor, noise: NoiseSource | None = None,
       callback: Callback | None = None, progress: bool = False, predictor: str = "reverse_diffusion", snr: float = 0.16, n_corrector: int = 1,
       denoise: bool = True) -> torch.Tensor:
    """Predictor-corrector sampling (Song et al. 2021, algorithms 2, 3 and 5): at each time,
    `n_corrector` Langevin steps, then one predictor step to the next time. NFE per step:
    n_corrector + 1 (none for the corrector at a pure-noise start, where its step is 0).

    The Langevin step is scaled by alpha_i = (alpha_t / alpha_s)^2 <= 1, the one-step signal
    retention 1 - beta_i of algorithm 5 on the grid (t, s). Predictor `reverse_diffusion`
    reverses the path's exact one-step kernel x_t = r x_s + G z (r = alpha_t / alpha_s,
    G^2 = sigma_t^2 - r^2 sigma_s^2): x_s = (2 - r) x_t + G^2 score + G z; `ancestral` draws from
    DDPM's posterior q(x_s | x_t, x0_hat).
    """
    if predictor not in ("reverse_diffusion", "ancestral"):
        raise ArgumentError("predictor", f"must be reverse_diffusion or ancestral, got {predictor!r}")
    if not 0 <= n_corrector <= 100:  # each corrector step costs a network evaluation per time
        raise ArgumentError("n_corrector", f"must lie in 0..100, got {n_corrector}")
    if not 0 <= snr <= 1:  # Song et al. use 0.16; a Langevin step with snr near 1 already overshoots
        raise ArgumentError("snr", f"must lie in [0, 1], got {snr}")
    alpha, sigma = denoiser.path.alpha(ts).tolist(), denoiser.path.sigma(ts).tolist()
    for i, (t, s) in enumerate(time_pairs(ts, progress)):
        a_t, s_t, a_s, s_s = alpha[i], sigma[i], alpha[i + 1], sigma[i + 1]
        if not _pure_noise(a_t, s_t):
            for _ in range(n_corrector):
                x = langevin(denoiser, x, t, snr, (a_t / a_s) ** 2, noise)
        x0, eps = denoiser(x, t)
        if callback:
            callback(i, t, x, x0)
        if s == 0 and denoise:
            return x0
        if predictor == "ancestral" or _pure_noise(a_t, s_t):
            x = ddim_step(x0, eps, a_t, s_t, a_s, s_s, 1.0, noise)
            continue
        r = a_t / a_s
        g2 = max(s_t**2 - (r * s_s) ** 2, 0.0)
        x = (2 - r) * x + g2 * (-eps / s_t)
        if s > 0:
            x = x + g2**0.5 * randn_like(noise, x)
    return x
