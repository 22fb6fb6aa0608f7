"""DDPM training (Ho et al. 2020): discrete beta schedules and the denoising loss."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genkit.methods.base import DenoisingMethod, loss_weight
from genkit.methods.time_densities import LOG_SNR_DENSITIES, LogSNRNormal
from genkit.paths import DiscreteVPPath
from genkit.registry import ConfigError, one_of, require

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")
LOSS_WEIGHTINGS = ("plain", "min_snr", "trunc_snr")


@dataclass
class DDPMConfig:
    """`method.ddpm`: the discrete chain and the loss weighting."""

    num_timesteps: int = 1000
    beta_schedule: str = "linear"  # linear | scaled_linear | cosine | sigmoid
    beta_start: float = 0.0001
    beta_end: float = 0.02
    zero_terminal_snr: bool = False  # rescale betas so that t = 1 is pure noise (Lin et al. 2024)
    trained_betas: tuple[float, ...] = ()  # beta_k given (diffusers' trained_betas): replaces the schedule
    loss_weighting: str = "plain"  # plain | min_snr | trunc_snr
    snr_gamma: float = 5.0  # gamma of min_snr
    timestep_density: str = "uniform"  # uniform | log_snr_normal (steps drawn by their log-SNR: LogSNRNormal)
    log_snr_mean: float = 0.0  # log_snr_normal's N(mean, std); N(0, 2) is SD3's logit-normal(0, 1) flow times
    log_snr_std: float = 2.0


def check(cfg) -> None:
    d = cfg.method.ddpm
    one_of(d.beta_schedule, BETA_SCHEDULES, "method.ddpm.beta_schedule")
    one_of(d.loss_weighting, LOSS_WEIGHTINGS, "method.ddpm.loss_weighting")
    one_of(d.timestep_density, LOG_SNR_DENSITIES, "method.ddpm.timestep_density")
    require(d, "method.ddpm", positive=["num_timesteps", "snr_gamma", "log_snr_std"])
    if not 0 < d.beta_start < d.beta_end < 1:
        raise ConfigError("method.ddpm.beta_start, method.ddpm.beta_end: need 0 < beta_start < beta_end < 1")
    if d.trained_betas and (len(d.trained_betas) != d.num_timesteps or not all(0 < b <= 1 for b in d.trained_betas)):
        raise ConfigError(f"method.ddpm.trained_betas: need method.ddpm.num_timesteps ({d.num_timesteps}) numbers in "
                          f"(0, 1], got {len(d.trained_betas)}")
    if d.zero_terminal_snr and cfg.method.resolved_prediction == "eps":
        raise ConfigError("method.prediction: eps cannot be inverted at zero terminal SNR; use v or x0")


def build_path(method_cfg) -> DiscreteVPPath:
    """The discrete VP chain of a `method` config section."""
    d = method_cfg.ddpm
    betas = torch.tensor(d.trained_betas, dtype=torch.float64) if d.trained_betas else \
        make_betas(d.beta_schedule, d.num_timesteps, d.beta_start, d.beta_end)
    return DiscreteVPPath(rescale_zero_terminal_snr(betas) if d.zero_terminal_snr else betas)


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


def snr_weight(snr: torch.Tensor, prediction: str, weighting: str, gamma: float) -> torch.Tensor:
    """Per-sample weight on a `prediction`-space loss: `min_snr` is min(SNR, gamma) in x0 space
    (Hang et al. 2023), `trunc_snr` max(SNR, 1) in x0 space (Salimans & Ho 2022)."""
    x0_weight = snr.clamp(max=gamma) if weighting == "min_snr" else snr.clamp(min=1)
    return loss_weight(snr, prediction, x0_weight)


class DDPM(DenoisingMethod):
    """Noise-prediction training on the discrete VP path; the net sees t = (k + 1) / T for a step k
    drawn uniformly (Ho et al. 2020) or by its log-SNR (`timestep_density: log_snr_normal`)."""

    build_path = staticmethod(build_path)

    def __init__(self, cfg, num_classes: int = 0, path: DiscreteVPPath | None = None):
        super().__init__(cfg, num_classes, path)
        d = cfg.ddpm
        self.step_probs = None  # uniform
        if d.timestep_density == "log_snr_normal":
            steps = self.path.timestep_to_t(torch.arange(d.num_timesteps))
            self.step_probs = LogSNRNormal(d.log_snr_mean, d.log_snr_std).step_probs(self.path.log_snr(steps))

    def sample_time(self, n: int, generator: torch.Generator | None):
        d = self.cfg.ddpm
        if self.step_probs is None:
            k = torch.randint(0, d.num_timesteps, (n,), generator=generator)
        else:
            k = torch.multinomial(self.step_probs, n, replacement=True, generator=generator)
        t = self.path.timestep_to_t(k)
        if d.loss_weighting == "plain":
            return t, None
        snr = torch.exp(self.path.log_snr(t))
        return t, snr_weight(snr, self.prediction, d.loss_weighting, d.snr_gamma)
