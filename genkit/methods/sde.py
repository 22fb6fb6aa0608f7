"""Continuous-time denoising score matching on the score-SDE paths (Song et al. 2021)."""
from __future__ import annotations

import torch

from genkit.config import MethodConfig
from genkit.methods.base import DenoisingMethod, loss_weight
from genkit.paths import GaussianPath, SubVPPath, VEPath, VPPath


def build_sde_path(cfg: MethodConfig) -> GaussianPath:
    sde = cfg.sde
    if sde.kind == "ve":
        return VEPath(sde.sigma_min, sde.sigma_max)
    return (SubVPPath if sde.kind == "subvp" else VPPath)(sde.beta_min, sde.beta_max)


class ScoreSDE(DenoisingMethod):
    """t ~ U(t_eps, 1). With the usual lambda(t) = sigma^2 weighting the score-matching loss is
    the plain eps-prediction MSE (the net's eps is -sigma times its score; for VE that is the
    scaled score up to sign). `likelihood_weighting` uses lambda(t) = g(t)^2 instead, which
    makes the loss a bound on the negative log-likelihood (Song et al. 2021b, theorem 1)."""

    def __init__(self, cfg: MethodConfig, num_classes: int = 0):
        super().__init__(cfg, num_classes)
        self.path = build_sde_path(cfg)

    def sample_time(self, n: int, generator: torch.Generator | None):
        eps = self.cfg.sde.t_eps
        t = eps + (1 - eps) * torch.rand(n, generator=generator, dtype=torch.float64)
        if not self.cfg.sde.likelihood_weighting:
            return t, None
        sigma2 = self.path.sigma(t) ** 2
        snr = self.path.alpha(t) ** 2 / sigma2
        # g^2 |score error|^2 = (g^2 / sigma^2) |eps error|^2 = (g^2 SNR / sigma^2) |x0 error|^2
        return t, loss_weight(snr, self.prediction, self.path.diffusion_sq(t) * snr / sigma2)
