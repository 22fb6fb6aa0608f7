"""Samplers: functions `sampler(denoiser, x, ts, noise=None, progress=False) -> x0`.

`x` is the starting noise at time ts[0], `ts` a descending time grid ending at 0 (see
`genkit.samplers.schedules`), `noise` the per-sample source for stochastic samplers.
"""
from __future__ import annotations

from genkit.paths import FlowPath
from genkit.samplers.base import BatchNoise, Denoiser, SampleNoise
from genkit.samplers.ddim import ddim, ddpm
from genkit.samplers.diffusers import DiffusersSampler
from genkit.samplers.ode import dpmpp_2m, dpmpp_2m_pc, euler, heun, ode
from genkit.samplers.schedules import SCHEDULES
from genkit.samplers.sde import em, pc

SAMPLERS = {
    "ddpm": ddpm,
    "ddim": ddim,
    "euler": euler,
    "heun": heun,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_2m_pc": dpmpp_2m_pc,
    "ode": ode,
    "em": em,
    "pc": pc,
}

# The time grid each sampler gets unless the caller names one (see `default_schedule`).
DEFAULT_SCHEDULE = {"ddpm": "uniform", "ddim": "flow", "euler": "flow", "heun": "flow",
                    "dpmpp_2m": "auto", "dpmpp_2m_pc": "auto", "ode": "log_snr", "em": "uniform", "pc": "uniform"}


def default_sampler(path) -> str:
    """The sampler `model.sample()` uses unless the config or the caller names one: DPM-Solver++(2M)
    with its free corrector on the `auto` grid, on every Gaussian path (`benchmarks/samplers.py`:
    genkit's most accurate row at 5 evaluations on DDPM linear, DDPM cosine and flow paths)."""
    return "dpmpp_2m_pc"


def default_schedule(sampler, path) -> str:
    """The time grid `sampler` gets on `path` unless the caller names one (`DEFAULT_SCHEDULE`).
    On a flow, Euler, Heun and DDIM step evenly in (shifted) t, which carries the path's SD3
    shift; on a flow with shift 1 that is the `flow` grid they get elsewhere."""
    if isinstance(path, FlowPath) and sampler in ("euler", "heun", "ddim"):
        return "uniform"
    return DEFAULT_SCHEDULE.get(sampler if isinstance(sampler, str) else "", "uniform")


__all__ = ["DEFAULT_SCHEDULE", "SAMPLERS", "SCHEDULES", "BatchNoise", "Denoiser", "DiffusersSampler", "SampleNoise",
           "ddim", "ddpm", "default_sampler", "default_schedule", "dpmpp_2m", "dpmpp_2m_pc", "em", "euler", "heun", "ode", "pc"]
