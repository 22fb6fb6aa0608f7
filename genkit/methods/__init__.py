"""Training objectives: each method owns a path and a `loss(net, x0, y, generator)`."""
from __future__ import annotations

from genkit.config import Config
from genkit.methods.ddpm import DDPM, make_betas

__all__ = ["DDPM", "build_method", "make_betas"]


def build_method(cfg: Config):
    """The training method named by `cfg.method.name`."""
    return DDPM(cfg.method, cfg.model.num_classes)
