"""Latent models (Rombach et al. 2022; SD3, Esser et al. 2024): a trained autoencoder encodes the
data set once, its latents are normalised as z = (E(x) - shift) * scale with the shift and scale
measured on the data, a denoiser learns z, and samples are decoded back to pixels.

A latent run carries its autoencoder inside every checkpoint, so it loads without the run it came
from:

    <checkpoint>/autoencoder/
        config.yaml           the autoencoder's run config
        net_ema.safetensors   its weights
        latents.json          shift, scale, and where it came from
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from genkit.arguments import reason
from genkit.checkpoint import AUTOENCODER_DIR, CONFIG_FILE, EMA_FILE, STATS_FILE, load_export
from genkit.config import Config, ConfigError, load_config, save_config
from genkit.data import ImageData
from genkit.nets import build_net
from genkit.registry import ArgumentError


class LatentCodec:
    """A trained autoencoder (`genkit.nets.vae.Autoencoder`) with the normalisation of its latents:
    `encode` maps images in [-1, 1] to normalised latents (the posterior mean), `decode` back."""

    def __init__(self, cfg: Config, net: torch.nn.Module, shift: float = 0.0, scale: float = 1.0, source: str = ""):
        self.cfg, self.net = cfg, net.eval().requires_grad_(False)
        self.shift, self.scale, self.source = float(shift), float(scale), source

    @classmethod
    def from_run(cls, path: str | Path) -> "LatentCodec":
        """The autoencoder of a run or checkpoint directory trained with `method.name: vae` (EMA
        weights), not yet normalised; or a diffusers `AutoencoderKL` (`DiffusersAutoencoder`) in a
        folder of its own or a pipeline folder's `vae/`."""
        folder = DiffusersAutoencoder.folder_in(path)
        if folder is not None:
            return DiffusersAutoencoder.from_folder(folder)
        try:
            cfg, net, directory = load_export(path)
        except ArgumentError as err:
            raise ConfigError(f"data.autoencoder: {err.problem}") from None
        if cfg.model.name != "vae":
            raise ConfigError(f"data.autoencoder: {path} holds a {cfg.model.name} model, not an autoencoder "
                              f"(train one with method.name=vae)")
        return cls(cfg, net, source=str(directory))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.net.latent_shape(self.cfg.data.image_size)

    def latent_shape_for(self, channels: int, image_size: int) -> tuple[int, int, int]:
        """The latents (c, h, w) of `channels`-channel images of `image_size`, which must be the ones
        the autoencoder was trained on (`ConfigError` naming `data.autoencoder` if not)."""
        if (self.cfg.data.channels, self.cfg.data.image_size) != (channels, image_size):
            raise ConfigError(f"data.autoencoder: {self.source} was trained on {self.cfg.data.channels}-channel "
                              f"{self.cfg.data.image_size} px images; this run's data.channels and data.image_size "
                              f"are {channels} and {image_size}")
        return self.latent_shape

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device) -> "LatentCodec":
        self.net = self.net.to(device)
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor, normalise: bool = True) -> torch.Tensor:
        """Images [B, C, H, W] in [-1, 1] -> latents [B, c, h, w] (posterior means)."""
        mean = self.net.encode(x.to(self.device).float())[0]
        return (mean - self.shift) * self.scale if normalise else mean

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, c, h, w] -> images [B, C, H, W], about [-1, 1] (not clamped)."""
        return self.net.decode(z.to(self.device).float() / self.scale + self.shift)

    def fit(self, latents: torch.Tensor) -> "LatentCodec":
        """Set shift and scale so that the raw `latents` have mean 0 and standard deviation 1 over
        all their values (SD3's shift and scaling factors)."""
        values = latents.double().flatten()
        std = float(values.std())
        if not std > 0:
            raise ConfigError(f"data.autoencoder: {self.source}'s latents of this data set are constant; it cannot "
                              f"be the one trained for it")
        self.shift, self.scale = float(values.mean()), 1.0 / std
        return self

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, directory / CONFIG_FILE)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}, str(directory / EMA_FILE))
        stats = {"shift": self.shift, "scale": self.scale, "source": self.source}
        (directory / STATS_FILE).write_text(json.dumps(stats, indent=2))

    @classmethod
    def load(cls, directory: Path) -> "LatentCodec":
        if DiffusersAutoencoder.folder_in(directory) == Path(directory):
            return DiffusersAutoencoder.from_folder(directory)
        try:
            cfg = load_config(directory / CONFIG_FILE)
            net = build_net(cfg)
            net.load_state_dict(load_file(str(directory / EMA_FILE)))
            stats = json.loads((directory / STATS_FILE).read_text())
            return cls(cfg, net, stats["shift"], stats["scale"], stats.get("source", ""))
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise ConfigError(f"data.autoencoder: the autoencoder saved in {directory} does not load "
                              f"({reason(err)})") from None


