"""Fully sharded data parallel training (FSDP; Zhao et al. 2023, "PyTorch FSDP"): each process
holds 1/N of every weight, gradient and optimizer moment, gathered per block for its forward and
backward. Through torch's per-parameter `fully_shard` (FSDP2), whose parameters are `DTensor`
shards: the optimizer, the EMA and a rollback act on each process's shard alone, and only a
checkpoint or an export gathers the whole (a collective: every process calls it)."""
from __future__ import annotations

import os
import sys

import torch
from torch import nn

from genkit.config import ConfigError


def shard(net: nn.Module) -> nn.Module:
    """Shard `net` in place across the default process group: each block (a member of an
    `nn.ModuleList` with a forward of its own and parameters) is a unit gathered for its own
    forward, the rest of the net one more unit. Children are sharded before their parents."""
    from torch.distributed.fsdp import fully_shard  # here: importing FSDP takes a second every command would pay

    members = {id(m) for lst in net.modules() if isinstance(lst, nn.ModuleList) for m in lst}
    for module in reversed(list(net.modules())):
        own_forward = type(module).forward is not nn.Module.forward
        if id(module) in members and own_forward and any(True for _ in module.parameters()):
            fully_shard(module)
    fully_shard(net)
    return net


def refuse_other_sharding() -> None:
    """Refuse a launch that asks accelerate to shard (its FSDP or DeepSpeed settings): genkit shards
    the net itself (`train.fsdp`), the same way on CPUs and GPUs."""
    for variable, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(variable, "false").lower() == "true":
            raise ConfigError(f"train.fsdp: accelerate was launched with its {name} settings ({variable}=true); "
                              f"genkit shards the net itself: launch plain data parallel and set train.fsdp=true")


def is_dtensor(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is a shard (a `DTensor`), without importing `torch.distributed.tensor`:
    none exists before something (`shard`) has imported it."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def whole(tensor: torch.Tensor, local: bool = False) -> torch.Tensor:
    """A plain tensor: the whole of a `DTensor` (a collective), or with `local` this process's part."""
    if not is_dtensor(tensor):
        return tensor
    return tensor.to_local() if local else tensor.full_tensor()


def gathered(tensors: dict) -> dict:
    """`tensors` with each shard replaced by the whole tensor, on the CPU (a collective)."""
    return {k: whole(v).cpu() if is_dtensor(v) else v for k, v in tensors.items()}  # plain ones stay put


def sharded_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The whole tensor `value` cut as `like` is (each process keeps its own part: no communication)."""
    if not is_dtensor(like):
        return value.to(like.device, like.dtype)
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value.to(like.device, like.dtype), like.device_mesh, like.placements, src_data_rank=None)


def all_ranks(flag: bool, device: torch.device) -> bool:
    """Whether `flag` holds on every process (a collective)."""
    agreed = torch.tensor(float(flag), device=device)
    torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN)
    return bool(agreed.item())


class ShardedState:
    """A sharded net's and its optimizer's state for `Accelerator.register_for_checkpointing`:
    `state_dict` gathers them whole on every process (the main one writes it), `load_state_dict`
    cuts the whole state into this process's shards. A checkpoint is then the same whatever the
    number of processes."""

    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer):
        self.net, self.optimizer = net, optimizer

    def state_dict(self) -> dict:
        optimizer = self.optimizer.state_dict()
        return {"net": gathered(self.net.state_dict()),
                "optimizer": {"param_groups": optimizer["param_groups"],
                              "state": {i: gathered(s) for i, s in optimizer["state"].items()}}}

    def load_state_dict(self, state: dict) -> None:
        own = self.net.state_dict()
        self.net.load_state_dict({k: sharded_like(v, own[k]) for k, v in state["net"].items()})
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        moments = {i: {k: v if k == "step" else sharded_like(v, params[i]) for k, v in s.items()}
                   for i, s in state["optimizer"]["state"].items()}  # Adam's `step`: one count, not sharded
        self.optimizer.load_state_dict({"param_groups": state["optimizer"]["param_groups"], "state": moments})
