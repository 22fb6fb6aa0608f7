"""A trained model for inference: `genkit.load("runs/x").sample(16, seed=0)`."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from genkit.config import AUTOREGRESSIVE_SAMPLERS, Config, ConfigError
from genkit.methods import build_method
from genkit.samplers import SAMPLERS, SCHEDULES, Denoiser, DiffusersSampler, SampleNoise, default_schedule


class TrainedModel:
    """A trained net with its config, on a device; knows the model's classes."""

    def __init__(self, cfg: Config, net: torch.nn.Module, device: str | torch.device = "cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        self.directory: Path | None = None  # the checkpoint it was loaded from, if any
        self.net = net.to(self.device).eval()
        self.last_nfe = 0  # network evaluations per sample in the last `sample` call

    @property
    def num_classes(self) -> int:
        return self.cfg.model.num_classes

    def default_labels(self, n: int) -> torch.Tensor | None:
        """Class i mod num_classes for sample i (every class appears in a grid), or None."""
        return torch.arange(n) % self.num_classes if self.num_classes > 0 else None

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


class GenerativeModel(TrainedModel):
    """A denoiser with its config and path; samples images in [0, 1]."""

    def __init__(self, cfg: Config, net: torch.nn.Module, device: str | torch.device = "cpu"):
        super().__init__(cfg, net, device)
        self.method = build_method(cfg)
        self.path = self.method.path

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
        if sampler in AUTOREGRESSIVE_SAMPLERS:
            raise ConfigError(f"--sampler: {sampler} is for autoregressive models; choose from {', '.join(SAMPLERS)}")
        if sampler not in SAMPLERS:
            raise ConfigError(f"--sampler: unknown sampler '{sampler}'; choose from {', '.join(SAMPLERS)}")
        return SAMPLERS[sampler]


class AutoregressiveModel(TrainedModel):
    """An autoregressive net (PixelCNN, MADE, FVSBN) with its config: samples images in [0, 1]
    pixel by pixel, scores exact log-likelihoods, and classifies by Bayes' rule."""

    def __init__(self, cfg: Config, net: torch.nn.Module, device: str | torch.device = "cpu"):
        super().__init__(cfg, net, device)
        self.levels = cfg.method.autoregressive.levels
        if getattr(self.net, "channels_last", False):  # full passes about 2x faster on CPU, same values
            self.net = self.net.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, sampler: str | None = None, labels=None, batch_size: int = 256,
               progress: bool = True, bf16: bool = False, steps=None, guidance=None, schedule=None, **options):
        """Draw `n` images [n, 1, H, W] in [0, 1] in raster order; `sampler` is `cached` (PixelCNN
        only) or `naive`, which draw the same images. Sample i depends only on (seed, i)."""
        from genkit.samplers.autoregressive import sample

        for flag, value in [("--steps", steps), ("--guidance", guidance), ("--schedule", schedule)]:
            if value is not None:
                raise ConfigError(f"{flag}: does not apply to autoregressive models (they draw pixel by pixel)")
        if options:
            raise ConfigError(f"--option: autoregressive sampling takes no options, got {', '.join(options)}")
        how = sampler or self.cfg.sample.sampler
        if how not in AUTOREGRESSIVE_SAMPLERS:
            raise ConfigError(f"--sampler: autoregressive models sample with {' or '.join(AUTOREGRESSIVE_SAMPLERS)}, "
                              f"not '{how}'")
        if how == "cached" and not hasattr(self.net, "cache"):
            raise ConfigError(f"--sampler: cached sampling is for pixelcnn; {self.cfg.model.name} samples naive")
        labels = self.labels_for(labels, n)
        size, out = self.cfg.data.image_size, []
        for start in tqdm(range(0, n, batch_size), desc="sampling", disable=not progress or n <= batch_size):
            idx = torch.arange(start, min(n, start + batch_size))
            uniforms = SampleNoise(seed, idx.tolist(), self.device).rand(size, size)  # [B, H, W]
            y = None if labels is None else labels[idx].to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                pixels = sample(self.net, uniforms, y, self.levels, how, progress=progress and n <= batch_size)
            out.append(pixels.float().cpu() / (self.levels - 1))
        self.last_nfe = size * size if how == "naive" else 1  # cached: one pass spread over the pixels
        return torch.cat(out)

    @torch.no_grad()
    def log_likelihood(self, pixels: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 256,
                       bf16: bool = False) -> torch.Tensor:
        """Exact log p(x | y) in nats of integer pixels [N, 1, H, W] (y = None: the null class): [N]."""
        from genkit.methods.autoregressive import log_likelihood

        out = []
        for start in range(0, len(pixels), batch_size):
            x = pixels[start:start + batch_size].to(self.device)
            y = None if labels is None else labels[start:start + batch_size].to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                out.append(log_likelihood(self.net, x, y, self.levels).double().cpu())
        return torch.cat(out)

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor | None = None, prior: torch.Tensor | None = None,
                 seed: int = 0, batch_size: int = 256, bf16: bool = False, progress: bool = True) -> dict:
        """Test NLL of uint8 images [N, 1, H, W] (binarized with `seed` when levels = 2), in nats
        per image and bits/dim. A conditional model scores log p(x | y) for every class y, which
        gives the marginal log p(x) = logsumexp_y log p(x | y) + log p(y) (`prior`, uniform if
        None), and classifies each image by argmax_y log p(x, y) against `labels`."""
        from genkit.methods.autoregressive import discretize

        pixels = discretize(images, self.levels, seed)
        dims, n = pixels[0].numel(), len(pixels)
        report = {"images": n, "levels": self.levels}
        if self.num_classes == 0:
            log_px = self.log_likelihood(pixels, None, batch_size, bf16)
        else:
            prior = torch.full((self.num_classes,), 1 / self.num_classes) if prior is None else prior
            log_joint = torch.stack([
                self.log_likelihood(pixels, torch.full((n,), k), batch_size, bf16) + math.log(prior[k])
                for k in tqdm(range(self.num_classes), desc="classes", disable=not progress, leave=False)], 1)
            log_px = log_joint.logsumexp(1)  # [N]
            if labels is not None:
                conditional = log_joint.gather(1, labels[:, None])[:, 0] - prior.log().double()[labels]
                report["conditional_nll_nats"] = -conditional.mean().item()
                report["classification_accuracy"] = (log_joint.argmax(1) == labels).double().mean().item()
        report["nll_nats"] = -log_px.mean().item()
        report["nll_stderr"] = log_px.std().item() / math.sqrt(n) if n > 1 else float("nan")
        report["bits_per_dim"] = report["nll_nats"] / (dims * math.log(2))
        return report


def build_model(cfg: Config, net: torch.nn.Module, device: str | torch.device = "cpu") -> TrainedModel:
    """The inference wrapper for `cfg`'s family: autoregressive or Gaussian-path."""
    cls = AutoregressiveModel if cfg.method.name == "autoregressive" else GenerativeModel
    return cls(cfg, net, device)


def load(path: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a run directory or checkpoint directory for sampling (safetensors + YAML only)."""
    from genkit.checkpoint import load_export

    cfg, net, directory = load_export(path, ema=ema)
    model = build_model(cfg, net, device)
    model.directory = directory
    return model
