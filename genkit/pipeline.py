"""A trained model for inference: `genkit.load("runs/x").sample(16, seed=0)`."""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from genkit.config import Config, ConfigError
from genkit.methods import build_method
from genkit.samplers import SAMPLERS, SCHEDULES, Denoiser, DiffusersSampler, SampleNoise, default_schedule


class GenerativeModel:
    """A denoiser with its config and path; samples images in [0, 1]."""

    def __init__(self, cfg: Config, net: torch.nn.Module, device: str | torch.device = "cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        self.directory: Path | None = None  # the checkpoint it was loaded from, if any
        self.net = net.to(self.device).eval()
        self.method = build_method(cfg)
        self.path = self.method.path

    @property
    def num_classes(self) -> int:
        return self.cfg.model.num_classes

    def default_labels(self, n: int) -> torch.Tensor | None:
        """Class i mod num_classes for sample i (every class appears in a grid), or None."""
        return torch.arange(n) % self.num_classes if self.num_classes > 0 else None

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, sampler=None, steps: int | None = None,
               guidance: float | None = None, labels=None, schedule=None, scheduler=None,
               batch_size: int = 256, progress: bool = True, bf16: bool = False,
               clip_x0: bool = True, offset: int = 0, return_noise: bool = False, **sampler_kwargs):
        """Draw `n` images [n, C, H, W] in [0, 1] (with `return_noise`, also the starting noise
        each was drawn from: (images, noise)).

        `sampler` is a name from `genkit.samplers.SAMPLERS` or a function with the sampler
        signature; `scheduler` any diffusers scheduler instance instead; `schedule` a name from
        `genkit.samplers.SCHEDULES` or a function (path, steps) -> times (default: the
        sampler's own); `labels` an int, a sequence of class ids, or None (class i mod K for
        sample i); `clip_x0` clamps every x0 estimate to the data range [-1, 1].
        Sample i depends only on (seed, offset + i), not on `batch_size`.
        """
        sc = self.cfg.sample
        steps = sc.steps if steps is None else steps
        guidance = sc.guidance if guidance is None else guidance
        name = sampler if sampler is not None else sc.sampler
        fn = DiffusersSampler(scheduler, seed) if scheduler is not None else self._sampler(name)
        if steps <= 0:
            raise ConfigError(f"--steps: must be positive, got {steps}")
        labels = self.labels_for(labels, n)
        schedule = schedule or default_schedule(name, self.path)
        if isinstance(schedule, str):
            if schedule not in SCHEDULES:
                raise ConfigError(f"--schedule: unknown schedule '{schedule}'; choose from {', '.join(SCHEDULES)}")
            schedule = SCHEDULES[schedule]
        try:
            ts = schedule(self.path, steps)
        except ValueError as err:
            raise ConfigError(f"--schedule: {err}") from None
        shape = (self.cfg.data.channels, self.cfg.data.image_size, self.cfg.data.image_size)
        prior_std = float((self.path.alpha(ts[:1]) ** 2 + self.path.sigma(ts[:1]) ** 2).sqrt())
        out, starts, self.last_nfe = [], [], 0  # NFE per sample (the most any batch needed)
        for start in tqdm(range(0, n, batch_size), desc="sampling", disable=not progress or n <= batch_size):
            idx = torch.arange(start, min(n, start + batch_size))
            noise = SampleNoise(seed, (idx + offset).tolist(), self.device)
            denoiser = Denoiser(self.net, self.path, self.method.prediction,
                                labels=None if labels is None else labels[idx].to(self.device),
                                guidance=guidance, null_class=self.num_classes, clip_x0=clip_x0, bf16=bf16)
            x = noise.randn(*shape) * prior_std
            if return_noise:
                starts.append(x.cpu())
            x = fn(denoiser, x, ts, noise, progress=progress and n <= batch_size, **sampler_kwargs)
            self.last_nfe = max(self.last_nfe, denoiser.nfe)
            out.append(((x.clamp(-1, 1) + 1) / 2).cpu())
        return (torch.cat(out), torch.cat(starts)) if return_noise else torch.cat(out)

    def bits_per_dim(self, images: torch.Tensor, batch_size: int = 50, seed: int = 0, progress: bool = True,
                     bf16: bool = False, **options) -> tuple[float, float, int]:
        """Bits/dim of uint8 images [N, C, H, W] under the model's probability-flow ODE (the
        unconditional density p(x): the null class of a conditional model), with uniform
        dequantization: (mean, standard error, network evaluations per batch). `options` go to
        `genkit.likelihood.log_likelihood` (estimator, probe, method, rtol, atol, t_min)."""
        from genkit.likelihood import dataset_bits_per_dim

        def denoiser():
            return Denoiser(self.net, self.path, self.method.prediction, bf16=bf16)
        with torch.no_grad():
            return dataset_bits_per_dim(denoiser, images.to(self.device), batch_size, seed, progress, **options)

    def _sampler(self, sampler):
        if callable(sampler):
            return sampler
        if sampler not in SAMPLERS:
            raise ConfigError(f"--sampler: unknown sampler '{sampler}'; choose from {', '.join(SAMPLERS)}")
        return SAMPLERS[sampler]

    def labels_for(self, labels, n: int) -> torch.Tensor | None:
        if labels is None:
            return self.default_labels(n)
        if self.num_classes == 0:
            raise ConfigError("--class-label: this model is unconditional (model.num_classes = 0)")
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(n)
        if labels.numel() != n:
            raise ConfigError(f"labels: got {labels.numel()} labels for {n} samples")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ConfigError(f"--class-label: must lie in 0..{self.num_classes - 1}")
        return labels.clone()


def load(path: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> GenerativeModel:
    """Load a run directory or checkpoint directory for sampling (safetensors + YAML only)."""
    from genkit.checkpoint import load_export

    cfg, net, directory = load_export(path, ema=ema)
    model = GenerativeModel(cfg, net, device)
    model.directory = directory
    return model
