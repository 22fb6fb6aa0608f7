"""Run any diffusers scheduler on a genkit denoiser, as a genkit sampler."""
from __future__ import annotations

import inspect

import torch
from tqdm.auto import tqdm

from genkit.paths import FlowPath
from genkit.registry import ArgumentError
from genkit.samplers.base import Callback, DenoiserLike


PREDICTION_TYPES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}  # genkit's name -> diffusers'


def is_flow_scheduler(scheduler_class) -> bool:
    """Whether a diffusers scheduler class steps a flow (sigma = t) rather than DDPM's betas."""
    params = inspect.signature(scheduler_class.__init__).parameters
    return "shift" in params and "beta_start" not in params


def scheduler_for(path, prediction: str, scheduler_class, **overrides):
    """The diffusers scheduler of `scheduler_class` that samples a model on `path`: DDPM's betas
    (as `trained_betas`) and the model's prediction type on a discrete path; SD3's shift on a flow
    path, for the flow-matching schedulers. `overrides` go to the scheduler (timestep_spacing, ...)."""
    name, params = scheduler_class.__name__, inspect.signature(scheduler_class.__init__).parameters
    if isinstance(path, FlowPath):
        if not is_flow_scheduler(scheduler_class):
            raise ArgumentError("scheduler", f"{name} steps DDPM's betas; a rectified flow needs a flow-matching "
                                             f"scheduler (FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler)")
        return scheduler_class(**{"num_train_timesteps": 1000, "shift": path.shift, **overrides})
    if not hasattr(path, "betas"):
        raise ArgumentError("scheduler", f"no diffusers scheduler matches a continuous-time {type(path).__name__}; "
                                         f"use genkit's samplers")
    if is_flow_scheduler(scheduler_class) or "trained_betas" not in params:
        raise ArgumentError("scheduler", f"{name} cannot take DDPM's betas (trained_betas)")
    kind = PREDICTION_TYPES[prediction] if prediction in PREDICTION_TYPES else "epsilon"
    return scheduler_class(**{"num_train_timesteps": len(path.betas), "trained_betas": path.betas.tolist(),
                              "prediction_type": kind, **overrides})


class DiffusersSampler:
    """Adapter: `DiffusersSampler(DPMSolverMultistepScheduler(...))` has the sampler signature.

    Handles `set_timesteps`, `init_noise_sigma`, `scale_model_input` and `step`. DDPM-type
    schedulers (those with `alphas_cumprod`): the scheduler's timestep k (possibly fractional, for
    sigma-based schedulers) maps to the net's time t = (k + 1) / T, the net's output is converted
    to the scheduler's `prediction_type`, and the model must have been trained on DDPM's discrete
    path with the same betas. Flow-matching schedulers (`FlowMatchEulerDiscreteScheduler`, ...):
    k maps to t = k / T (their sigma, the flow's time), the output is the velocity, and the model
    must be a rectified flow. Stochastic schedulers draw from one generator seeded by `seed`, so
    their samples depend on the batch (diffusers' schedulers take no per-sample noise).
    """

    KINDS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}

    def __init__(self, scheduler, seed: int = 0):
        self.scheduler, self.seed = scheduler, seed
        self.flow = not hasattr(scheduler, "alphas_cumprod")  # a flow-matching scheduler
        self.kind = "velocity" if self.flow else self.KINDS.get(scheduler.config.get("prediction_type", "epsilon"))
        if self.kind is None:
            raise ArgumentError("scheduler", f"prediction_type {scheduler.config.prediction_type!r} is not supported")

    def check(self, path) -> None:
        if self.flow:
            if not isinstance(path, FlowPath):
                raise ArgumentError("scheduler", f"{type(self.scheduler).__name__} is a flow-matching scheduler; "
                                                 f"this model is not a rectified flow")
            return
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
        x = x * float(getattr(sched, "init_noise_sigma", 1.0))
        T = sched.config.num_train_timesteps
        for i, k in enumerate(tqdm(sched.timesteps, desc="sampling", disable=not progress, leave=False)):
            t = float(k) / T if self.flow else (float(k) + 1) / T
            x0, eps = denoiser(sched.scale_model_input(x, k) if hasattr(sched, "scale_model_input") else x, t)
            if callback:
                callback(i, t, x, x0)
            out = path.from_x0_eps(x0, eps, torch.tensor([t], dtype=torch.float64), self.kind)
            x = sched.step(out.to(x.dtype), k, x, **step_kwargs).prev_sample
        return x