class DiffusersAutoencoder(LatentCodec):
    """A diffusers `AutoencoderKL` (a latent diffusers pipeline's `vae`) as a latent model's codec,
    its latents normalised as diffusers' pipelines do, z = (E(x) - shift_factor) * scaling_factor."""

    def __init__(self, vae: torch.nn.Module, source: str = ""):
        config = vae.config
        super().__init__(None, vae, config.get("shift_factor") or 0.0, config.scaling_factor, source)
        self.factor = 2 ** (len(config.block_out_channels) - 1)  # pixels per latent, each way

    @staticmethod
    def folder_in(path: str | Path) -> Path | None:
        """The folder of a diffusers `AutoencoderKL` at `path`: `path` itself, or a pipeline's `path/vae`."""
        for folder in (Path(path), Path(path) / "vae"):
            try:
                if json.loads((folder / "config.json").read_text()).get("_class_name") == "AutoencoderKL":
                    return folder
            except (OSError, ValueError, AttributeError):
                continue
        return None

    @classmethod
    def from_folder(cls, folder: str | Path) -> "DiffusersAutoencoder":
        from diffusers import AutoencoderKL

        try:
            vae = AutoencoderKL.from_pretrained(folder)
        except (OSError, ValueError, RuntimeError) as err:
            raise ConfigError(f"data.autoencoder: the AutoencoderKL in {folder} does not load "
                              f"({reason(err)})") from None
        for tensor in [*vae.parameters(), *vae.buffers()]:  # memory of torch's own (see GenkitNet.from_pretrained)
            tensor.data = tensor.data.clone()
        return cls(vae, str(folder))

    def latent_shape_for(self, channels: int, image_size: int) -> tuple[int, int, int]:
        config = self.net.config
        if channels != config.in_channels or image_size % self.factor:
            raise ConfigError(f"data.autoencoder: {self.source} encodes {config.in_channels}-channel images whose size "
                              f"is a multiple of {self.factor}; this run's data.channels and data.image_size are "
                              f"{channels} and {image_size}")
        return config.latent_channels, image_size // self.factor, image_size // self.factor

    def image_shape(self, latent_size: int) -> tuple[int, int, int]:
        """The images (channels, size, size) that latents of `latent_size` decode to."""
        return self.net.config.in_channels, latent_size * self.factor, latent_size * self.factor

    @torch.no_grad()
    def encode(self, x: torch.Tensor, normalise: bool = True) -> torch.Tensor:
        mean = self.net.encode(x.to(self.device).float()).latent_dist.mean  # [B, C, H, W] -> [B, c, H/f, W/f]
        return (mean - self.shift) * self.scale if normalise else mean

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = z.to(self.device).float() / self.scale + self.shift
        return self.net.decode(z).sample  # [B, c, h, w] -> [B, C, fh, fw]

    def fit(self, latents: torch.Tensor) -> "LatentCodec":
        """Nothing: the latents keep the autoencoder's own scaling and shift factors, those a diffusers
        denoiser of them was trained with."""
        return self

    def save(self, directory: Path) -> None:
        """The AutoencoderKL in diffusers' layout (`config.json` and its weights), which `load` reads."""
        self.net.save_pretrained(directory, safe_serialization=True)


class LatentData(ImageData):
    """A data set as normalised latents (`images` [N, c, h, w], float) with its labels: the
    trainer's data protocol."""

    def batch(self, indices: torch.Tensor, hflip_generator: torch.Generator | None = None):
        """(latents, labels, None); never flipped: the config refuses data.hflip with latents."""
        return self.images[indices], (self.labels[indices] if self.labels is not None else None), None


def encode_dataset(codec: LatentCodec, images: torch.Tensor, cache: Path, half: torch.dtype | None = None,
                   chunk: int = 4096, batch_size: int = 512, progress: bool = True) -> torch.Tensor:
    """Raw latents [N, c, h, w] (posterior means, stored as float32) of uint8 images [N, C, H, W],
    computed under autocast to `half` if given (bf16: faster on a CPU with AMX), cached in
    `cache` one chunk file at a time: an interrupted encoding resumes where it stopped, and a cache
    of other images, another autoencoder or another precision is replaced."""
    key = _fingerprint(codec, images, half)
    key_file = cache / "key.json"
    if cache.exists() and (not key_file.is_file() or json.loads(key_file.read_text()).get("key") != key):
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    key_file.write_text(json.dumps({"key": key, "images": len(images), "autoencoder": codec.source}))
    out = []
    for k, start in enumerate(tqdm(range(0, len(images), chunk), desc="encoding", disable=not progress, leave=False)):
        path = cache / f"chunk-{k:05d}.safetensors"
        if path.is_file():
            try:
                out.append(load_file(str(path))["latents"])
                continue
            except Exception:  # a damaged chunk (a disk error): encode it again
                path.unlink()
        part = images[start:start + chunk]
        with torch.autocast(codec.device.type, dtype=half or torch.bfloat16, enabled=half is not None):
            latents = torch.cat([codec.encode(part[i:i + batch_size].float() / 127.5 - 1, normalise=False).float().cpu()
                                 for i in range(0, len(part), batch_size)])
        tmp = path.with_name(f".tmp-{path.name}")
        save_file({"latents": latents.contiguous()}, str(tmp))
        os.replace(tmp, path)
        out.append(latents)
    return torch.cat(out)


def _fingerprint(codec: LatentCodec, images: torch.Tensor, half: torch.dtype | None) -> str:
    """sha256 of the autoencoder's weights, the images and the precision."""
    digest = hashlib.sha256(str(half).encode())
    for name, tensor in sorted(codec.net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(str(tuple(images.shape)).encode())
    digest.update(images.contiguous().numpy().tobytes())
    return digest.hexdigest()
