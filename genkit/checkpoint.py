"""Checkpoint directories on disk and the self-contained inference export inside each.

    <output_dir>/checkpoints/step-000400/   accelerate state (trusted input: optimizer, RNG and
                                            EMA states are pickled by accelerate) plus the export:
        config.yaml          the resolved run config
        net.safetensors      raw weights
        net_ema.safetensors  EMA weights
        trainer_state.json   step and counters
        autoencoder/         a latent model's autoencoder (see `genkit.latents`)

A checkpoint is written under a temporary name and renamed into place; re-saving a step moves
the old copy aside first and pruning renames before it deletes, so a directory named `step-*` is
always complete, whenever the process dies (`recover` tidies what a death leaves). A `step-*`
damaged afterwards (truncated, overwritten) is skipped with a warning by `resolve_checkpoint`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from genkit.config import Config, load_config, save_config
from genkit.registry import ArgumentError

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
    state = {**trainer_state, "config_sha256": _sha256(directory / CONFIG_FILE)}  # a damaged config shows
    (directory / STATE_FILE).write_text(json.dumps(state, indent=2))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def publish(tmp: Path, final: Path, keep: int) -> None:
    """Rename a fully written checkpoint into place and prune the oldest beyond `keep` (0 keeps
    all). At every moment each step is whole under its own name or under `.old-` (see `recover`)."""
    aside = final.with_name(f".old-{final.name}")
    if final.exists():  # re-saving a step: the old copy stays whole until the new one is in place
        _remove(aside)
        final.rename(aside)
    tmp.rename(final)
    _remove(aside)
    if keep > 0:
        for old in list_checkpoints(final.parent.parent)[:-keep]:
            _remove(old)


def _remove(directory: Path) -> None:
    """Delete a directory so that no half-deleted copy ever bears a checkpoint's name."""
    if directory.exists():
        trash = directory.with_name(f".trash-{directory.name.lstrip('.')}")
        directory.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def recover(output_dir: str | Path) -> None:
    """Tidy what a run killed while saving left behind: an old copy moved aside goes back if its
    step has no other copy; unpublished and half-deleted directories are removed."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return
    for path in sorted(root.iterdir()):
        if path.name.startswith(".old-") and not (root / path.name[len(".old-"):]).exists():
            path.rename(root / path.name[len(".old-"):])
        elif path.name.startswith((".old-", ".tmp-", ".trash-")):
            shutil.rmtree(path, ignore_errors=True)


def damage(directory: Path) -> str | None:
    """Why the inference export of a checkpoint cannot be read, or None if it can (headers and
    sizes of the weights; the config, against the checksum saved beside it by this version; the
    trainer state)."""
    from safetensors import safe_open

    for name in (CONFIG_FILE, STATE_FILE, NET_FILE, EMA_FILE):
        if not (directory / name).is_file():
            return f"{name} is missing"
    try:
        for name in (NET_FILE, EMA_FILE):
            with safe_open(str(directory / name), "pt") as f:
                f.keys()
        state = json.loads((directory / STATE_FILE).read_text())
        state["step"]
        if state.get("config_sha256", _sha256(directory / CONFIG_FILE)) != _sha256(directory / CONFIG_FILE):
            return f"{CONFIG_FILE} is not the one written with these weights (checksum)"
        cfg = load_config(directory / CONFIG_FILE)
        from genkit.latents import AUTOENCODER_DIR

        if cfg.data.autoencoder and not (directory / AUTOENCODER_DIR / EMA_FILE).is_file():
            return "autoencoder/ is missing (a latent model keeps its autoencoder beside its weights)"
    except Exception as err:  # any unreadable file: the reason is reported, not raised
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"
    return None


def intact_checkpoints(output_dir: str | Path) -> list[Path]:
    """The checkpoints of a run whose export reads back, oldest first; each one skipped is named
    in a one-line warning (logger `genkit`)."""
    intact = []
    for path in list_checkpoints(output_dir):
        problem = damage(path)
        if problem is None:
            intact.append(path)
        else:
            logging.getLogger("genkit").warning(f"skipping damaged checkpoint {path}: {problem}")
    return intact


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from either itself or a run directory (its newest checkpoint)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ArgumentError("path", f"{path} does not exist")
    if (path / STATE_FILE).is_file() or (path / EMA_FILE).is_file():  # a checkpoint itself
        problem = damage(path)
        if problem:
            raise ArgumentError("path", f"{path} is damaged ({problem})")
        return path
    if not list_checkpoints(path):
        raise ArgumentError("path", f"{path} is neither a checkpoint nor a run directory with checkpoints")
    found = intact_checkpoints(path)
    if not found:
        raise ArgumentError("path", f"every checkpoint in {path} is damaged")
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
    except Exception as err:  # a wrong shape or an unreadable tensor
        raise ArgumentError("path", f"weights in {weights} do not fit the net its config describes "
                                    f"({str(err).splitlines()[0]})") from None
    return cfg, net.eval(), directory
