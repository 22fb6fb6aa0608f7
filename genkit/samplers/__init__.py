"""Samplers: `sampler(denoiser, x, ts, noise=None, callback=None, progress=False, **options) -> x0`
(see `genkit.samplers.base` for the protocols).

`x` is the starting noise at time ts[0], `ts` a descending time grid ending at 0 (see
`genkit.samplers.schedules`), `noise` the per-sample source for stochastic samplers, `callback`
sees every step. `SAMPLERS` registers each with its default time grid; the autoregressive
family's `cached` and `naive` draw pixels in raster order instead, and an autoencoder's `prior`
decodes draws from its prior.
"""
from __future__ import annotations

import inspect
from functools import partial

from genkit.registry import ArgumentError, ConfigError, Registry
from genkit.samplers import autoregressive
from genkit.samplers.adaptive import AdaptiveGrid
from genkit.samplers.autoencoder import prior
from genkit.samplers.base import BatchNoise, Callback, Denoiser, DenoiserLike, NoiseSource, SampleNoise
from genkit.samplers.ddim import ddim, ddpm
from genkit.samplers.diffusers import DiffusersSampler
from genkit.samplers.consistency import consistency
from genkit.samplers.meanflow import meanflow
from genkit.samplers.ode import dpmpp_2m, dpmpp_2m_pc, euler, heun, ode
from genkit.samplers.schedules import SCHEDULES
from genkit.samplers.sde import em, pc
from genkit.samplers.unipc import unipc

ADAPTIVE = "adaptive"  # a grid fitted to the model and sampler by a pilot solve (`AdaptiveGrid`), not a function of the path alone
SCHEDULE_NAMES = (*SCHEDULES, ADAPTIVE)


def _needs_cache(cfg) -> None:
    from genkit.nets import NETS

    if not NETS[cfg.model.name].extra.get("cache"):
        raise ConfigError(f"sample.sampler: cached sampling needs a net with a cache (pixelcnn); "
                          f"{cfg.model.name} samples naive")


def _needs_interval(cfg) -> None:
    if not cfg.model.interval or cfg.method.resolved_prediction != "velocity":
        raise ConfigError("sample.sampler: meanflow steps with an average velocity: it needs a net that takes a "
                          "second time (model.interval=true) predicting velocity, as method.name=meanflow trains")


SAMPLERS = Registry("sampler")
SAMPLERS.register("ddpm", ddpm, schedule="uniform")
SAMPLERS.register("ddim", ddim, schedule="flow")
SAMPLERS.register("euler", euler, schedule="flow")
SAMPLERS.register("heun", heun, schedule="flow")
SAMPLERS.register("dpmpp_2m", dpmpp_2m, schedule=ADAPTIVE)
SAMPLERS.register("dpmpp_2m_pc", dpmpp_2m_pc, schedule=ADAPTIVE)
SAMPLERS.register("unipc", unipc, schedule="flow")
SAMPLERS.register("ode", ode, schedule="log_snr")
SAMPLERS.register("em", em, schedule="uniform")
SAMPLERS.register("pc", pc, schedule="uniform")
SAMPLERS.register("meanflow", meanflow, check=_needs_interval, schedule="uniform")
SAMPLERS.register("consistency", consistency, schedule="uniform")
SAMPLERS.register("cached", partial(autoregressive.sample, how="cached"), check=_needs_cache, family="autoregressive")
SAMPLERS.register("naive", partial(autoregressive.sample, how="naive"), family="autoregressive")
SAMPLERS.register("prior", prior, family="autoencoder")

SIGNATURE = ("denoiser", "x", "ts", "noise", "callback", "progress")  # what every sampler takes; the rest are options

FITTED = "fitted"  # the contender a pilot solve finds most accurate for the model and step count (`AdaptiveGrid.best`)
FITTED_CONTENDERS = (("dpmpp_2m_pc", {}), ("unipc", {"order": 3}))  # second order wins at few steps, third at many
SAMPLER_NAMES = (FITTED, *SAMPLERS)


def default_sampler(path) -> str:
    """The sampler `model.sample()` uses unless the config or the caller names one: `fitted`, on every
    Gaussian path: DPM-Solver++(2M) with its free corrector or UniPC-3, each on its fitted grid,
    whichever solves the model's pilot more accurately (`benchmarks/samplers.py` measures it
    against genkit's other rows)."""
    return FITTED


def default_schedule(sampler, path) -> str:
    """The time grid `sampler` (a name, or a function: `uniform`) gets on `path` unless the caller
    names one: the sampler's registered grid, unless the path has its own for it. A name in
    `SCHEDULES`, or `ADAPTIVE`: fitted to the model and sampler (`AdaptiveGrid.fitted`)."""
    if sampler == FITTED:
        return ADAPTIVE
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        return "uniform"
    return path.default_schedule(sampler, SAMPLERS[sampler].extra.get("schedule", "uniform"))


def check_options(sampler, options: dict, name: str = "this sampler") -> None:
    """Raise `ArgumentError` (named by the option) unless `sampler` (a function) takes every one
    of `options` as a keyword of a fitting type."""
    try:
        params = inspect.signature(sampler).parameters
    except (TypeError, ValueError):  # a builtin or a C callable: nothing to check against
        return
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    known = {k: p for k, p in params.items() if k not in SIGNATURE and p.kind != p.VAR_POSITIONAL}
    for key, value in options.items():
        if key not in known:
            takes = ", ".join(known) or "none"
            raise ArgumentError(key, f"not an option of {name} (its options: {takes})")
        default = known[key].default
        if default is inspect.Parameter.empty or default is None:
            continue
        kind = type(default)
        fits = isinstance(value, kind) and not (kind is int and isinstance(value, bool)) or \
            (kind is float and isinstance(value, int) and not isinstance(value, bool))
        if not fits:
            raise ArgumentError(key, f"expected a {kind.__name__}, got {value!r}")


__all__ = ["ADAPTIVE", "FITTED", "FITTED_CONTENDERS", "SAMPLERS", "SAMPLER_NAMES", "SCHEDULES", "SCHEDULE_NAMES",
           "AdaptiveGrid", "BatchNoise", "Callback", "Denoiser", "DenoiserLike", "DiffusersSampler",
           "NoiseSource", "SampleNoise", "check_options", "ddim", "ddpm", "default_sampler", "default_schedule",
           "dpmpp_2m", "dpmpp_2m_pc", "em", "euler", "heun", "ode", "pc", "unipc"]
