"""MADE (Germain et al. 2015, "MADE: Masked Autoencoder for Distribution Estimation") over the
pixels in raster order; with no hidden layer it is an FVSBN (Frey 1998: a logistic regression
of each pixel on the pixels before it)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genkit.registry import ConfigError


@dataclass
class MADEConfig:
    """`model.made`; `model.name: fvsbn` is the same net with no hidden layer."""

    hidden: tuple[int, ...] = (500,)  # hidden layer widths


def check(cfg) -> None:
    """Binary pixels only, and positive widths."""
    if cfg.method.autoregressive.levels != 2:
        raise ConfigError(f"method.autoregressive.levels: {cfg.model.name} models binary pixels (levels=2)")
    if cfg.model.name == "made" and (not cfg.model.made.hidden or min(cfg.model.made.hidden) <= 0):
        raise ConfigError(f"model.made.hidden: needs positive widths, got {list(cfg.model.made.hidden)}")


def build(cfg) -> "MADE":
    return MADE(cfg.data.image_size, cfg.model.made.hidden, cfg.model.num_classes)


def build_fvsbn(cfg) -> "MADE":
    return MADE(cfg.data.image_size, (), cfg.model.num_classes)


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask [out, in]."""

    def __init__(self, mask: torch.Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Bernoulli logits of each pixel from the pixels before it, through masked ReLU layers.

    Pixel d (1-based raster index) has degree d; hidden unit k of every layer gets degree m_k
    in 1..D-1, spread evenly, and sees the units of degree <= m_k below it; output d sees
    hidden units of degree < d, and the pixels before d directly (the FVSBN part). The class
    embedding enters every hidden layer and the output bias, so p(x | y) for all pixels.

    `forward(x [B, 1, H, W] in [-1, 1], y [B] or None) -> logits [B, 1, H, W]`.
    """

    def __init__(self, image_size: int, hidden: tuple[int, ...] = (500,), num_classes: int = 0):
        super().__init__()
        d = image_size * image_size
        self.image_size, self.num_classes = image_size, num_classes
        degrees = [torch.arange(1, d + 1)]
        for width in hidden:
            degrees.append(torch.arange(width) * max(1, d - 1) // width + 1)  # evenly over 1..D-1
        self.hidden = nn.ModuleList(
            MaskedLinear(m_out[:, None] >= m_in[None]) for m_in, m_out in zip(degrees, degrees[1:]))
        self.out = MaskedLinear(degrees[0][:, None] > degrees[-1][None]) if hidden else None
        self.direct = MaskedLinear(degrees[0][:, None] > degrees[0][None])
        if num_classes > 0:
            self.class_embed = nn.ModuleList(nn.Embedding(num_classes + 1, n) for n in (*hidden, d))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        flat = x.reshape(b, -1)  # [B, D]
        if self.num_classes > 0 and y is None:
            y = torch.full((b,), self.num_classes, dtype=torch.long, device=x.device)
        biases = [e(y) for e in self.class_embed] if self.num_classes > 0 else [0] * (len(self.hidden) + 1)
        h = flat
        for layer, bias in zip(self.hidden, biases):
            h = F.relu(layer(h) + bias)
        logits = self.direct(flat) + biases[-1]
        if self.out is not None:
            logits = logits + self.out(h)
        return logits.reshape(b, 1, self.image_size, self.image_size)
