"""Exponential moving average of weights (Polyak averaging), with a warm-up on the decay."""
from __future__ import annotations

import torch
from torch import nn

from genkit.training.sharding import gathered, sharded_like


class EMA:
    """Shadow copy of a module's floating-point parameters and buffers.

    The decay ramps as min(decay, (1 + n) / (10 + n)) over the n updates so far, so a short run
    is not dominated by its random initialisation. Of a sharded net (`genkit.training.sharding`)
    each process averages its own shards; `whole()` and `state_dict()` gather them (collectives).
    """

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for key, value in module.state_dict().items():
            if value.is_floating_point():
                self.shadow[key].lerp_(value, 1 - decay)
            else:
                self.shadow[key].copy_(value)

    def whole(self) -> dict:
        """The averaged weights, whole (gathered from every process where the net is sharded)."""
        return gathered(self.shadow)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.whole()}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.num_updates = state["decay"], state["num_updates"]
        for key, value in state["shadow"].items():
            self.shadow[key].copy_(sharded_like(value, self.shadow[key]))
