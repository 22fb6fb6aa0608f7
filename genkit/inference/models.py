"""Trained models for inference: a Gaussian-path model (in pixels or latents), an autoregressive
model and an autoencoder, each with `sample` and scores of its own; `genkit.load` makes them."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from genkit.arguments import check_draw, check_guidance_interval, check_images, class_labels
from genkit.checkpoint import write_grids
from genkit.config import Config
from genkit.evaluation.metrics import psnr, ssim
from genkit.images import to_pil
from genkit.inference.devices import half_dtype, keep_freed_memory, pick_device
from genkit.likelihood import dataset_bits_per_dim
from genkit.methods import METHODS, build_path
from genkit.methods.autoregressive import discretize, log_likelihood
from genkit.nets import input_shape
from genkit.registry import ArgumentError, ConfigError
from genkit.samplers import (SAMPLERS, AdaptiveGrid, Callback, Denoiser, FittedGrid, GridBook, SampleNoise, fit,
                             plan)
from genkit.samplers.adaptive import PILOT_SEED, pilot_draws
from genkit.samplers.diffusers import scheduler_for


@dataclass
class Samples:
    """What `model.sample` returns: images [N, C, H, W] in [0, 1]; the starting noise each was
    drawn from, [N, C, H, W] or a latent model's [N, c, h, w] (None for autoregressive models and
    autoencoders); their class labels [N] (None for an unconditional model); and the network
    evaluations per sample (the most any batch needed)."""

    images: torch.Tensor
    noise: torch.Tensor | None
    labels: torch.Tensor | None
    nfe: int

    def pil(self) -> list:
        """The images as a list of PIL images (mode L or RGB)."""
        return to_pil(self.images)


class TrainedModel:
    """A trained net with its config, on a device; knows the model's classes."""

    family = "denoiser"  # which samplers in `genkit.samplers.SAMPLERS` apply
    described = "models on a Gaussian path"  # for messages: "does not apply to ..."

    def __init__(self, cfg: Config, net: torch.nn.Module, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.directory: Path | None = None  # the checkpoint it was loaded from, if any
        self.training: dict = {}  # its checkpoint's step and train_seconds, when known
        self.metrics: dict | None = None  # a `genkit eval` report, when one came with it
        self._place(net.eval(), device)

    def _place(self, net: torch.nn.Module, device: str | torch.device) -> None:
        self.device = pick_device(device)
        self.net = net.to(self.device)
        if self.device.type == "cpu":
            keep_freed_memory()  # faster CPU passes (benchmarks/throughput.py --part allocator)

    def to(self, device: str | torch.device) -> "TrainedModel":
        """Move the model to `device` (see `pick_device`); samples stay a function of (seed, i)."""
        self._place(self.net, device)
        return self

    def refuse(self, **given) -> None:
        """`ArgumentError` for the first of `given` (name -> value) that is set (not None or False):
        arguments of the shared `sample` signature that this kind of model does not take."""
        for name, value in given.items():
            if value is not None and value is not False:
                raise ArgumentError(name, f"does not apply to {self.described}")

    @property
    def num_classes(self) -> int:
        return self.cfg.model.num_classes

    @property
    def predicts_unconditionally(self) -> bool:
        """Whether the model has learnt to predict without a label (its null class, under label dropout),
        as classifier-free guidance needs; an unconditional model does."""
        return self.num_classes == 0 or self.cfg.method.p_uncond > 0

    def default_labels(self, n: int) -> torch.Tensor | None:
        """Class i mod num_classes for sample i (every class appears in a grid), or None."""
        return class_labels(None, n, self.num_classes)

    def labels_for(self, labels, n: int) -> torch.Tensor | None:
        """`labels` (None, an int or a sequence) as [n] class ids, checked against the model
        (`genkit.arguments.class_labels`)."""
        return class_labels(labels, n, self.num_classes)

    def preview(self, data, n: int = 64) -> torch.Tensor:
        """What the trainer's grids show: n samples [n, C, H, W] in [0, 1], seed 0 (`data`, the
        training set, is for models that show reconstructions instead)."""
        return self.sample(n, seed=0, progress=False).images

    def registered_sampler(self, name: str):
        """The registered sampler `name` of this model's family, checked against its config."""
        try:
            component = SAMPLERS.lookup(name, "sampler", self.family)
            if component.check is not None:
                component.check(self.cfg)
        except ConfigError as err:
            raise ArgumentError("sampler", err.problem) from None
        return component.build


class GenerativeModel(TrainedModel):
    """A denoiser with its path and prediction kind; samples images in [0, 1]. A latent model
    (`data.autoencoder`) samples latents and decodes them with its `codec` (`genkit.latents`)."""

    def __init__(self, cfg: Config, net: torch.nn.Module, device: str | torch.device = "cpu", codec=None):
        if cfg.data.autoencoder and codec is None:
            raise ArgumentError("codec", "a latent model (data.autoencoder) needs its autoencoder to decode samples")
        super().__init__(cfg, net, device)
        self.codec = None if codec is None else codec.to(self.device)
        self.path = build_path(cfg)
        self.prediction = cfg.method.resolved_prediction
        self._inference_nets: dict[tuple[torch.dtype | None, bool], torch.nn.Module] = {}
        self._adaptive_grids: dict[tuple, AdaptiveGrid] = {}
        self.grids = GridBook()  # the grids fitted to this model (`fit_grid`), read from its directory by `load`

    def interval_for(self, guidance_interval, guidance: float | None = None) -> tuple[float, ...]:
        """`guidance_interval` checked (`genkit.arguments.check_guidance_interval`), None giving the
        config's; `()` at `guidance` 1, where it changes nothing (so grids fitted unguided serve)."""
        given = self.cfg.sample.guidance_interval if guidance_interval is None else guidance_interval
        name = "sample.guidance_interval" if guidance_interval is None else "guidance_interval"
        interval = check_guidance_interval(given, name)
        return () if guidance == 1 else interval

    def to(self, device: str | torch.device) -> "GenerativeModel":
        super().to(device)
        self._inference_nets.clear()  # copies for the old device; made again on use
        if self.codec is not None:
            self.codec.to(self.device)
        return self

    def inference_net(self, half: torch.dtype | None = None, compile: bool = False) -> torch.nn.Module:
        """The net that samples, made once per dtype and `compile`: for a half dtype a copy of its
        weights in it, which under autocast spares the cast of every weight at every call (faster than
        autocast over fp32 weights, to the same error);
        on a CPU, in channels-last for nets whose convolutions run faster so (`cpu_channels_last`:
        the UNet); else `net` itself. With `compile`, such a net through `torch.compile` (inductor
        fuses the normalisations and pointwise ops around the convolutions: see `sample`), half
        ones kept contiguous (benchmarks/throughput.py)."""
        key = (half, compile)
        if key not in self._inference_nets:
            channels_last = (self.device.type == "cpu" and getattr(self.net, "cpu_channels_last", False)
                             and not (compile and half is not None))  # inductor's fused half kernels: contiguous
            net = self.net
            if half is not None or channels_last:
                net = copy.deepcopy(net)
                if half is not None:
                    net = net.to(half)
                if channels_last:
                    net = net.to(memory_format=torch.channels_last)
            self._inference_nets[key] = torch.compile(net) if compile else net
        return self._inference_nets[key]

    def denoiser(self, labels: torch.Tensor | None = None, guidance: float = 1.0, clip_x0: bool = False,
                 precision: str = "no", compile: bool = False, guidance_interval: tuple[float, ...] = ()) -> Denoiser:
        """The net as samplers see it (see `genkit.samplers.Denoiser`), in `precision` (`PRECISIONS`)."""
        half = half_dtype(precision, self.device)
        return Denoiser(self.inference_net(half, compile), self.path, self.prediction, labels=labels,
                        guidance=guidance, null_class=self.num_classes, clip_x0=clip_x0, half=half,
                        guidance_interval=guidance_interval)

    def adaptive_grid(self, guidance: float = 1.0, clip_x0: bool = True, precision: str = "no",
                      guidance_interval: tuple[float, ...] = ()) -> AdaptiveGrid:
        """The time grids fitted to this model (`genkit.samplers.AdaptiveGrid`): a pilot solve from
        fixed noise draws (classes in turn), made once per guidance (and its interval), clipping and
        precision; each sampler and step count then gets the candidate grid it solves the pilot's
        draws best on."""
        key = (guidance, clip_x0 and self.codec is None, precision, guidance_interval)
        if key not in self._adaptive_grids:
            channels, size = input_shape(self.cfg)
            draws = pilot_draws(channels * size * size)
            labels = self.default_labels(draws)
            denoiser = self.denoiser(None if labels is None else labels.to(self.device), *key[:3],
                                     guidance_interval=guidance_interval)
            noise = SampleNoise(PILOT_SEED, range(draws), self.device).randn(channels, size, size)
            self._adaptive_grids[key] = AdaptiveGrid.calibrate(denoiser, noise)
        return self._adaptive_grids[key]

    @torch.no_grad()
    def fit_grid(self, steps: int | None = None, guidance: float | None = None, sampler: str | None = None,
                 progress: bool = True, guidance_interval=None, **options) -> FittedGrid:
        """Fit the time grid of `sampler` (default: the config's, with its options) at `steps`,
        `guidance` and `guidance_interval` (default: the config's) to this model by a pilot solve, and
        keep it in `grids`, where `sample` reads it; returns it. Pays once for what
        `schedule="adaptive"` pays at every call (`genkit.samplers.plan`); `save_grids` stores them
        with the model."""
        sc = self.cfg.sample
        if sampler is None:
            sampler, options = sc.sampler, {**sc.options, **options}
        _, _, _, steps, guidance = check_draw(1, 0, 1, sc.steps if steps is None else steps,
                                              sc.guidance if guidance is None else guidance)
        interval = self.interval_for(guidance_interval, guidance)
        self.registered_sampler(sampler)
        adaptive = self.adaptive_grid(guidance, guidance_interval=interval)
        grid = fit(SAMPLERS, sampler, steps, guidance, options, adaptive, progress, interval)
        self.grids.add(grid)
        return grid

    def save_grids(self, directory: str | Path | None = None) -> Path:
        """Store `grids` with the model (`grids.json` in `directory`, default the checkpoint or export it
        was loaded from), where `genkit.load` reads them; returns the file."""
        directory = directory or self.directory
        if directory is None:
            raise ArgumentError("directory", "this model was not loaded from a directory: name one")
        return write_grids(directory, self.grids)

    def make_scheduler(self, scheduler_class, **overrides):
        """The diffusers scheduler of `scheduler_class` that matches this model's path (DDPM's
        betas and prediction type, or a flow's shift), ready for `sample(sampler=...)`."""
        return scheduler_for(self.path, self.prediction, scheduler_class, **overrides)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, sampler=None, steps: int | None = None, guidance: float | None = None,
               labels=None, schedule=None, batch_size: int = 256, progress: bool = True, precision: str = "no",
               clip_x0: bool = True, start_index: int = 0, callback: Callback | None = None,
               compile: bool = False, guidance_interval=None, **options) -> Samples:
        """Draw `n` images; returns `Samples` (images in [0, 1], starting noise, labels, NFE).

        `sampler`: a name in `genkit.samplers.SAMPLERS`, a function with the sampler signature, or a
        diffusers scheduler instance (default: the config's `sample.sampler`, with its
        `sample.options`). `schedule`: a name in `genkit.samplers.SCHEDULES`, `adaptive` (fitted to
        this model and sampler now, by a pilot solve: `adaptive_grid`), or a function (path, steps)
        -> times (default: the sampler's own on this path; for `fitted`, `dpmpp_2m` and
        `dpmpp_2m_pc` the grid stored in `grids` by `fit_grid`, else their fixed one:
        `genkit.samplers.plan`). `labels`: an int, a sequence of class ids, or None (class i mod K
        for sample i). `guidance_interval`: the noise levels where guidance applies, bounds on
        sigma/alpha (`genkit.arguments.check_guidance_interval`; default: the config's, `()` for all).
        `precision`: no, bf16, fp16
        or auto (`hardware_precision`). `clip_x0` clamps every x0 estimate to [-1, 1];
        `callback(step, t, x, x0_hat)` sees every step of every batch; `options` go to the
        sampler. Sample i is drawn from noise stream (seed, start_index + i), whatever `batch_size`.
        `compile` samples through `torch.compile` (inductor): its first call per precision and
        batch shape compiles, after which sampling runs faster (benchmarks/throughput.py); its
        samples equal the eager ones to rounding. So
        that one shape serves every batch, a compiled last batch is filled up to `batch_size` with
        the samples that would follow (drawn, then dropped; `callback` sees them).
        A latent model samples latents (there `clip_x0` does not apply) and returns them decoded.
        """
        sc = self.cfg.sample
        steps = sc.steps if steps is None else steps
        guidance = sc.guidance if guidance is None else guidance
        if sampler is None:
            sampler, options = sc.sampler, {**sc.options, **options}
        n, seed, batch_size, steps, guidance = check_draw(n, seed, batch_size, steps, guidance)
        if guidance != 1 and self.num_classes == 0:
            raise ArgumentError("guidance", "this model is unconditional (model.num_classes = 0): nothing to guide")
        interval = self.interval_for(guidance_interval, guidance)
        if isinstance(sampler, str):
            self.registered_sampler(sampler)
        half_dtype(precision, self.device)  # checked before any work
        labels = self.labels_for(labels, n)
        clip_x0 = clip_x0 and self.codec is None  # normalised latents are not bounded by 1
        chosen = plan(SAMPLERS, sampler, options, schedule, self.path, steps, guidance, self.grids,
                      lambda: self.adaptive_grid(guidance, clip_x0, precision, interval), seed, progress, interval)
        fn, ts, options = chosen.sampler, chosen.times, chosen.options
        channels, size = input_shape(self.cfg)
        shape = (channels, size, size)
        prior_std = float((self.path.alpha(ts[:1]) ** 2 + self.path.sigma(ts[:1]) ** 2).sqrt())
        images, starts, nfe = [], [], 0
        for start in tqdm(range(0, n, batch_size), desc="sampling", disable=not progress or n <= batch_size):
            idx = torch.arange(start, min(n, start + batch_size))
            drawn = torch.arange(start, start + batch_size) if compile and n > batch_size else idx  # one shape compiled
            noise = SampleNoise(seed, (drawn + start_index).tolist(), self.device)
            denoiser = self.denoiser(None if labels is None else labels[drawn % n].to(self.device), guidance, clip_x0,
                                     precision, compile, interval)
            x = noise.randn(*shape) * prior_std  # [B, C, H, W]
            starts.append(x[:len(idx)].cpu())
            x = fn(denoiser, x, ts, noise, callback=callback, progress=progress and n <= batch_size, **options)
            x = x[:len(idx)]  # the padding of a compiled last batch, dropped
            nfe = max(nfe, denoiser.nfe)
            if self.codec is not None:
                x = self.codec.decode(x)  # [B, c, h, w] -> [B, C, H, W]
            images.append(((x.clamp(-1, 1) + 1) / 2).cpu())
        return Samples(torch.cat(images), torch.cat(starts), labels, nfe)

    def bits_per_dim(self, images: torch.Tensor, batch_size: int = 50, seed: int = 0, progress: bool = True,
                     precision: str = "no", **options) -> tuple[float, float, int]:
        """Bits/dim of uint8 images [N, C, H, W] under the model's probability-flow ODE (the
        unconditional density p(x): the null class of a conditional model), with uniform
        dequantization: (mean, standard error, network evaluations per batch). `options` go to
        `genkit.likelihood.estimate_log_likelihood` (estimator, probes, probe, method, rtol, atol, t_min)."""
        if self.codec is not None:
            raise ArgumentError("images", "a latent model's density is over latents, not pixels: no bits/dim")
        check_images(images, batch_size)
        with torch.no_grad():
            return dataset_bits_per_dim(lambda: self.denoiser(precision=precision), images.to(self.device), batch_size, seed,
                                        progress, **options)


