"""Sampling a VAE (Kingma & Welling 2014): decode draws from its prior."""
from __future__ import annotations

import torch


def prior(net, z: torch.Tensor) -> torch.Tensor:
    """Decode z ~ N(0, I) [B, c, h, w] into images [B, C, H, W] in [-1, 1] (not clamped)."""
    return net.decode(z)
