"""Samplers: `sampler(denoiser, x, ts, noise=None, callback=None, progress=False, **options) -> x0`
(see `genkit.samplers.base` for the protocols).

`x` is the starting noise at time ts[0], `ts` a descending time grid ending at 0 (see
`genkit.samplers.schedules`), `noise` the per-sample source for stochastic samplers, `callback`
sees every step. `SAMPLERS` registers each with its default time grid; the autoregressive
family's `cached` and `naive` draw pixels in raster order instead, and an autoencoder's `prior`
decodes draws from its prior.
"""
from __future__ import annotations

from functools import partial

from genkit.nets import NETS
from genkit.registry import ConfigError, Registry
from genkit.samplers import autoregressive
from genkit.samplers.adaptive import AdaptiveGrid
from genkit.samplers.autoencoder import prior
from genkit.samplers.base import BatchNoise, Callback, Denoiser, DenoiserLike, NoiseSource, SampleNoise
from genkit.samplers.ddim import ddim, ddpm
from genkit.samplers.diffusers import DiffusersSampler
from genkit.samplers.consistency import consistency
from genkit.samplers.meanflow import meanflow
from genkit.samplers.ode import dpmpp_2m, dpmpp_2m_pc, euler, heun, ode
from genkit.samplers.plan import (ADAPTIVE, GRIDS_FILE, SCHEDULE_NAMES, FittedGrid, GridBook, Plan, UnfittedGrid,
                                  check_options, fit, make_grid, plan)
from genkit.samplers.schedules import SCHEDULES
from genkit.samplers.sde import em, pc
from genkit.samplers.unipc import unipc


def _needs_cache(cfg) -> None:
    if not NETS[cfg.model.name].extra.get("cache"):
        raise ConfigError(f"sample.sampler: cached sampling needs a net with a cache (pixelcnn); "
                          f"{cfg.model.name} samples naive")


def _needs_interval(cfg) -> None:
    if not cfg.model.interval or cfg.method.resolved_prediction != "velocity":
        raise ConfigError("sample.sampler: meanflow steps with an average velocity: it needs a net that takes a "
                          "second time (model.interval=true) predicting velocity, as method.name=meanflow trains")


def fitted(denoiser: DenoiserLike, x, ts, noise: NoiseSource | None = None, callback: Callback | None = None,
           progress: bool = False):
    """The default sampler: of DPM-Solver++(2M) with its corrector and UniPC-3 (`contenders`), the one
    whose fitted grid solves the model's pilot more accurately (`genkit.samplers.plan.fit`), as stored
    with the model. Called on a grid of the caller's, it is UniPC-3 (the better of the two on the
    fixed flow grid in benchmarks/samplers.py)."""
    return unipc(denoiser, x, ts, noise, callback, progress, order=3)


def _takes_no_options(cfg) -> None:
    if cfg.sample.options:
        raise ConfigError("sample.options: fitted chooses its sampler's options; name a sampler to set them")


SAMPLERS = Registry("sampler")
SAMPLERS.register("fitted", fitted, check=_takes_no_options, schedule=ADAPTIVE, fixed="flow",
                  contenders=(("dpmpp_2m_pc", {}), ("unipc", {"order": 3})))  # second order wins at few steps, third at many
SAMPLERS.register("ddpm", ddpm, schedule="uniform")
SAMPLERS.register("ddim", ddim, schedule="flow")
SAMPLERS.register("euler", euler, schedule="flow")
SAMPLERS.register("heun", heun, schedule="flow")
SAMPLERS.register("dpmpp_2m", dpmpp_2m, schedule=ADAPTIVE, fixed="flow")
SAMPLERS.register("dpmpp_2m_pc", dpmpp_2m_pc, schedule=ADAPTIVE, fixed="flow")
SAMPLERS.register("unipc", unipc, schedule="flow")
SAMPLERS.register("ode", ode, schedule="log_snr")
SAMPLERS.register("em", em, schedule="uniform")
SAMPLERS.register("pc", pc, schedule="uniform")
SAMPLERS.register("meanflow", meanflow, check=_needs_interval, schedule="uniform")
SAMPLERS.register("consistency", consistency, schedule="uniform")
SAMPLERS.register("cached", partial(autoregressive.sample, how="cached"), check=_needs_cache, family="autoregressive",
                  passes=1)  # network passes per image (spread over the pixels); naive makes one per pixel
SAMPLERS.register("naive", partial(autoregressive.sample, how="naive"), family="autoregressive")
SAMPLERS.register("prior", prior, family="autoencoder")

DEFAULT_SAMPLER = "fitted"  # what `model.sample()` uses unless the config or the caller names a sampler


def takes_fitted_grid(name: str) -> bool:
    """Whether sampler `name` samples by default on a grid fitted to the model (`genkit.samplers.plan`)."""
    return name in SAMPLERS and SAMPLERS[name].extra.get("schedule") == ADAPTIVE


__all__ = ["ADAPTIVE", "DEFAULT_SAMPLER", "GRIDS_FILE", "SAMPLERS", "SCHEDULES", "SCHEDULE_NAMES", "AdaptiveGrid",
           "BatchNoise", "Callback", "Denoiser", "DenoiserLike", "DiffusersSampler", "FittedGrid", "GridBook",
           "NoiseSource", "Plan", "SampleNoise", "UnfittedGrid", "check_options", "ddim", "ddpm", "dpmpp_2m",
           "dpmpp_2m_pc", "em", "euler", "fit", "fitted", "heun", "make_grid", "ode", "pc", "plan", "takes_fitted_grid",
           "unipc"]
