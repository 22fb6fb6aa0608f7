"""Continuous-time denoising score matching on the score-SDE paths (Song et al. 2021)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from genkit.methods.base import DenoisingMethod, loss_weight
from genkit.methods.time_densities import LOG_SNR_DENSITIES, LogSNRNormal
from genkit.paths import GaussianPath, SubVPPath, VEPath, VPPath
from genkit.registry import ConfigError, one_of, require


@dataclass
class SDEConfig:
    """`method.sde`: the process (Song et al. 2021); see `genkit.paths.sde`."""

    kind: str = "vp"  # vp | subvp | ve
    beta_min: float = 0.1  # vp, subvp
    beta_max: float = 20.0
    sigma_min: float = 0.01  # ve
    sigma_max: float = 50.0
    t_eps: float = 1e-5  # training draws t in [t_eps, 1]
    time_density: str = "uniform"  # uniform | log_snr_normal (t drawn by its log-SNR: LogSNRNormal)
    log_snr_mean: float = 0.0  # log_snr_normal's N(mean, std); N(0, 2) is SD3's logit-normal(0, 1) flow times
    log_snr_std: float = 2.0
    likelihood_weighting: bool = False  # weight the loss by g(t)^2 (Song et al. 2021b) instead of sigma^2


def check(cfg) -> None:
    sde = cfg.method.sde
    one_of(sde.kind, ("vp", "subvp", "ve"), "method.sde.kind")
    one_of(sde.time_density, LOG_SNR_DENSITIES, "method.sde.time_density")
    require(sde, "method.sde", positive=["log_snr_std"])
    if not 0 < sde.beta_min < sde.beta_max:
        raise ConfigError("method.sde.beta_min, method.sde.beta_max: need 0 < beta_min < beta_max")
    if not 0 < sde.sigma_min < sde.sigma_max:
        raise ConfigError("method.sde.sigma_min, method.sde.sigma_max: need 0 < sigma_min < sigma_max")
    if not 0 < sde.t_eps < 0.1:
        raise ConfigError(f"method.sde.t_eps: must lie in (0, 0.1), got {sde.t_eps}")


def build_path(method_cfg) -> GaussianPath:
    """The VP, sub-VP or VE path of a `method` config section."""
    sde = method_cfg.sde
    if sde.kind == "ve":
        return VEPath(sde.sigma_min, sde.sigma_max)
    return (SubVPPath if sde.kind == "subvp" else VPPath)(sde.beta_min, sde.beta_max)


class ScoreSDE(DenoisingMethod):
    """t ~ U(t_eps, 1), or t drawn by its log-SNR (`time_density: log_snr_normal`). With the usual
    lambda(t) = sigma^2 weighting the score-matching loss is the plain eps-prediction MSE (the
    net's eps is -sigma times its score; for VE that is the scaled score up to sign).
    `likelihood_weighting` uses lambda(t) = g(t)^2 instead, which makes the loss a bound on the
    negative log-likelihood (Song et al. 2021b, theorem 1)."""

    build_path = staticmethod(build_path)

    def __init__(self, cfg, num_classes: int = 0, path: GaussianPath | None = None):
        super().__init__(cfg, num_classes, path)
        sde = cfg.sde
        self.log_snr_density = LogSNRNormal(sde.log_snr_mean, sde.log_snr_std) \
            if sde.time_density == "log_snr_normal" else None  # None: uniform

    def sample_time(self, n: int, generator: torch.Generator | None):
        sde = self.cfg.sde
        if self.log_snr_density is not None:
            t = self.log_snr_density.times(self.path, n, generator, t_min=sde.t_eps)
        else:
            t = sde.t_eps + (1 - sde.t_eps) * torch.rand(n, generator=generator, dtype=torch.float64)
        if not sde.likelihood_weighting:
            return t, None
        sigma2 = self.path.sigma(t) ** 2
        snr = self.path.alpha(t) ** 2 / sigma2
        # g^2 |score error|^2 = (g^2 / sigma^2) |eps error|^2 = (g^2 SNR / sigma^2) |x0 error|^2
        return t, loss_weight(snr, self.prediction, self.path.diffusion_sq(t) * snr / sigma2)
