"""`genkit.load`: a run, a checkpoint, an export or a Hub repository, as a model ready to sample."""
from __future__ import annotations

from pathlib import Path

import torch

from genkit.checkpoint import AUTOENCODER_DIR, load_export, read_grids, read_trainer_state
from genkit.export.hub import is_pretrained, load_pretrained, resolve
from genkit.inference import GenerativeModel, TrainedModel, build_model
from genkit.latents import LatentCodec
from genkit.registry import ArgumentError


def load(path: str | Path, ema: bool = True, device: str | torch.device = "cpu",
         revision: str | None = None) -> TrainedModel:
    """Load for sampling (safetensors, YAML and JSON only; no code runs) a run directory, a
    checkpoint directory, a `save_pretrained` export, or a Hub repository `owner/name` holding
    one (at `revision`; through the Hugging Face cache, offline with HF_HUB_OFFLINE=1), onto
    `device` (`auto`, `cpu`, `cuda[:N]`, `mps`), with the time grids fitted to it (`grids.json`).
    `ema=False` takes a checkpoint's raw weights."""
    local = resolve(path, revision)
    if is_pretrained(local):
        if not ema:
            raise ArgumentError("ema", f"{path} is an export, which holds one set of weights (the EMA's)")
        return load_pretrained(local, device)
    cfg, net, directory = load_export(local, ema=ema)
    codec = LatentCodec.load(directory / AUTOENCODER_DIR) if cfg.data.autoencoder else None
    model = build_model(cfg, net, device, codec)
    model.directory = directory
    if isinstance(model, GenerativeModel):
        model.grids = read_grids(directory)
    state = read_trainer_state(directory)
    model.training = {k: state[k] for k in ("step", "train_seconds") if k in state}
    return model
