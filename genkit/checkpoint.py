"""Checkpoint directories on disk and the self-contained inference export inside each.

    <output_dir>/checkpoints/step-000400/   accelerate state (trusted input: optimizer, RNG and
                                            EMA states are pickled by accelerate) plus the export:
        config.yaml          the resolved run config
        net.safetensors      raw weights
        net_ema.safetensors  EMA weights
        trainer_state.json   step and counters

A checkpoint is written under a temporary name and renamed into place, so a directory named
`step-*` is always complete.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from genkit.config import Config, ConfigError, load_config, save_config

STEP_DIR = re.compile(r"^step-(\d+)$")
NET_FILE, EMA_FILE, CONFIG_FILE, STATE_FILE = "net.safetensors", "net_ema.safetensors", "config.yaml", "trainer_state.json"


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:06d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def write_export(directory: Path, cfg: Config, net_state: dict, ema_state: dict, trainer_state: dict) -> None:
    """The inference export: weights as safetensors and the config as YAML (no pickle)."""
    save_file({k: v.contiguous() for k, v in net_state.items()}, str(directory / NET_FILE))
    save_file({k: v.contiguous() for k, v in ema_state.items()}, str(directory / EMA_FILE))
    save_config(cfg, directory / CONFIG_FILE)
    (directory / STATE_FILE).write_text(json.dumps(trainer_state, indent=2))


def publish(tmp: Path, final: Path, keep: int) -> None:
    """Rename a fully written checkpoint into place and prune the oldest beyond `keep` (0 keeps all)."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    if keep > 0:
        for old in list_checkpoints(final.parent.parent)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from either itself or a run directory (its newest checkpoint)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"--checkpoint: {path} does not exist")
    if (path / CONFIG_FILE).is_file() and (path / EMA_FILE).is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise ConfigError(f"--checkpoint: {path} is neither a checkpoint nor a run directory with checkpoints")
    return found[-1]


def read_trainer_state(directory: Path) -> dict:
    return json.loads((Path(directory) / STATE_FILE).read_text())


def load_export(path: str | Path, ema: bool = True) -> tuple[Config, torch.nn.Module, Path]:
    """Config and denoiser (EMA weights unless `ema=False`) of a checkpoint; no code execution."""
    from genkit.nets import build_net

    directory = resolve_checkpoint(path)
    cfg = load_config(directory / CONFIG_FILE)
    net = build_net(cfg)
    weights = directory / (EMA_FILE if ema else NET_FILE)
    try:
        net.load_state_dict(load_file(str(weights)))
    except RuntimeError as err:
        raise ConfigError(f"--checkpoint: weights in {weights} do not fit the net its config describes "
                          f"({str(err).splitlines()[0]})")
    return cfg, net.eval(), directory
