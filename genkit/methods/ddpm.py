"""DDPM training (Ho et al. 2020): discrete beta schedules and the denoising loss."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genkit.config import MethodConfig
from genkit.paths import DiscreteVPPath


def make_betas(schedule: str, num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Beta_k for k = 0..T-1 under diffusers' schedule names: [T] float64."""
    T = num_timesteps
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    if schedule == "scaled_linear":  # Stable Diffusion's: linear in sqrt(beta)
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    if schedule == "cosine":  # squaredcos_cap_v2 (Nichol & Dhariwal 2021), betas capped at 0.999
        def abar(u):
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor([min(1 - abar((k + 1) / T) / abar(k / T), 0.999) for k in range(T)], dtype=torch.float64)
    if schedule == "sigmoid":  # GeoDiff's sigmoid schedule, as diffusers defines it
        return torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (beta_end - beta_start) + beta_start
    raise ValueError(f"unknown beta schedule {schedule!r}")


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha-bar) so that the last step is pure noise (Lin et al. 2024,
    algorithm 1), keeping the first step's value. The last beta becomes exactly 1; alpha-bar stays
    in [0, 1], so no inf or NaN arises (use v or x0 prediction: eps cannot be inverted at t = 1)."""
    root = torch.cumprod(1 - betas.double(), dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    abar = root**2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1 - alphas


def loss_weight(snr: torch.Tensor, prediction: str, weighting: str, gamma: float) -> torch.Tensor:
    """Per-sample weight on the MSE of a `prediction`-space loss.

    `plain` weighs every prediction space as is. `min_snr` is min(SNR, gamma) in x0 space
    (Hang et al. 2023); `trunc_snr` is max(SNR, 1) in x0 space (Salimans & Ho 2022). An x0-space
    weight w becomes w / SNR for eps and w / (SNR + 1) for v, since ||eps err||^2 = SNR ||x0 err||^2.
    """
    if weighting == "plain":
        return torch.ones_like(snr)
    x0_weight = snr.clamp(max=gamma) if weighting == "min_snr" else snr.clamp(min=1)
    per_space = {"x0": 1.0, "eps": snr, "v": snr + 1}[prediction]
    return x0_weight / per_space


class DDPM:
    """Noise-prediction training on the discrete VP path; the net sees t = (k + 1) / T."""

    def __init__(self, cfg: MethodConfig, num_classes: int = 0):
        self.cfg = cfg
        self.null_class = num_classes
        self.prediction = cfg.prediction
        betas = make_betas(cfg.beta_schedule, cfg.num_timesteps, cfg.beta_start, cfg.beta_end)
        self.path = DiscreteVPPath(rescale_zero_terminal_snr(betas) if cfg.zero_terminal_snr else betas)

    def loss(self, net, x0: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator | None = None):
        """Weighted mean squared error of the net's prediction at a uniformly drawn step k."""
        b = x0.shape[0]
        k = torch.randint(0, self.cfg.num_timesteps, (b,), generator=generator)
        t = self.path.timestep_to_t(k)
        eps = torch.randn(x0.shape, generator=generator).to(x0)
        x_t = self.path.noise(x0, eps, t)
        target = self.path.from_x0_eps(x0, eps, t, self.prediction)
        if y is not None and self.cfg.p_uncond > 0:
            drop = torch.rand(b, generator=generator).to(y.device) < self.cfg.p_uncond
            y = torch.where(drop, torch.full_like(y, self.null_class), y)
        pred = net(x_t, t.to(x0), y)
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)  # [B]
        if self.cfg.loss_weighting == "plain":
            return per_sample.mean()
        snr = torch.exp(self.path.log_snr(t)).to(per_sample)
        return (loss_weight(snr, self.prediction, self.cfg.loss_weighting, self.cfg.snr_gamma) * per_sample).mean()

