"""Run any diffusers scheduler on a genkit denoiser, as a genkit sampler."""
from __future__ import annotations

import inspect

import torch
from tqdm.auto import tqdm

from genkit.registry import ArgumentError
from genkit.samplers.base import Callback, DenoiserLike


class DiffusersSampler:
    """Adapter: `DiffusersSampler(DPMSolverMultistepScheduler(...))` has the sampler signature.

    Handles `set_timesteps`, `init_noise_sigma`, `scale_model_input` and `step`; the scheduler's
    timestep k (possibly fractional, for sigma-based schedulers) maps to the net's time
    t = (k + 1) / T, and the net's output is converted to the scheduler's `prediction_type`.
    Only for models trained on DDPM's discrete path with the same betas as the scheduler.
    Stochastic schedulers draw from one generator seeded by `seed`, so their samples depend on
    the batch (diffusers' schedulers take no per-sample noise).
    """

    KINDS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}

    def __init__(self, scheduler, seed: int = 0):
        self.scheduler, self.seed = scheduler, seed
        self.kind = self.KINDS.get(scheduler.config.get("prediction_type", "epsilon"))
        if self.kind is None:
            raise ArgumentError("scheduler", f"prediction_type {scheduler.config.prediction_type!r} is not supported")

    def check(self, path) -> None:
        theirs = self.scheduler.alphas_cumprod.double()
        if not hasattr(path, "alphas_cumprod") or len(theirs) != len(path.alphas_cumprod) or \
                not torch.allclose(theirs, path.alphas_cumprod, rtol=1e-4, atol=1e-6):
            raise ArgumentError("scheduler", "its beta schedule differs from the one the model was trained with")

    def __call__(self, denoiser: DenoiserLike, x: torch.Tensor, ts: torch.Tensor, noise=None,
                 callback: Callback | None = None, progress: bool = False):
        path, sched = denoiser.path, self.scheduler
        self.check(path)
        steps = len(ts) - 1
        sched.set_timesteps(steps)
        step_kwargs = {}
        if "generator" in inspect.signature(sched.step).parameters:
            step_kwargs["generator"] = torch.Generator().manual_seed(self.seed)
        x = x * float(sched.init_noise_sigma)
        for i, k in enumerate(tqdm(sched.timesteps, desc="sampling", disable=not progress, leave=False)):
            t = (float(k) + 1) / path.num_timesteps
            x0, eps = denoiser(sched.scale_model_input(x, k), t)
            if callback:
                callback(i, t, x, x0)
            out = path.from_x0_eps(x0, eps, torch.tensor([t], dtype=torch.float64), self.kind)
            x = sched.step(out.to(x.dtype), k, x, **step_kwargs).prev_sample
        return x
