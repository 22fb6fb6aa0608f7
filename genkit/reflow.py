"""Reflow (Liu et al. 2022, "Flow Straight and Fast", section 2.3): couple noise with a trained
flow's samples, then train a new flow on the pairs, whose paths are straighter.

Pairs live in a directory of safetensors shards plus `pairs.json`; a shard is written under a
temporary name and renamed, so generation resumes where a killed run stopped, and pass the
directory as `data.path` to train on it. Under a launch of several processes (`accelerate launch`,
`torchrun`) process r of W draws shards r, r + W, ...: the same shards one process draws.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from genkit.arguments import MAX_NUM, check_draw, integer
from genkit.files import atomic_path, write_text
from genkit.inference.distributed import launch
from genkit.registry import ArgumentError, ConfigError
from genkit.samplers import euler

META_FILE = "pairs.json"


def is_pairs_dir(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file()


def generate_pairs(model, out_dir: str | Path, num: int, steps: int = 20, sampler: str | None = None, seed: int = 0,
                   shard_size: int = 1000, batch_size: int = 256, precision: str = "no", progress: bool = True) -> Path:
    """Draw `num` (noise, sample) pairs from a trained flow (`genkit.load(...)`), resumably.

    Sample i uses the noise stream (seed, i) and, for a conditional model, class i mod K; `sampler`
    defaults to the model's `sample.sampler`, on the grid stored with it (`genkit fit-grid`). Every
    process of a launch takes part (each on its own `model`); all return once every shard is written."""
    if model.cfg.method.name != "flow":
        raise ArgumentError("model", f"reflow needs a flow model, this one is '{model.cfg.method.name}'")
    if model.codec is not None:
        raise ArgumentError("model", "reflow pairs are drawn in pixel space; this flow is a latent model")
    num, seed, batch_size, steps, _ = check_draw(num, seed, batch_size, steps)
    shard_size = integer(shard_size, "shard_size", 1, MAX_NUM)
    sampler = model.cfg.sample.sampler if sampler is None else sampler
    if isinstance(sampler, str):  # refused before anything is written: a corrected rerun runs
        model.registered_sampler(sampler)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir()) and not is_pairs_dir(out)):
        raise ArgumentError("out_dir", f"{out} exists and holds no reflow pairs; name a new or empty directory "
                                       f"(training on it would read only the pairs)")
    meta = {"num": num, "steps": steps, "sampler": sampler, "seed": seed, "shard_size": shard_size,
            "checkpoint": str(model.directory), "num_classes": model.num_classes}
    if is_pairs_dir(out) and any(out.glob("pairs-*.safetensors")):  # settings without pairs may change
        old = _read_meta(out)
        if old != meta:
            raise ArgumentError("out_dir", f"{out} holds pairs drawn with other settings ({old}); choose a new directory")
    state = launch()
    state.wait_for_everyone()  # every process has checked the directory before one writes to it
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / META_FILE, json.dumps(meta, indent=2))
    state.wait_for_everyone()
    shards = range(state.process_index, math.ceil(num / shard_size), state.num_processes)
    for shard in tqdm(shards, desc="pairs", disable=not (progress and state.is_main_process)):
        path = out / f"pairs-{shard:05d}.safetensors"
        if path.exists():
            continue
        start = shard * shard_size
        n = min(shard_size, num - start)
        labels = torch.arange(start, start + n) % model.num_classes if model.num_classes else None
        drawn = model.sample(n, seed=seed, sampler=sampler, steps=steps, labels=labels, start_index=start,
                             batch_size=batch_size, precision=precision, progress=False)
        tensors = {"x0": (drawn.images * 2 - 1).contiguous(), "noise": drawn.noise.float().contiguous()}
        if labels is not None:
            tensors["labels"] = labels
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))
    state.wait_for_everyone()
    return out


def _read_meta(directory: Path) -> dict:
    try:
        return json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"data.path: {directory / META_FILE} is unreadable ({type(err).__name__}); "
                          f"draw the pairs again into a new directory") from None


@dataclass
class PairData:
    """Pairs in memory: samples x0 [N, C, H, W] in [-1, 1], their noise, and labels [N] or None."""

    x0: torch.Tensor
    noises: torch.Tensor
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.x0)

    @property
    def images(self) -> torch.Tensor:
        return self.x0

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x0.shape[1:])

    def batch(self, indices: torch.Tensor, hflip_generator: torch.Generator | None = None):
        """(samples, labels, the noise each was drawn from): the trainer's data protocol."""
        if hflip_generator is not None:
            raise ConfigError("data.hflip: flipping would break the noise-sample coupling of reflow pairs")
        return self.x0[indices], (self.labels[indices] if self.labels is not None else None), self.noises[indices]


def load_pairs(directory: str | Path) -> PairData:
    """All shards of a pairs directory; refuses an unfinished generation."""
    directory = Path(directory)
    meta = _read_meta(directory)
    paths = sorted(directory.glob("pairs-*.safetensors"))
    expected = math.ceil(meta["num"] / meta["shard_size"])
    if len(paths) < expected:
        raise ConfigError(f"data.path: {directory} holds {len(paths)} of {expected} shards; "
                          f"rerun `genkit reflow` with the same arguments to finish it")
    shards = []
    for path in paths:
        try:
            shards.append(load_file(str(path)))
        except Exception as err:  # a damaged shard: name it
            raise ConfigError(f"data.path: shard {path} does not load ({type(err).__name__}); delete it and rerun "
                              f"`genkit reflow` with the same arguments to draw it again") from None
    labels = torch.cat([s["labels"] for s in shards]) if "labels" in shards[0] else None
    return PairData(torch.cat([s["x0"] for s in shards]), torch.cat([s["noise"] for s in shards]), labels)


@torch.no_grad()
def straightness(denoiser, x1: torch.Tensor, steps: int = 100) -> float:
    """S = int_0^1 E |(x1 - x0) - v(x_t, t)|^2 dt (Liu et al. 2022, eq. 5) along the model's own
    ODE paths from noise x1 to the sample x0 it reaches (Euler, `steps` uniform steps), per
    dimension; 0 for perfectly straight paths."""
    path, velocities = denoiser.path, []

    def record(step, t, x, x0):  # the velocity Euler steps with: from x0 and the implied eps
        tt = torch.tensor([t], dtype=torch.float64)
        eps = (x - float(path.alpha(tt)) * x0) / float(path.sigma(tt))
        velocities.append(path.from_x0_eps(x0, eps, tt, "velocity"))

    x0 = euler(denoiser, x1, torch.linspace(1, 0, steps + 1, dtype=torch.float64), callback=record)
    straight = x1 - x0  # d x_t / dt of the line from the sample (t = 0) to the noise x1 (t = 1)
    return float(torch.stack([(v - straight).square().mean() for v in velocities]).mean())
