"""Time grids fitted to a model: for a given sampler and step count, the grid that solves the model's
own probability-flow ODE most accurately.

A pilot solve (DPM-Solver++(2M) with its corrector on a fine log-SNR grid, from a few fixed noise
draws) gives a reference end point for each draw, and records the denoised estimate x0_hat along
the way. Which grid a sampler needs depends on the data: fine detail wants evaluations at low
noise, coarse data wants them spread over the high-noise half. So `AdaptiveGrid.fitted` solves
the pilot's draws with the sampler on each candidate grid and keeps the one whose end points lie
nearest the reference as a distribution: by sliced 2-Wasserstein distance, not per-sample RMS,
which on data with separated modes is ruled by the few draws that end in another mode
(`benchmarks/selection_rule.py` compares the two rules on held-out problems) (Align Your Steps, Sabour et al. 2024, and GITS, Chen et al. 2024, also fit
a grid to the model, by an optimisation; here a choice among a few). The candidates:

- `equidistributed`: a second-order step in lambda = log(alpha / sigma) makes a local error that
  grows as h^3 times how fast x0_hat moves; steps of equal error then have h proportional to
  |dx0_hat / dlambda|^(-1/3), so a K-step grid puts its points at equal shares of the integral of
  |dx0_hat / dlambda|^(1/3) (the RMS over the draws), the last share ending in the denoising jump
  to t = 0. Where the data have fine detail it reaches low noise; where they have none it spends
  nothing there.
- `flow(rho=r)`: the flow clock, packed toward the clean end by r (`genkit.samplers.schedules.flow`).
- `flow(shift=s)`: the flow clock under SD3's time shift s < 1 (Esser et al. 2024), which packs
  the steps toward the clean end more strongly the nearer they are to it.
- `log_snr`: evenly spaced in log-SNR from t = 1 (Lu et al. 2022), which puts more of its steps
  at low noise than the flow clock does.

On a path that starts at pure noise (flows, zero terminal SNR), a sampler with a corrector also has
its rule for the first step chosen (`first_step`, `genkit.samplers.base.FIRST_STEP_RULES`): which
one is nearer depends on the model and on how far that step goes.
"""
from __future__ import annotations

import inspect
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from genkit.oracles import SlicedW2
from genkit.paths import GaussianPath
from genkit.samplers.base import FIRST_STEP_RULES, DenoiserLike, SampleNoise
from genkit.samplers.ode import dpmpp_2m_pc
from genkit.samplers.schedules import _finish, flow, log_snr

PILOT_DRAWS, PILOT_SEED = (32, 1024), 0  # how many noise draws a model's pilot starts from (see `pilot_draws`)
PILOT_COORDINATES = 16384
PILOT_STEPS = 96  # the reference: its error is about 1/20 of a 20-step solve's; the grid's density barely moves past 32
EXPONENT = 1 / 3  # step length ~ |dx0/dlambda|^(-1/3): the equal-error rule of a second-order method
SIGMA_MAX = 80.0  # the equidistributed grid starts at most at noise level sigma / alpha = 80 (EDM's)
RHOS = (1.0, 1.25, 1.5, 2.0)  # the packings of the flow clock among the candidates
SHIFTS = (0.7, 0.5, 0.35)  # the time shifts of the flow clock among the candidates


