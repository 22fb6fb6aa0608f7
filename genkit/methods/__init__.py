"""Training objectives `loss(net, x0, y, generator)`: the Gaussian-path methods own a path."""
from __future__ import annotations

from genkit.config import Config
from genkit.methods.autoregressive import Autoregressive
from genkit.methods.ddpm import DDPM, make_betas
from genkit.methods.flow import RectifiedFlow
from genkit.methods.sde import ScoreSDE

METHODS = {"ddpm": DDPM, "sde": ScoreSDE, "flow": RectifiedFlow, "autoregressive": Autoregressive}

__all__ = ["Autoregressive", "DDPM", "METHODS", "RectifiedFlow", "ScoreSDE", "build_method", "make_betas"]


def build_method(cfg: Config):
    """The training method named by `cfg.method.name`."""
    return METHODS[cfg.method.name](cfg.method, cfg.model.num_classes)
