"""A KL-regularised autoencoder (Kingma & Welling 2014; the "KL-f" autoencoders of Rombach et al.
2022, "High-Resolution Image Synthesis with Latent Diffusion Models", which SD3 widens to 16
latent channels), built on diffusers' `AutoencoderKL` so that its weights are the ecosystem's.

`net(x, eps) -> (reconstruction, mean, logvar)`: the posterior q(z | x) = N(mean, exp(logvar))
is sampled as z = mean + exp(logvar / 2) eps and decoded. Images in [-1, 1]; each level after
the first halves the resolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genkit.registry import ConfigError, require


@dataclass
class AutoencoderConfig:
    """`model.vae`: the autoencoder's size and its latent space."""

    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # width per level; the image shrinks 2x per level after the first
    layers_per_block: int = 1
    norm_num_groups: int = 32
    mid_attention: bool = True  # self-attention at the bottleneck

    @property
    def downsample(self) -> int:
        """Image size / latent size."""
        return 2 ** (len(self.block_out_channels) - 1)


def check(cfg) -> None:
    vae, size = cfg.model.vae, cfg.data.image_size
    require(vae, "model.vae", positive=["latent_channels", "norm_num_groups"], layers=["layers_per_block"])
    if not vae.block_out_channels or min(vae.block_out_channels) <= 0:
        raise ConfigError(f"model.vae.block_out_channels: needs positive widths, got {list(vae.block_out_channels)}")
    if any(width % vae.norm_num_groups for width in vae.block_out_channels):
        raise ConfigError(f"model.vae.norm_num_groups: {vae.norm_num_groups} does not divide every width of "
                          f"model.vae.block_out_channels {list(vae.block_out_channels)}")
    if size % vae.downsample:
        raise ConfigError(f"data.image_size: {size} is not divisible by {vae.downsample}, the downsampling of "
                          f"model.vae.block_out_channels' {len(vae.block_out_channels)} levels")
    if cfg.model.num_classes:
        raise ConfigError("model.num_classes: an autoencoder is unconditional; set model.num_classes=0")


def build(cfg) -> "Autoencoder":
    return Autoencoder(cfg.model.vae, cfg.data.channels)


class Autoencoder(nn.Module):
    """`AutoencoderKL` behind genkit's net call; `encode`, `decode` and `latent_shape` for latents."""

    def __init__(self, cfg: AutoencoderConfig, channels: int):
        super().__init__()
        from diffusers import AutoencoderKL

        levels = len(cfg.block_out_channels)
        self.vae = AutoencoderKL(
            in_channels=channels, out_channels=channels, latent_channels=cfg.latent_channels,
            down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
            norm_num_groups=cfg.norm_num_groups, mid_block_add_attention=cfg.mid_attention)
        self.latent_channels, self.downsample = cfg.latent_channels, cfg.downsample

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """(C, h, w) of the latents of `image_size` images."""
        side = image_size // self.downsample
        return self.latent_channels, side, side

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance: [B, C, H, W] -> 2 x [B, c, H/f, W/f]."""
        moments = self.vae.quant_conv(self.vae.encoder(x))  # [B, 2c, h, w]
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # the clamp of diffusers' DiagonalGaussianDistribution

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """[B, c, h, w] -> [B, C, H, W]."""
        return self.vae.decoder(self.vae.post_quant_conv(z))

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, logvar = self.encode(x)
        return self.decode(mean + (0.5 * logvar).exp() * eps.to(mean)), mean, logvar
