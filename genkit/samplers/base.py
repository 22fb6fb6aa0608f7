"""What every sampler shares: the net seen as (x_t, t) -> (x0, eps), per-sample noise, and the
protocols of the sampler signature

    sampler(denoiser, x, ts, noise=None, callback=None, progress=False, **options) -> x0

(`x` the starting noise at ts[0], `ts` a descending grid ending at 0; k-diffusion's shared
signature, with the path carried by the denoiser).
"""
from __future__ import annotations

import math
from typing import Callable, Protocol

import torch
from tqdm.auto import tqdm

from genkit.paths import GaussianPath, _bcast
from genkit.registry import ArgumentError


class DenoiserLike(Protocol):
    """What samplers call: `denoiser(x_t, t) -> (x0_hat, eps_hat)` on `denoiser.path`, with `t` a
    float or [B] float64 times; `nfe` counts network evaluations."""

    path: GaussianPath
    nfe: int

    def __call__(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]: ...


class NoiseSource(Protocol):
    """Where stochastic samplers draw fresh noise: one row per sample."""

    def randn_like(self, x: torch.Tensor) -> torch.Tensor: ...


FIRST_STEP_RULES = {"end": 1.0, "mean": 0.5}
"""How a corrector redoes a step from pure noise (alpha = 0, lambda = -inf: flows, zero terminal SNR)
to lambda_1, where the estimate x0_hat is known at the two ends: the weight of the end point's,
the rest going to the start's. The exact step averages x0_hat(lambda) with the weight
e^(lambda - lambda_1) over lambda < lambda_1. `end`: x0_hat linear in lambda, whose limit puts all
weight on the end point. `mean`: x0_hat linear in alpha / sigma = e^lambda, the posterior mean's
leading order at low SNR (Gaussian data with a finite covariance), which gives the two ends equal
weight. Which is nearer depends on how far the step goes; `AdaptiveGrid.fitted` chooses per model."""


def first_step_weight(rule: str) -> float:
    """The end point's weight under `rule` (see `FIRST_STEP_RULES`)."""
    if rule not in FIRST_STEP_RULES:
        raise ArgumentError("first_step", f"must be one of {', '.join(FIRST_STEP_RULES)}, got {rule!r}")
    return FIRST_STEP_RULES[rule]


Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None]
"""`callback(step, t, x, x0_hat)`: called once per step with the state x at time t and the
denoised estimate the step is built on."""


def randn_like(noise: NoiseSource | None, x: torch.Tensor) -> torch.Tensor:
    """Fresh noise like x: from the per-sample source when there is one, else torch's global RNG."""
    return noise.randn_like(x) if noise is not None else torch.randn_like(x)


def time_pairs(ts: torch.Tensor, progress: bool = False):
    """The steps (t, s) of a descending grid as floats, with an optional progress bar."""
    pairs = list(zip(ts[:-1].tolist(), ts[1:].tolist()))
    return tqdm(pairs, desc="sampling", disable=not progress, leave=False)


