"""A diffusers denoiser as a genkit net (`model.name: diffusers`): a `UNet2DModel` read from a
diffusers folder, called in genkit's convention `net(x, t in [0, 1], y)`.

Time: diffusers models take the scheduler's timestep k. On DDPM's discrete path step k sits at
t = (k + 1) / T (`genkit.paths.DiscreteVPPath`), so the net is called at k = t T - 1; on a
rectified flow the flow-matching schedulers' k is sigma T = t T. Outputs are the model's own
prediction (its scheduler's `prediction_type`, which `genkit.loading.from_diffusers` makes the
model's); a model that also predicts its variance (twice the input channels) gives its first half.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
from torch import nn

from genkit.registry import ArgumentError, ConfigError

CLASSES = ("UNet2DModel",)  # the diffusers model classes genkit can call as denoisers


@dataclass
class DiffusersNetConfig:
    """`model.diffusers`: the folder of a diffusers model (its `config.json` and weights), and the
    number of training timesteps its timestep counts (a flow scheduler's `num_train_timesteps`;
    DDPM's is `method.ddpm.num_timesteps`)."""

    path: str = ""
    flow_timesteps: int = 1000


class DiffusersDenoiser(nn.Module):
    """`model` (a diffusers denoiser) called at timestep k = t `scale` - `offset` (see the module);
    `num_classes` > 0 for a class-conditional UNet, whose class embedding has no null class."""

    def __init__(self, model: nn.Module, scale: float, offset: float, num_classes: int = 0):
        super().__init__()
        self.model, self.scale, self.offset, self.num_classes = model, scale, offset, num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        k = t.double() * self.scale - self.offset  # [B] the scheduler's timesteps
        if self.num_classes and y is not None and bool((y >= self.num_classes).any()):
            raise ArgumentError("guidance", "this diffusers model's class embedding has no null class: sample it "
                                            "with guidance 1")
        labels = {"class_labels": y} if self.num_classes else {}
        out = self.model(x, k.to(x.dtype), **labels).sample  # [B, C or 2C, H, W]
        return out[:, :x.shape[1]]


def read_model_config(folder: str | Path) -> dict:
    """The diffusers `config.json` of the model in `folder`, checked to be a class genkit calls."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ConfigError(f"model.diffusers.path: {folder} holds no diffusers model (config.json)")
    config = json.loads(path.read_text())
    if config.get("_class_name") not in CLASSES:
        raise ConfigError(f"model.diffusers.path: {folder} holds a {config.get('_class_name')}; genkit calls "
                          f"{', '.join(CLASSES)} as a denoiser")
    return config


def build(cfg) -> DiffusersDenoiser:
    folder = cfg.model.diffusers.path
    model_class = getattr(diffusers, read_model_config(folder)["_class_name"])
    model = model_class.from_pretrained(folder)
    for tensor in [*model.parameters(), *model.buffers()]:  # memory of torch's own (see GenkitNet.from_pretrained)
        tensor.data = tensor.data.clone()
    if cfg.method.name == "flow":
        scale, offset = cfg.model.diffusers.flow_timesteps, 0.0
    else:
        scale, offset = cfg.method.ddpm.num_timesteps, 1.0
    return DiffusersDenoiser(model, scale, offset, cfg.model.num_classes)


def check(cfg) -> None:
    config = read_model_config(cfg.model.diffusers.path)
    channels, size = config.get("in_channels", 3), config.get("sample_size")
    if cfg.method.name not in ("ddpm", "flow"):
        raise ConfigError(f"method.name: a diffusers model runs on DDPM's path or a rectified flow, not "
                          f"{cfg.method.name}")
    if (cfg.data.channels, cfg.data.image_size) != (channels, size if isinstance(size, int) else cfg.data.image_size):
        raise ConfigError(f"data.channels, data.image_size: the diffusers model takes {channels} x {size} images, "
                          f"not {cfg.data.channels} x {cfg.data.image_size}")
    if (config.get("num_class_embeds") or 0) != cfg.model.num_classes:
        raise ConfigError(f"model.num_classes: the diffusers model has {config.get('num_class_embeds') or 0} "
                          f"classes, not {cfg.model.num_classes}")
