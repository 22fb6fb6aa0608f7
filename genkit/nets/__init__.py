"""Networks. Denoisers: `net(x [B,C,H,W], t [B] in [0, 1], y [B] or None) -> [B,C,H,W]`.
Autoregressive nets: `net(x [B,1,H,W] in [-1, 1], y [B] or None) -> logits [B,K,H,W]`."""
from __future__ import annotations

from torch import nn

from genkit.config import Config
from genkit.nets.dit import DiT
from genkit.nets.made import MADE
from genkit.nets.pixelcnn import PixelCNN
from genkit.nets.unet import UNet

__all__ = ["DiT", "MADE", "PixelCNN", "UNet", "build_net"]


def build_net(cfg: Config) -> nn.Module:
    """The net named by `cfg.model.name`, sized for `cfg.data` images."""
    m, d = cfg.model, cfg.data
    if m.name == "unet":
        return UNet(m.unet, d.channels, d.image_size, m.num_classes)
    if m.name == "dit":
        return DiT(m.dit, d.channels, d.image_size, m.num_classes)
    if m.name == "pixelcnn":
        return PixelCNN(m.pixelcnn, cfg.method.autoregressive.levels, m.num_classes)
    return MADE(d.image_size, m.made.hidden if m.name == "made" else (), m.num_classes)