class Denoiser:
    """A trained net as samplers see it: `denoiser(x_t, t) -> (x0_hat, eps_hat)`.

    Applies classifier-free guidance (Ho & Salimans 2022) in the net's own prediction space:
    out = uncond + w * (cond - uncond), so w = 1 is the plain conditional net and w = 0 the
    unconditional one; with `guidance_interval` (`genkit.arguments.check_guidance_interval`) only
    where the noise-to-signal ratio sigma/alpha lies in it, the plain conditional net elsewhere
    (Kynkäänniemi et al. 2024). Counts network evaluations in `nfe` (a guided call counts once).
    """

    def __init__(self, net, path: GaussianPath, prediction: str, labels: torch.Tensor | None = None,
                 guidance: float = 1.0, null_class: int | None = None, clip_x0: bool = False,
                 half: torch.dtype | None = None, guidance_interval: tuple[float, ...] = ()):
        self.net, self.path, self.prediction = net, path, prediction
        self.labels, self.guidance, self.null_class = labels, guidance, null_class
        self.guidance_interval = guidance_interval  # () everywhere, (lo,) from lo up, (lo, hi)
        self.clip_x0, self.half = clip_x0, half  # half: the autocast dtype (bf16, fp16), or None
        self.nfe = 0

    def rows(self, index) -> "Denoiser":
        """The same denoiser for a subset of the batch (its labels follow), counting its own NFE."""
        labels = None if self.labels is None else self.labels[index]
        return Denoiser(self.net, self.path, self.prediction, labels, self.guidance, self.null_class,
                        self.clip_x0, self.half, self.guidance_interval)

    def guided_at(self, t: torch.Tensor) -> torch.Tensor | None:
        """[B] bool: whether guidance applies at times `t` [B] (inside `guidance_interval`); None
        where there is no interval (guidance at every time)."""
        if not self.guidance_interval:
            return None
        ratio = self.path.sigma(t) / self.path.alpha(t)  # alpha = 0 (a flow's t = 1): inf, above every hi
        lo, hi = (*self.guidance_interval, math.inf)[:2]
        return (ratio >= lo) & (ratio <= hi)

    def raw(self, x: torch.Tensor, t, r=None) -> torch.Tensor:
        """The (guided) net output at time t (a float or [B] tensor), in x's dtype (float32 at
        least); `r`, a second time for nets that take one (MeanFlow's u(x, r, t))."""
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device).expand(x.shape[0])
        second = {} if r is None else {"r": torch.as_tensor(r, dtype=torch.float64, device=x.device)
                                       .expand(x.shape[0]).float()}
        self.nfe += 1
        labels, w = self.labels, self.guidance
        guided = self.guided_at(t) if labels is not None and w != 1 else None  # [B], or None: every row
        unguided = labels is None or w == 1 or (guided is not None and not guided.any())
        dtype = torch.promote_types(x.dtype, torch.float32)
        x = self.path.net_input(x, t)
        with torch.autocast(x.device.type, dtype=self.half or torch.bfloat16, enabled=self.half is not None):
            if unguided:
                return self.net(x, t.float(), labels, **second).to(dtype)
            null = torch.full_like(labels, self.null_class)
            if w == 0 and (guided is None or guided.all()):
                return self.net(x, t.float(), null, **second).to(dtype)
            second = {k: v.repeat(2) for k, v in second.items()}
            out = self.net(torch.cat([x, x]), t.float().repeat(2), torch.cat([labels, null]), **second).to(dtype)
        cond, uncond = out.chunk(2)
        mixed = uncond + w * (cond - uncond)
        if guided is None:
            return mixed
        return torch.where(guided.reshape(-1, *[1] * (cond.dim() - 1)), mixed, cond)  # [B] -> [B, 1, ...]

    def __call__(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        t = t.reshape(1) if t.dim() == 0 else t  # one time for the batch: the path is evaluated once
        x0, eps = self.path.to_x0_eps(self.raw(x, t), x, t, self.prediction)
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = (x - _bcast(self.path.alpha(t), x) * x0) / _bcast(self.path.sigma(t), x)
        return x0, eps


def _mix(seed: int, index: int) -> int:
    """A 63-bit seed for sample `index` of a run seeded with `seed` (splitmix-style)."""
    z = (seed * 0x9E3779B97F4A7C15 + index + 1) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return (z ^ (z >> 31)) >> 1


class SampleNoise:
    """Independent random streams per sample: sample i's noise depends on (seed, i) only, so a
    sample is the same whatever the batch it is drawn in."""

    def __init__(self, seed: int, indices, device: torch.device | str = "cpu"):
        self.generators = [torch.Generator().manual_seed(_mix(seed, int(i))) for i in indices]
        self.device = device

    def randn(self, *shape: int) -> torch.Tensor:
        """Standard normal noise [B, *shape], one row per sample stream."""
        rows = [torch.randn(shape, generator=g) for g in self.generators]
        return torch.stack(rows).to(self.device)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.randn(*x.shape[1:]).to(x.dtype)

    def rand(self, *shape: int) -> torch.Tensor:
        """Uniform [0, 1) float64 noise [B, *shape], one row per sample stream."""
        rows = [torch.rand(shape, generator=g, dtype=torch.float64) for g in self.generators]
        return torch.stack(rows).to(self.device)


class BatchNoise:
    """One random stream for the whole batch: fast for large synthetic batches, but a sample
    then depends on its batch (use `SampleNoise` for images)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)
