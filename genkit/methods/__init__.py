"""Training objectives: each method owns a path and a `loss(net, x0, y, generator)`."""
from __future__ import annotations

from genkit.config import Config
from genkit.methods.ddpm import DDPM, make_betas
from genkit.methods.flow import RectifiedFlow
from genkit.methods.sde import ScoreSDE

METHODS = {"ddpm": DDPM, "sde": ScoreSDE, "flow": RectifiedFlow}

__all__ = ["DDPM", "METHODS", "RectifiedFlow", "ScoreSDE", "build_method", "make_betas"]


def build_method(cfg: Config):
    """The training method named by `cfg.method.name`."""
    return METHODS[cfg.method.name](cfg.method, cfg.model.num_classes)
