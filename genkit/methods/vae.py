"""Training a KL-regularised autoencoder (Kingma & Welling 2014, "Auto-Encoding Variational Bayes";
the weak KL of Rombach et al. 2022's latent-diffusion autoencoders)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genkit.registry import one_of, require


@dataclass
class VAEConfig:
    """`method.vae`: the reconstruction distance and the weight of the KL term."""

    reconstruction: str = "mse"  # mse | l1
    kl_weight: float = 1e-4  # on KL(q(z|x) || N(0, I)) per pixel value; small: a sharp, lightly regularised code


def check(cfg) -> None:
    one_of(cfg.method.vae.reconstruction, ("mse", "l1"), "method.vae.reconstruction")
    require(cfg.method.vae, "method.vae", non_negative=["kl_weight"])


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) in nats, summed over all but the batch dimension:
    1/2 sum(mean^2 + exp(logvar) - 1 - logvar). [B, ...] -> [B]."""
    mean, logvar = mean.float(), logvar.float()
    return 0.5 * (mean.square() + logvar.exp() - 1 - logvar).flatten(1).sum(1)


class VAE:
    """loss = distance(x, decode(z)) + kl_weight KL(q(z|x) || N(0, I)) / pixel values, z ~ q(z|x),
    both per pixel value: the negative ELBO of a Gaussian (mse) or Laplace (l1) decoder up to the
    weight, averaged over the batch."""

    family = "autoencoder"

    def __init__(self, cfg, num_classes: int = 0):
        self.cfg = cfg.vae

    def loss(self, net, x0: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator | None = None,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is not None:
            raise ValueError("an autoencoder trains on images, not (noise, sample) pairs")
        eps = torch.randn(net_latent_shape(net, x0), generator=generator).to(x0)
        recon, mean, logvar = net(x0, eps)
        distance = F.mse_loss if self.cfg.reconstruction == "mse" else F.l1_loss
        return distance(recon.float(), x0.float()) + self.cfg.kl_weight * gaussian_kl(mean, logvar).mean() / x0[0].numel()

    def log_terms(self, loss: float, dims: int) -> dict:
        return {}


def net_latent_shape(net, x0: torch.Tensor) -> tuple[int, ...]:
    """[B, c, h, w] of the latents `net` (maybe wrapped by accelerate) makes of images x0 [B, C, H, W]."""
    return (len(x0), *getattr(net, "module", net).latent_shape(x0.shape[-1]))
