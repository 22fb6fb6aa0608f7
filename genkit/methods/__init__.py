"""Training objectives `loss(net, x0, y, generator)`; the Gaussian-path methods own a path. The
trainer sets `method.progress` (the share of training done) before each step, for curricula.

`METHODS` maps `method.name` to each method's class, config section (`method.<name>`), checks,
path builder and default prediction, and the hooks the trainer calls without naming a method:
`pairs(method_cfg, path, pairs)` for a method that may train on reflow pairs (the others are refused
them), and `teacher`, the dotted config key naming a trained model the method learns from.
"""
from __future__ import annotations

from genkit.methods import autoregressive, consistency, ddpm, flow, meanflow, sde, vae
from genkit.methods.autoregressive import Autoregressive
from genkit.methods.consistency import Consistency
from genkit.methods.ddpm import DDPM, make_betas
from genkit.methods.flow import RectifiedFlow
from genkit.methods.meanflow import MeanFlow
from genkit.methods.sde import ScoreSDE
from genkit.methods.vae import VAE
from genkit.registry import ConfigError, Registry

METHODS = Registry("method")
METHODS.register("ddpm", DDPM, ddpm.DDPMConfig, ddpm.check, path=ddpm.build_path, prediction="eps")
METHODS.register("sde", ScoreSDE, sde.SDEConfig, sde.check, path=sde.build_path, prediction="eps")
METHODS.register("flow", RectifiedFlow, flow.FlowConfig, flow.check, path=flow.build_path, prediction="velocity",
                 pairs=flow.check_data)
METHODS.register("consistency", Consistency, consistency.ConsistencyConfig, consistency.check,
                 path=consistency.build_path, prediction="velocity", teacher="method.consistency.teacher")
METHODS.register("meanflow", MeanFlow, meanflow.MeanFlowConfig, meanflow.check, path=meanflow.build_path,
                 prediction="velocity")
METHODS.register("autoregressive", Autoregressive, autoregressive.AutoregressiveConfig, autoregressive.check,
                 family="autoregressive")
METHODS.register("vae", VAE, vae.VAEConfig, vae.check, family="autoencoder")

__all__ = ["Autoregressive", "Consistency", "DDPM", "METHODS", "MeanFlow", "RectifiedFlow", "ScoreSDE", "VAE", "build_method", "build_path",
           "make_betas"]


def build_method(cfg, **parts):
    """The training method named by `cfg.method.name`; `parts`, what the trainer hands it (a
    distillation's `teacher`)."""
    return METHODS[cfg.method.name].build(cfg.method, cfg.model.num_classes, **parts)


def build_path(cfg):
    """The Gaussian path of `cfg`'s method, without building the method (what inference needs)."""
    component = METHODS[cfg.method.name]
    if "path" not in component.extra:
        raise ConfigError(f"method.name: {cfg.method.name} models have no Gaussian path")
    return component.extra["path"](cfg.method)
