"""Denoiser networks behind one interface: `net(x [B,C,H,W], t [B] in [0, 1], y [B] or None)`."""
from __future__ import annotations

from torch import nn

from genkit.config import Config
from genkit.nets.dit import DiT
from genkit.nets.unet import UNet

__all__ = ["DiT", "UNet", "build_net"]


def build_net(cfg: Config) -> nn.Module:
    """The denoiser named by `cfg.model.name`, sized for `cfg.data` images."""
    m, d = cfg.model, cfg.data
    if m.name == "unet":
        return UNet(m.unet, d.channels, d.image_size, m.num_classes)
    return DiT(m.dit, d.channels, d.image_size, m.num_classes)