def pilot_draws(numel: int) -> int:
    """How many draws a pilot of samples with `numel` coordinates starts from: enough for
    `PILOT_COORDINATES` coordinates, within `PILOT_DRAWS`. Low-dimensional data have few
    coordinates per draw, so a few draws that change mode weigh on any distance measured over a
    small pilot, and a choice made on 32 of them is noisy. Such data are cheap to evaluate."""
    low, high = PILOT_DRAWS
    return max(low, min(high, PILOT_COORDINATES // max(numel, 1)))


class AdaptiveGrid:
    """Time grids fitted to one model (see the module). `grid(path, steps)` is the equidistributed
    grid; `fitted(sampler, steps, **options)` the candidate on which `sampler` is most accurate,
    with the sampler's options for it.

    `lam` [M] is the pilot's log-SNR (ascending) and `share` [M] the cumulative share, 0 to 1, of the
    integral of |dx0_hat / dlambda|^(1/3) reached at each pilot point; `t_start` the pilot's first
    time; `draws` [N, ...] the pilot's unit-variance noise and `reference` [N, ...] its end points.
    """

    def __init__(self, denoiser: DenoiserLike, draws: torch.Tensor, reference: torch.Tensor, lam: torch.Tensor,
                 share: torch.Tensor, t_start: float, pilot_nfe: int):
        self.denoiser, self.draws, self.reference = denoiser, draws, reference
        self.lam, self.share, self.t_start, self.pilot_nfe = lam, share, t_start, pilot_nfe
        self.choices: dict[tuple, tuple[str, torch.Tensor, dict, dict[str, float]]] = {}
        self.distance = SlicedW2(reference.cpu())  # a trial's end points -> their distance to the reference

    @classmethod
    def calibrate(cls, denoiser: DenoiserLike, x: torch.Tensor, steps: int = PILOT_STEPS) -> "AdaptiveGrid":
        """Fit to `denoiser` from a pilot solve of `steps` steps starting at noise draws x [N, ...]
        (unit variance: scaled here to the pilot's first time)."""
        path = denoiser.path
        ts = log_snr(path, steps)  # from t = 1, where every candidate starts
        x0 = []
        before = denoiser.nfe
        reference = dpmpp_2m_pc(denoiser, x * path.prior_std(float(ts[0])), ts,
                                callback=lambda i, t, x_t, x0_hat: x0.append(x0_hat.double().flatten(1)))
        moved = torch.stack([(b - a).square().mean().sqrt() for a, b in zip(x0[:-1], x0[1:])])  # [steps - 1]
        lam = path.log_snr(ts[:-1]).double()  # [steps], ascending
        if not math.isfinite(lam[0]):  # a start at pure noise (flows): the even spacing's own first value
            lam[0] = 2 * lam[1] - lam[2]
        dlam = lam.diff()
        density = (moved / dlam) ** EXPONENT * dlam
        share = torch.cat([torch.zeros(1, dtype=torch.float64), density.cumsum(0)])
        if not share[-1] > 0:  # the estimate never moved (a constant net): fall back to even log-SNR steps
            share = torch.cat([torch.zeros(1, dtype=torch.float64), dlam.cumsum(0)])
        return cls(denoiser, x, reference.double(), lam.cpu(), (share / share[-1]).cpu(), float(ts[0]),
                   denoiser.nfe - before)

    def grid(self, path: GaussianPath, steps: int, sigma_max: float | None = SIGMA_MAX) -> torch.Tensor:
        """The equidistributed grid: `steps` + 1 descending times, the start, then the points where the
        share (counted from the start) reaches 1/steps, 2/steps, ... (steps - 1)/steps, then t = 0 (the
        last share is the jump to t = 0). It starts at noise level sigma / alpha = `sigma_max` where
        the path starts above it (Karras et al. 2022: a step saved where the estimate barely moves),
        else (or with None) at the pilot's start."""
        if not isinstance(steps, int) or steps <= 0:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        lam_start, t_start = float(self.lam[0]), self.t_start
        if sigma_max is not None and -2 * math.log(sigma_max) > lam_start:
            lam_start = -2 * math.log(sigma_max)
            t_start = float(path.t_of_log_snr(torch.tensor([lam_start], dtype=torch.float64)))
        first = float(np.interp(lam_start, self.lam.numpy(), self.share.numpy()))
        fractions = first + (1 - first) * np.arange(1, steps) / steps
        lam = torch.from_numpy(np.interp(fractions, self.share.numpy(), self.lam.numpy()))
        t = torch.cat([torch.tensor([t_start], dtype=torch.float64), path.t_of_log_snr(lam)])
        return _finish(path, t)

    __call__ = grid  # a schedule: (path, steps) -> times

    def candidates(self, path: GaussianPath, steps: int) -> dict[str, torch.Tensor]:
        """The grids `fitted` chooses among: name -> [steps + 1] times."""
        return {"equidistributed": self.grid(path, steps), "equidistributed(t=1)": self.grid(path, steps, None),
                **{f"flow(rho={r})": flow(path, steps, rho=r) for r in RHOS},
                **{f"flow(shift={s})": flow(path, steps, shift=s) for s in SHIFTS}, "log_snr": log_snr(path, steps)}

    def fitted(self, sampler, steps: int, progress: bool = False, grid: torch.Tensor | None = None,
               **options) -> tuple[torch.Tensor, dict]:
        """(times, options): the candidate grid of `steps` steps (or only `grid`, where given) on which
        `sampler` solves the pilot's draws nearest to the reference (`distance`), and the
        `options` to call it with there (the caller's, plus the first-step rule where the sampler
        takes one, the caller names none and the grid starts at pure noise). Chosen once per sampler,
        step count, options and grid; `choices` keeps each choice's name, grid, options and every
        trial's error."""
        _, ts, chosen, _ = self.choice(sampler, steps, progress, grid, **options)
        return ts, chosen

    def choice(self, sampler, steps: int, progress: bool = False, grid: torch.Tensor | None = None,
               **options) -> tuple[str, torch.Tensor, dict, dict[str, float]]:
        """`fitted`'s choice in full: (the candidate's name, its times, the options, every trial's error)."""
        return self.choices[self._fit(sampler, steps, progress, grid, options)]

    def best(self, contenders, steps: int, progress: bool = False, grid: torch.Tensor | None = None):
        """(sampler, times, options): of `contenders` [(sampler, options)], each on its fitted grid
        (`fitted`), the one that solves the pilot's draws nearest to the reference."""
        def error(key):
            name, _, _, errors = self.choices[key]
            return errors[name]

        fits = [(sampler, self._fit(sampler, steps, progress, grid, options)) for sampler, options in contenders]
        sampler, key = min(fits, key=lambda fit: error(fit[1]))
        _, ts, chosen, _ = self.choices[key]
        return sampler, ts, chosen

    def _fit(self, sampler, steps: int, progress: bool, grid: torch.Tensor | None, options: dict) -> tuple:
        key = (sampler, steps, repr(sorted(options.items()))) + (() if grid is None else (tuple(grid.tolist()),))
        if key not in self.choices:
            path, device = self.denoiser.path, self.draws.device
            rules = "first_step" in inspect.signature(sampler).parameters and "first_step" not in options
            trials = {}  # name -> (grid, options)
            for name, ts in (self.candidates(path, steps) if grid is None else {"given": grid}).items():
                if rules and path.alpha(ts[:1]).item() == 0:
                    trials.update({f"{name}, first_step={r}": (ts, {**options, "first_step": r}) for r in FIRST_STEP_RULES})
                else:
                    trials[name] = (ts, options)
            errors = {}
            for name, (ts, opts) in tqdm(trials.items(), desc="fitting the time grid", disable=not progress, leave=False):
                noise = SampleNoise(PILOT_SEED, range(len(self.draws)), device)
                out = sampler(self.denoiser, self.draws * path.prior_std(float(ts[0])), ts, noise, **opts)
                errors[name] = self.distance(out.cpu())
            best = min(errors, key=errors.get)
            self.choices[key] = (best, *trials[best], errors)
        return key
