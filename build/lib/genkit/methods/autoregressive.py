"""Exact maximum likelihood for autoregressive nets (PixelCNN, MADE, FVSBN) on discrete pixels.

Pixels are integers in 0..levels-1. With `levels = 2` a grey image is binarized afresh at every
visit, pixel ~ Bernoulli(grey / 255) (dynamic binarization, as in Salakhutdinov & Murray 2008's
binarized MNIST), and test images once with a fixed seed; with 256 levels the grey values are the
pixels. Nets see pixels scaled to [-1, 1] and return logits [B, K, H, W]: K = 1 Bernoulli logit,
or K = levels categorical logits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genkit.methods.base import drop_labels
from genkit.registry import ConfigError, one_of


@dataclass
class AutoregressiveConfig:
    """`method.autoregressive`: the pixels' alphabet."""

    levels: int = 2  # 2: Bernoulli pixels, dynamically binarized; 256: a categorical over grey levels


def check(cfg) -> None:
    """One channel of 2 or 256 levels."""
    one_of(cfg.method.autoregressive.levels, (2, 256), "method.autoregressive.levels")
    if cfg.data.channels != 1:
        raise ConfigError(f"data.channels: autoregressive models take one channel, got {cfg.data.channels}")


def to_net_input(pixels: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer pixels 0..levels-1 -> floats in [-1, 1] (same shape)."""
    return pixels.float() * (2 / (levels - 1)) - 1


def binarize(grey: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 grey levels -> 0/1 pixels (long), pixel ~ Bernoulli(grey / 255)."""
    u = torch.rand(grey.shape, generator=generator, dtype=torch.float64)
    return (u < grey.double().cpu() / 255).long().to(grey.device)


def discretize(images: torch.Tensor, levels: int, seed: int = 0) -> torch.Tensor:
    """uint8 images -> integer pixels: the fixed, seeded binarization of an evaluation set
    (`levels = 2`), or the grey values themselves (256)."""
    if levels == 2:
        return binarize(images, torch.Generator().manual_seed(seed))
    return images.long()


def pixel_log_probs(logits: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """log p(x_i | x_<i) of every pixel: logits [B, K, H, W], pixels [B, 1, H, W] -> [B, H, W]."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> float32; float64 stays
    if logits.shape[1] == 1:
        return -F.binary_cross_entropy_with_logits(logits[:, 0], pixels[:, 0].to(logits.dtype), reduction="none")
    return -F.cross_entropy(logits, pixels[:, 0], reduction="none")


def log_likelihood(net, pixels: torch.Tensor, y: torch.Tensor | None, levels: int) -> torch.Tensor:
    """log p(x | y) in nats, exactly: the sum of the pixels' conditionals. [B, 1, H, W] -> [B]."""
    logits = net(to_net_input(pixels, levels).to(next(net.parameters()).dtype), y)
    return pixel_log_probs(logits, pixels).flatten(1).sum(1)


class Autoregressive:
    """Trains by the exact negative log-likelihood. The loss is in nats per pixel (the scale the
    optimizer and gradient clipping see); `log_terms` turns it into nats per image and bits/dim.
    Labels are dropped to the null class with probability `p_uncond`, which also teaches p(x)."""

    def __init__(self, cfg, num_classes: int = 0):
        self.cfg = cfg
        self.levels = cfg.autoregressive.levels
        self.null_class = num_classes

    def pixels(self, x0: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Training pixels from images in [-1, 1]: dynamically binarized, or grey levels."""
        grey = ((x0 + 1) * 127.5).round().clamp(0, 255)
        if self.levels == 2:
            return binarize(grey, generator)
        return grey.long()

    def loss(self, net, x0: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator | None = None,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is not None:
            raise ValueError("autoregressive models train on images, not (noise, sample) pairs")
        pixels = self.pixels(x0, generator)
        y = drop_labels(y, self.cfg.p_uncond, self.null_class, generator)
        return -log_likelihood(net, pixels, y, self.levels).mean() / pixels[0].numel()

    def log_terms(self, loss: float, dims: int) -> dict:
        """The loss (nats per pixel) as nats per image and bits per dimension."""
        return {"nats_per_image": loss * dims, "bits_per_dim": loss / math.log(2)}
