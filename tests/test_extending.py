"""A new net and a new sampler need only their own code and one registration each: the config
grows their section and checks them, training and sampling run them, and nothing else changes."""
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import genkit
from genkit.config import ConfigError, load_config, to_dict
from genkit.nets import NETS
from genkit.registry import ArgumentError
from genkit.registry import ConfigError as RegistryConfigError
from genkit.samplers import SAMPLERS
from genkit.training import train


# ---------------------------------------------------------------- what a user writes: a toy net


@dataclass
class ToyConfig:
    """`model.toy`: one hidden layer of `width` channels."""

    width: int = 8


def check_toy(cfg) -> None:
    if cfg.model.toy.width <= 0:
        raise RegistryConfigError(f"model.toy.width: must be positive, got {cfg.model.toy.width}")


class ToyNet(nn.Module):
    """conv(x) + time and class biases: the denoiser signature, and nothing more."""

    def __init__(self, cfg):
        super().__init__()
        width, channels = cfg.model.toy.width, cfg.data.channels
        self.inner = nn.Conv2d(channels, width, 3, padding=1)
        self.outer = nn.Conv2d(width, channels, 3, padding=1)
        self.time = nn.Linear(1, width)
        self.label = nn.Embedding(cfg.model.num_classes + 1, width)

    def forward(self, x, t, y=None):
        h = self.inner(x) + self.time(t[:, None].to(x.dtype))[:, :, None, None]
        if y is not None:
            h = h + self.label(y)[:, :, None, None]
        return self.outer(torch.relu(h))


# ---------------------------------------------------------------- and a toy sampler


def toy_euler(denoiser, x, ts, noise=None, callback=None, progress=False, shrink: float = 1.0):
    """Euler steps x <- x0 + (s / t) (x - x0) (DDIM on a flow), each step scaled by `shrink`."""
    for i, (t, s) in enumerate(zip(ts[:-1].tolist(), ts[1:].tolist())):
        x0, _ = denoiser(x, t)
        if callback:
            callback(i, t, x, x0)
        x = x0 + shrink * (s / t) * (x - x0)
    return x


@pytest.fixture
def registered():
    NETS.register("toy", ToyNet, ToyConfig, check_toy)
    SAMPLERS.register("toy_euler", toy_euler, schedule="uniform")
    yield
    del NETS["toy"], SAMPLERS["toy_euler"]
    load_config()  # the config's sections follow the registries back


def test_a_toy_net_and_sampler_need_only_their_module_and_a_registration(registered, tiny_cfg):
    cfg = tiny_cfg("model.name=toy", "model.toy.width=4", "method.name=flow", "sample.sampler=toy_euler",
                   "sample.options={shrink: 1.0}", "train.max_steps=2")
    assert cfg.model.toy.width == 4
    saved = to_dict(cfg)
    assert set(saved["model"]) == {"name", "num_classes", "interval", "toy"}  # only the active net's section
    with pytest.raises(ConfigError, match="model.toy.width: must be positive"):
        tiny_cfg("model.name=toy", "model.toy.width=0", "method.name=flow")
    with pytest.raises(ConfigError, match="sample.options.eta: not an option of toy_euler"):
        tiny_cfg("model.name=toy", "method.name=flow", "sample.sampler=toy_euler", "sample.options={eta: 1}")

    model = genkit.load(train(cfg))
    steps = []
    drawn = model.sample(4, steps=3, progress=False, callback=lambda i, t, x, x0: steps.append((i, t)))
    assert drawn.images.shape == (4, 1, 16, 16) and drawn.nfe == 3
    assert [i for i, _ in steps] == [0, 1, 2] and steps[0][1] == 1.0  # the flow's uniform grid from t = 1
    again = model.sample(4, steps=3, progress=False, sampler="toy_euler", shrink=1.0)
    assert torch.equal(drawn.images, again.images)
    with pytest.raises(ArgumentError, match="shrink"):
        model.sample(4, steps=3, progress=False, sampler="toy_euler", shrink="a lot")


def test_a_net_registered_twice_is_refused(registered):
    with pytest.raises(ValueError, match="already registered"):
        NETS.register("toy", ToyNet, ToyConfig)
