"""Checkpoint directories on disk and the self-contained inference export inside each.

    <output_dir>/checkpoints/step-000400/   accelerate state (trusted input: optimizer, RNG and
                                            EMA states are pickled by accelerate) plus the export:
        config.yaml          the resolved run config
        net.safetensors      raw weights
        net_ema.safetensors  EMA weights
        trainer_state.json   step and counters
        autoencoder/         a latent model's autoencoder (see `genkit.latents`)
        grids.json           the time grids fitted to the model, once fitted (`genkit.samplers.plan`)

A checkpoint is written under a temporary name and renamed into place; re-saving a step moves
the old copy aside first and pruning renames before it deletes, so a directory named `step-*` is
always complete, whenever the process dies (`recover` tidies what a death leaves). A `step-*`
damaged afterwards (truncated, overwritten) is skipped with a warning by `resolve_checkpoint`.
A resume from an earlier step moves the later ones to `<output_dir>/abandoned/` (`set_aside_later`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from genkit.arguments import reason, shorten
from genkit.config import Config, load_config, save_config
from genkit.files import write_text
from genkit.nets import build_net
from genkit.registry import ArgumentError
from genkit.samplers import GRIDS_FILE, SAMPLERS, GridBook

STEP_DIR = re.compile(r"^step-(\d+)$")
NET_FILE, EMA_FILE, CONFIG_FILE, STATE_FILE = "net.safetensors", "net_ema.safetensors", "config.yaml", "trainer_state.json"
AUTOENCODER_DIR, STATS_FILE = "autoencoder", "latents.json"  # a latent model's autoencoder: `genkit.latents`
ABANDONED_DIR = "abandoned"  # checkpoints of a branch left by a resume from an earlier step


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


def set_aside_later(output_dir: str | Path, step: int) -> Path | None:
    """A run resumed from `step` starts a new branch: move its checkpoints of later steps (an
    abandoned branch, damaged or not) out of `checkpoints/` into `abandoned/<time>/`, so that
    "newest" (`resume=latest`, `genkit.load`, pruning) means the branch being trained and nothing
    is deleted. Returns where they went, or None if there were none."""
    later = [p for p in list_checkpoints(output_dir) if int(STEP_DIR.match(p.name).group(1)) > step]
    if not later:
        return None
    aside = Path(output_dir) / ABANDONED_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-from-step-{step:06d}"
    aside.mkdir(parents=True, exist_ok=True)
    for path in later:
        path.rename(aside / path.name)
    return aside


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
    """Why the inference export of a checkpoint cannot be used, or None if it can: every file it
    holds is read as far as it can be without loading the tensors (the config, against the
    checksum saved beside it; the trainer state, whose step must be the directory's; each weight
    file's names and shapes against the net its config describes), and so is a latent model's
    autoencoder, whose latents must be the ones the denoiser was trained on."""
    for name in (CONFIG_FILE, STATE_FILE, NET_FILE, EMA_FILE):
        if not (directory / name).is_file():
            return f"{name} is missing"
    try:
        state = json.loads((directory / STATE_FILE).read_text())
        problem = _state_problem(state, directory)
        if problem:
            return f"{STATE_FILE}: {problem}"
        if state.get("config_sha256", _sha256(directory / CONFIG_FILE)) != _sha256(directory / CONFIG_FILE):
            return f"{CONFIG_FILE} is not the one written with these weights (checksum)"
        cfg = load_config(directory / CONFIG_FILE)
        net = _meta_net(cfg)
        for name in (NET_FILE, EMA_FILE):
            problem = _weights_problem(directory / name, net)
            if problem:
                return f"{name}: {problem}"
        if cfg.data.autoencoder:
            problem = _autoencoder_problem(directory / AUTOENCODER_DIR, cfg)
            if problem:
                return f"{AUTOENCODER_DIR}/{problem}"
    except Exception as err:  # any unreadable file: the reason is reported, not raised
        return reason(err)
    return None


def _state_problem(state, directory: Path) -> str | None:
    """What is wrong with a trainer state read from `directory`, or None."""
    if not isinstance(state, dict):
        return "not a mapping"
    for key in ("step", "bad_steps_total"):
        value = state.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{key} is {shorten(value)}, not a count"
    seconds = state.get("train_seconds", 0.0)  # absent in checkpoints of earlier versions
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
        return f"train_seconds is {shorten(seconds)}, not a duration"
    named = STEP_DIR.match(directory.name)
    if named and int(named.group(1)) != state["step"]:
        return f"step {state['step']} is not its directory's ({directory.name})"
    return None


def _weights_problem(path: Path, net: torch.nn.Module) -> str | None:
    """Whether a safetensors file holds exactly the tensors, by name and shape, of `net` (no
    weights are read)."""
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    try:
        with safe_open(str(path), "pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # truncated, overwritten: safetensors' own error
        return f"unreadable ({reason(err)})"
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        first = f"missing {missing[0]}" if missing else f"extra {extra[0]}"
        return f"its tensors are not those of the config's net ({first})"
    wrong = [k for k in expected if expected[k] != found[k]]
    if wrong:
        return f"{wrong[0]} has shape {list(found[wrong[0]])}, the config's net {list(expected[wrong[0]])}"
    return None


def _meta_net(cfg: Config) -> torch.nn.Module:
    """`cfg`'s net built on the meta device (shapes, no memory), or on the CPU for a net whose
    constructor needs real tensors (one a user registered, say: meta tensors raise there)."""
    try:
        with torch.device("meta"):
            return build_net(cfg)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return build_net(cfg)


DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"  # a diffusers model's weights in its folder


def _autoencoder_problem(directory: Path, cfg: Config) -> str | None:
    """What is wrong with a latent checkpoint's autoencoder (its config, weights and latent
    statistics, and that its latents have the shape the denoiser takes), or None. A diffusers
    AutoencoderKL (`genkit.latents.DiffusersAutoencoder`: `config.json` and its weights) is read
    when it loads."""
    if (directory / "config.json").is_file():
        return None if (directory / DIFFUSERS_WEIGHTS).is_file() else f"{DIFFUSERS_WEIGHTS} is missing"
    for name in (CONFIG_FILE, EMA_FILE, STATS_FILE):
        if not (directory / name).is_file():
            return f"{name} is missing (a latent model keeps its autoencoder beside its weights)"
    try:
        ae_cfg = load_config(directory / CONFIG_FILE)
    except Exception as err:
        return f"{CONFIG_FILE}: unreadable ({reason(err)})"
    autoencoder = _meta_net(ae_cfg)
    problem = _weights_problem(directory / EMA_FILE, autoencoder)
    if problem:
        return f"{EMA_FILE}: {problem}"
    try:
        stats = json.loads((directory / STATS_FILE).read_text())
    except (OSError, ValueError) as err:
        return f"{STATS_FILE}: unreadable ({reason(err)})"
    shift, scale = (stats.get("shift"), stats.get("scale")) if isinstance(stats, dict) else (None, None)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (shift, scale)) \
            or scale <= 0:
        return f"{STATS_FILE}: shift {shorten(shift)} and scale {shorten(scale)} are not a finite shift and a " \
               f"positive scale"
    made = tuple(autoencoder.latent_shape(ae_cfg.data.image_size))
    taken = (cfg.data.latent_channels, cfg.data.latent_size, cfg.data.latent_size)
    if made != taken:
        return f"it makes latents of {' x '.join(map(str, made))}, the denoiser takes {' x '.join(map(str, taken))}"
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


def read_grids(directory: str | Path) -> GridBook:
    """The time grids fitted to the model in `directory` (empty where none were; a damaged file warns)."""
    return GridBook.read(directory, SAMPLERS)


def write_grids(directory: str | Path, book: GridBook) -> Path:
    """Store `book` with the model in `directory` (atomically: a crash leaves the old file or the new)."""
    return write_text(Path(directory) / GRIDS_FILE, book.to_json())


def read_trainer_state(directory: Path) -> dict:
    return json.loads((Path(directory) / STATE_FILE).read_text())


def load_export(path: str | Path, ema: bool = True) -> tuple[Config, torch.nn.Module, Path]:
    """Config and denoiser (EMA weights unless `ema=False`) of a checkpoint; no code execution."""
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
