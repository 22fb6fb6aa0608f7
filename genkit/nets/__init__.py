"""Networks. Denoisers: `net(x [B,C,H,W], t [B] in [0, 1], y [B] or None) -> [B,C,H,W]`.
Autoregressive nets: `net(x [B,1,H,W] in [-1, 1], y [B] or None) -> logits [B,K,H,W]`.
Autoencoders: `net(x [B,C,H,W], eps [B,c,h,w]) -> (reconstruction, posterior mean, log-variance)`.

`NETS` maps `model.name` to each net's builder, config section (`model.<name>`) and checks.
"""
from __future__ import annotations

from torch import nn

from genkit.nets import diffusers_net, dit, made, pixelcnn, unet, vae
from genkit.nets.dit import DiT
from genkit.nets.layers import input_shape
from genkit.nets.made import MADE
from genkit.nets.pixelcnn import PixelCNN
from genkit.nets.unet import UNet
from genkit.registry import Registry

NETS = Registry("net")
NETS.register("unet", unet.build, unet.UNetConfig, unet.check, interval=True)  # interval: takes a second time r
NETS.register("dit", dit.build, dit.DiTConfig, dit.check, interval=True)
NETS.register("pixelcnn", pixelcnn.build, pixelcnn.PixelCNNConfig, pixelcnn.check, family="autoregressive",
              cache=True)
NETS.register("made", made.build, made.MADEConfig, made.check, family="autoregressive")
NETS.register("fvsbn", made.build_fvsbn, None, made.check, family="autoregressive")
NETS.register("vae", vae.build, vae.AutoencoderConfig, vae.check, family="autoencoder")
NETS.register("diffusers", diffusers_net.build, diffusers_net.DiffusersNetConfig, diffusers_net.check)

__all__ = ["DiT", "MADE", "NETS", "PixelCNN", "UNet", "build_net", "input_shape"]


def build_net(cfg) -> nn.Module:
    """The net named by `cfg.model.name`, sized for `cfg.data` images (or their latents)."""
    return NETS[cfg.model.name].build(cfg)