class AutoregressiveModel(TrainedModel):
    """An autoregressive net (PixelCNN, MADE, FVSBN) with its config: samples images in [0, 1]
    pixel by pixel, scores exact log-likelihoods, and classifies by Bayes' rule."""

    family = "autoregressive"
    described = "autoregressive models"

    def __init__(self, cfg: Config, net: torch.nn.Module, device: str | torch.device = "cpu"):
        super().__init__(cfg, net, device)
        self.levels = cfg.method.autoregressive.levels
        if getattr(self.net, "channels_last", False):  # faster full passes on a CPU, same values
            self.net = self.net.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, sampler: str | None = None, steps: int | None = None,
               guidance: float | None = None, labels=None, schedule=None, batch_size: int = 256, progress: bool = True,
               precision: str = "no", clip_x0: bool = True, start_index: int = 0, callback=None,
               compile: bool = False, **options) -> Samples:
        """Draw `n` images [n, 1, H, W] in [0, 1] in raster order; `sampler` is `cached` (PixelCNN
        only) or `naive`, which draw the same images. Sample i depends only on (seed, start_index + i).
        The signature is every model's; `steps`, `guidance`, `schedule`, `callback`, `compile` and
        sampler options do not apply here (`ArgumentError`)."""
        self.refuse(steps=steps, guidance=guidance, schedule=schedule, callback=callback, compile=compile, **options)
        n, seed, batch_size, _, _ = check_draw(n, seed, batch_size)
        how = sampler or self.cfg.sample.sampler
        draw = self.registered_sampler(how)
        half = half_dtype(precision, self.device)
        labels = self.labels_for(labels, n)
        size, out = self.cfg.data.image_size, []
        for start in tqdm(range(0, n, batch_size), desc="sampling", disable=not progress or n <= batch_size):
            idx = torch.arange(start, min(n, start + batch_size))
            uniforms = SampleNoise(seed, (idx + start_index).tolist(), self.device).rand(size, size)  # [B, H, W]
            y = None if labels is None else labels[idx].to(self.device)
            with torch.autocast(self.device.type, dtype=half or torch.bfloat16, enabled=half is not None):
                pixels = draw(self.net, uniforms, y, self.levels, progress=progress and n <= batch_size)
            out.append(pixels.float().cpu() / (self.levels - 1))
        nfe = SAMPLERS[how].extra.get("passes", size * size)
        return Samples(torch.cat(out), None, labels, nfe)

    @torch.no_grad()
    def log_likelihood(self, pixels: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 256,
                       precision: str = "no") -> torch.Tensor:
        """Exact log p(x | y) in nats of integer pixels [N, 1, H, W] (y = None: the null class): [N]."""
        half, out = half_dtype(precision, self.device), []
        for start in range(0, len(pixels), batch_size):
            x = pixels[start:start + batch_size].to(self.device)
            y = None if labels is None else labels[start:start + batch_size].to(self.device)
            with torch.autocast(self.device.type, dtype=half or torch.bfloat16, enabled=half is not None):
                out.append(log_likelihood(self.net, x, y, self.levels).double().cpu())
        return torch.cat(out)

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor | None = None, prior: torch.Tensor | None = None,
                 seed: int = 0, batch_size: int = 256, precision: str = "no", progress: bool = True) -> dict:
        """Test NLL of uint8 images [N, 1, H, W] (binarized with `seed` when levels = 2), in nats
        per image and bits/dim. A conditional model scores log p(x | y) for every class y, which
        gives the marginal log p(x) = logsumexp_y log p(x | y) + log p(y) (`prior`, uniform if
        None), and classifies each image by argmax_y log p(x, y) against `labels`."""
        check_images(images, batch_size)
        pixels = discretize(images, self.levels, seed)
        dims, n = pixels[0].numel(), len(pixels)
        report = {"images": n, "levels": self.levels}
        if self.num_classes == 0:
            log_px = self.log_likelihood(pixels, None, batch_size, precision)
        else:
            prior = torch.full((self.num_classes,), 1 / self.num_classes) if prior is None else prior
            log_joint = torch.stack([
                self.log_likelihood(pixels, torch.full((n,), k), batch_size, precision) + math.log(prior[k])
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


class AutoencoderModel(TrainedModel):
    """A trained autoencoder (`method.name: vae`): encodes images to latents, decodes, reconstructs,
    samples by decoding prior draws, and scores its reconstructions."""

    family = "autoencoder"
    described = "an autoencoder"

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.net.latent_shape(self.cfg.data.image_size)

    def encode(self, images: torch.Tensor, batch_size: int = 256, precision: str = "no") -> torch.Tensor:
        """Posterior means [N, c, h, w] of images [N, C, H, W] in [0, 1]."""
        return self._batched(lambda x: self.net.encode(x * 2 - 1)[0], images, batch_size, precision)

    def decode(self, latents: torch.Tensor, batch_size: int = 256, precision: str = "no") -> torch.Tensor:
        """Images [N, C, H, W] in [0, 1] of latents [N, c, h, w]."""
        return self._batched(lambda z: ((self.net.decode(z) + 1) / 2).clamp(0, 1), latents, batch_size, precision)

    def reconstruct(self, images: torch.Tensor, batch_size: int = 256, precision: str = "no") -> torch.Tensor:
        """decode(encode(images)) for images [N, C, H, W] in [0, 1], through the posterior means."""
        return self._batched(lambda x: ((self.net.decode(self.net.encode(x * 2 - 1)[0]) + 1) / 2).clamp(0, 1),
                             images, batch_size, precision)

    def _batched(self, fn, inputs: torch.Tensor, batch_size: int, precision: str) -> torch.Tensor:
        half, out = half_dtype(precision, self.device), []
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                x = inputs[start:start + batch_size].to(self.device).float()
                with torch.autocast(self.device.type, dtype=half or torch.bfloat16, enabled=half is not None):
                    out.append(fn(x).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, sampler: str | None = None, steps: int | None = None,
               guidance: float | None = None, labels=None, schedule=None, batch_size: int = 256, progress: bool = True,
               precision: str = "no", clip_x0: bool = True, start_index: int = 0, callback=None,
               compile: bool = False, **options) -> Samples:
        """Decode n draws z ~ N(0, I) (sampler `prior`); sample i depends only on (seed, start_index + i).
        With a small KL weight the posteriors need not cover the prior: latents are for a latent model.
        The signature is every model's; `steps`, `guidance`, `labels`, `schedule`, `callback`, `compile`
        and sampler options do not apply here (`ArgumentError`)."""
        self.refuse(steps=steps, guidance=guidance, schedule=schedule, callback=callback, compile=compile, **options)
        n, seed, batch_size, _, _ = check_draw(n, seed, batch_size)
        draw = self.registered_sampler(sampler or self.cfg.sample.sampler)
        self.labels_for(labels, n)  # an autoencoder is unconditional: refuses labels
        half, out = half_dtype(precision, self.device), []
        for start in tqdm(range(0, n, batch_size), desc="sampling", disable=not progress or n <= batch_size):
            idx = torch.arange(start, min(n, start + batch_size))
            z = SampleNoise(seed, (idx + start_index).tolist(), self.device).randn(*self.latent_shape)
            with torch.autocast(self.device.type, dtype=half or torch.bfloat16, enabled=half is not None):
                out.append(((draw(self.net, z).float().clamp(-1, 1) + 1) / 2).cpu())
        return Samples(torch.cat(out), None, None, 1)

    def preview(self, data, n: int = 64) -> torch.Tensor:
        """n / 2 training images, each followed by its reconstruction: [n, C, H, W] in [0, 1]."""
        images = data.head(n // 2).float() / 255
        return torch.stack([images, self.reconstruct(images)], 1).flatten(0, 1)

    def evaluate(self, images: torch.Tensor, batch_size: int = 256, precision: str = "no", evaluator=None) -> dict:
        """Reconstruction of uint8 images [N, C, H, W]: mean PSNR (dB) and SSIM per image, the mean
        squared error in [0, 1] units, and with a `genkit.evaluation.Evaluator` the reconstruction
        FID (rFID: reconstructions against the test split, in its feature space)."""
        check_images(images, batch_size)
        originals = images.float() / 255
        recon = self.reconstruct(originals, batch_size, precision)
        report = {"images": len(images), "psnr": float(psnr(recon, originals).mean()),
                  "ssim": float(ssim(recon, originals).mean()),
                  "mse": float((recon - originals).square().mean())}
        if evaluator is not None:
            report["rfid"] = evaluator.score(recon)["fid"]
        return report


def build_model(cfg: Config, net: torch.nn.Module, device: str | torch.device = "cpu", codec=None) -> TrainedModel:
    """The inference wrapper for `cfg`'s family: Gaussian-path (in pixels, or in the latents of
    `codec`), autoregressive, or autoencoder."""
    family = METHODS[cfg.method.name].family
    if family == GenerativeModel.family:
        return GenerativeModel(cfg, net, device, codec)
    return {AutoregressiveModel.family: AutoregressiveModel, AutoencoderModel.family: AutoencoderModel}[family](
        cfg, net, device)
