"""Training-time densities over t in (0, 1) for rectified flow (Esser et al. 2024, section 3.1),
and over the log-SNR for the paths whose time means something else (DDPM, the score SDEs).

Each flow density draws t (`sample`) and evaluates its density and CDF (`pdf`, `cdf`), so that a
run can either sample t from it or draw t uniformly and weight the loss by `pdf`.
"""
from __future__ import annotations

import math

import torch


class Uniform:
    def sample(self, n: int, generator=None) -> torch.Tensor:
        return torch.rand(n, generator=generator, dtype=torch.float64)

    def pdf(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def cdf(self, t: torch.Tensor) -> torch.Tensor:
        return t


class LogitNormal:
    """t = sigmoid(m + s n), n ~ N(0, 1)."""

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        self.mean, self.std = mean, std

    def sample(self, n: int, generator=None) -> torch.Tensor:
        return torch.sigmoid(self.mean + self.std * torch.randn(n, generator=generator, dtype=torch.float64))

    def pdf(self, t: torch.Tensor) -> torch.Tensor:
        z = (torch.logit(t) - self.mean) / self.std
        return torch.exp(-0.5 * z**2) / (self.std * math.sqrt(2 * math.pi) * t * (1 - t))

    def cdf(self, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * (1 + torch.erf((torch.logit(t) - self.mean) / (self.std * math.sqrt(2))))


class Mode:
    """t = f(u) = 1 - u - s (cos^2(pi u / 2) - 1 + u), u ~ U(0, 1): heavier in the middle for s > 0.
    f falls from 1 to 0 for -1 < s < 2 / (pi - 2), so P(t <= x) = 1 - f^-1(x)."""

    def __init__(self, scale: float = 1.29):
        self.scale = scale

    def f(self, u: torch.Tensor) -> torch.Tensor:
        return 1 - u - self.scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)

    def df(self, u: torch.Tensor) -> torch.Tensor:
        return -1 - self.scale * (1 - math.pi / 2 * torch.sin(math.pi * u))

    def inverse(self, t: torch.Tensor, iters: int = 60) -> torch.Tensor:
        """u with f(u) = t, by bisection (f is decreasing)."""
        lo, hi = torch.zeros_like(t), torch.ones_like(t)
        for _ in range(iters):
            mid = (lo + hi) / 2
            above = self.f(mid) > t  # f(mid) still too large: the root lies to the right
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return (lo + hi) / 2

    def sample(self, n: int, generator=None) -> torch.Tensor:
        return self.f(torch.rand(n, generator=generator, dtype=torch.float64))

    def pdf(self, t: torch.Tensor) -> torch.Tensor:
        return 1 / self.df(self.inverse(t)).abs()

    def cdf(self, t: torch.Tensor) -> torch.Tensor:
        return 1 - self.inverse(t)


class CosMap:
    """t = 1 - 1 / (tan(pi u / 2) + 1), u ~ U(0, 1); density 2 / (pi (1 - 2t + 2t^2))."""

    def sample(self, n: int, generator=None) -> torch.Tensor:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return 1 - 1 / (torch.tan(math.pi * u / 2) + 1)

    def pdf(self, t: torch.Tensor) -> torch.Tensor:
        return 2 / (math.pi * (1 - 2 * t + 2 * t**2))

    def cdf(self, t: torch.Tensor) -> torch.Tensor:
        return 2 / math.pi * torch.atan2(t, 1 - t)


class NoiseEnd:
    """t = 1 always (a point mass, sampled only): on reflow pairs the flow then regresses the one-step
    map from each noise to its paired sample, x0 = eps - v(eps, 1), under the squared distance:
    InstaFlow's distillation (Liu et al. 2023, section 3.2, with L2 in place of LPIPS)."""

    def sample(self, n: int, generator=None) -> torch.Tensor:
        return torch.ones(n, dtype=torch.float64)


LOG_SNR_DENSITIES = ("uniform", "log_snr_normal")  # the choices of the paths whose time is not the flow's


class LogSNRNormal:
    """lambda = log(alpha^2 / sigma^2) ~ N(mean, std), carried to any path's time through its
    log-SNR (a density over lambda is what one path's training schedule means on another: Kingma &
    Gao 2023). A flow trained with logit-normal(m, s) times sees N(-2m, 2s), since lambda = -2 logit t
    on the flow path: SD3's default logit-normal(0, 1) is N(0, 2). EDM's ln sigma ~ N(-1.2, 1.2)
    is N(2.4, 2.4)."""

    def __init__(self, mean: float = 0.0, std: float = 2.0):
        self.mean, self.std = mean, std

    def cdf(self, lam: torch.Tensor) -> torch.Tensor:
        return 0.5 * (1 + torch.erf((lam - self.mean) / (self.std * math.sqrt(2))))

    def times(self, path, n: int, generator=None, t_min: float = 0.0) -> torch.Tensor:
        """n times on `path` whose log-SNRs follow this density, clamped to [t_min, 1]: [n] float64."""
        lam = self.mean + self.std * torch.randn(n, generator=generator, dtype=torch.float64)
        return path.t_of_log_snr(lam).clamp(t_min, 1)

    def step_probs(self, log_snrs: torch.Tensor) -> torch.Tensor:
        """The probability of each step of a discrete chain with decreasing log-SNRs [T]: the
        density's mass between the midpoints to its neighbours (the ends take the tails): [T]."""
        mids = (log_snrs[1:] + log_snrs[:-1]) / 2
        upper = torch.cat([torch.ones(1, dtype=torch.float64), self.cdf(mids.double())])
        lower = torch.cat([self.cdf(mids.double()), torch.zeros(1, dtype=torch.float64)])
        return upper - lower


def build_density(cfg) -> Uniform | LogitNormal | Mode | CosMap | NoiseEnd:
    """The density named by a `FlowConfig`."""
    if cfg.time_density == "noise_end":
        return NoiseEnd()
    if cfg.time_density == "logit_normal":
        return LogitNormal(cfg.logit_mean, cfg.logit_std)
    if cfg.time_density == "mode":
        return Mode(cfg.mode_scale)
    if cfg.time_density == "cosmap":
        return CosMap()
    return Uniform()
