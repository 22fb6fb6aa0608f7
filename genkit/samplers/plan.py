"""Sampling plans: which sampler runs, on which time grid, with which options.

A sampler registered with the `adaptive` grid (`fitted`, `dpmpp_2m`, `dpmpp_2m_pc`) samples best on
a grid fitted to the model by a pilot solve (`AdaptiveGrid`), which costs many draws' worth of
network evaluations. So that cost is paid once: `fit` makes a `FittedGrid` for a (sampler, steps,
guidance, options), a model keeps its fitted grids in a `GridBook` (`grids.json` beside its
weights), and `plan` reads the book. Where the book has no grid for the call, the sampler runs on
its registered `fixed` grid (the flow clock: the best fixed grid of genkit's samplers in
benchmarks/samplers.py) and `plan` says once how to fit one. A pilot runs at draw time only when the
caller asks for `schedule="adaptive"`.
"""
from __future__ import annotations

import inspect
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from genkit.registry import ArgumentError, Registry
from genkit.samplers.adaptive import AdaptiveGrid
from genkit.samplers.diffusers import DiffusersSampler
from genkit.samplers.schedules import SCHEDULES

ADAPTIVE = "adaptive"  # a grid fitted to the model and sampler by a pilot solve (`AdaptiveGrid`), not a function of the path alone
SCHEDULE_NAMES = (*SCHEDULES, ADAPTIVE)
GRIDS_FILE = "grids.json"
FORMAT = 1  # grids.json's layout version


class UnfittedGrid(UserWarning):
    """A sampler that samples best on a fitted grid found none stored for the call: it ran on its fixed grid."""


@dataclass(frozen=True)
class FittedGrid:
    """A grid fitted to one model for `sampler` (the name asked for) at `steps` steps, guidance
    `guidance` (applied within `guidance_interval`: `genkit.arguments.check_guidance_interval`) and
    the caller's `options`: `runs` (a registered sampler: the contender chosen) runs on `times` with
    `run_options`; `grid` names the candidate, `distance` is its sliced W2 to the pilot's reference
    over `pilot_draws` draws."""

    sampler: str
    steps: int
    guidance: float
    options: dict
    runs: str
    run_options: dict
    times: list
    grid: str
    distance: float
    pilot_draws: int
    guidance_interval: tuple = ()  # books written before intervals hold none: guidance at every level

    @property
    def key(self) -> tuple:
        return grid_key(self.sampler, self.steps, self.guidance, self.options, self.guidance_interval)


def grid_key(sampler: str, steps: int, guidance: float, options: dict, interval=()) -> tuple:
    return (sampler, int(steps), round(float(guidance), 6), json.dumps(options, sort_keys=True),
            tuple(round(float(b), 6) for b in interval))


@dataclass
class GridBook:
    """The grids fitted to one model, by (sampler, steps, guidance, options, guidance interval); saved as JSON."""

    grids: dict = field(default_factory=dict)  # grid_key -> FittedGrid

    def __len__(self) -> int:
        return len(self.grids)

    def find(self, sampler: str, steps: int, guidance: float, options: dict, interval=()) -> FittedGrid | None:
        return self.grids.get(grid_key(sampler, steps, guidance, options, interval))

    def add(self, grid: FittedGrid) -> None:
        self.grids[grid.key] = grid

    def to_dict(self) -> dict:
        return {"format": FORMAT, "grids": [asdict(g) for g in self.grids.values()]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data, samplers: Registry) -> "GridBook":
        """The book in `data` (`to_dict`'s form); `ValueError` naming what is wrong (an unknown
        sampler, a grid that does not descend to 0 in `steps` steps, a field of the wrong kind)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("grids"), list):
            raise ValueError(f"not a grid book of format {FORMAT}")
        book = cls()
        for entry in data["grids"]:
            try:
                grid = FittedGrid(**entry)
            except TypeError as err:
                raise ValueError(f"a grid with other fields ({err})") from None
            _check(grid, samplers)
            book.add(grid)
        return book

    @classmethod
    def checked(cls, data, samplers: Registry, where: str) -> "GridBook":
        """`from_dict`, except that a damaged book is set aside with a warning naming `where`: sampling
        then runs on the fixed grids, as with no book."""
        try:
            return cls.from_dict(data, samplers)
        except ValueError as err:
            warnings.warn(f"{where} is damaged ({str(err).splitlines()[0][:200]}); sampling on the fixed grids "
                          f"until `genkit fit-grid` writes it again", UnfittedGrid, stacklevel=3)
            return cls()

    @classmethod
    def read(cls, directory: str | Path, samplers: Registry) -> "GridBook":
        """The book stored in `directory` (empty if there is none; a damaged one warns: `checked`)."""
        path = Path(directory) / GRIDS_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):  # JSON's and UTF-8's errors are ValueErrors
            data = None
        return cls.checked(data, samplers, str(path))


def _check(grid: FittedGrid, samplers: Registry) -> None:
    if grid.sampler not in samplers or grid.runs not in samplers:
        raise ValueError(f"unknown sampler {grid.sampler!r} or {grid.runs!r}")
    if not (isinstance(grid.steps, int) and not isinstance(grid.steps, bool) and 0 < grid.steps < 100_000):
        raise ValueError(f"steps {grid.steps!r} is not a positive count")
    times = grid.times
    if not (isinstance(times, list) and len(times) == grid.steps + 1
            and all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in times)):
        raise ValueError(f"the {grid.sampler} grid of {grid.steps} steps does not hold {grid.steps + 1} finite times")
    if times[-1] != 0 or any(a <= b for a, b in zip(times, times[1:])) or times[0] > 1:
        raise ValueError(f"the {grid.sampler} grid of {grid.steps} steps does not descend from at most 1 to 0")
    if not all(isinstance(o, dict) for o in (grid.options, grid.run_options)):
        raise ValueError("options are not mappings")
    bounds = grid.guidance_interval
    if not (isinstance(bounds, (list, tuple)) and len(bounds) <= 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) and b >= 0 for b in bounds)
            and all(a < b for a, b in zip(bounds, bounds[1:]))):
        raise ValueError(f"guidance_interval {bounds!r} is not [lo, hi], [lo] or [] with 0 <= lo < hi")


def make_grid(schedule, path, steps: int) -> torch.Tensor:
    """[steps + 1] descending times of `schedule` (a `SCHEDULES` name or a function (path, steps))."""
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ArgumentError("schedule", f"unknown schedule '{schedule}'; choose from {', '.join(SCHEDULE_NAMES)}")
        schedule = SCHEDULES[schedule]
    try:
        return schedule(path, steps)
    except ValueError as err:
        raise ArgumentError("schedule", str(err)) from None


def fit(samplers: Registry, name: str, steps: int, guidance: float, options: dict, adaptive: AdaptiveGrid,
        progress: bool = False, interval: tuple = ()) -> FittedGrid:
    """The grid on which sampler `name` (with `options`) solves `adaptive`'s pilot (drawn at `guidance`
    within `interval`) nearest its reference: for a sampler with `contenders`, the nearest of theirs,
    each on its own best grid."""
    contenders = samplers[name].extra.get("contenders") or ((name, options),)
    best = None
    for runs, run_options in contenders:
        chosen, times, chosen_options, errors = adaptive.choice(samplers[runs].build, steps, progress, **run_options)
        if best is None or errors[chosen] < best.distance:
            best = FittedGrid(name, steps, float(guidance), dict(options), runs, dict(chosen_options),
                              [float(t) for t in times.tolist()], chosen, float(errors[chosen]), len(adaptive.draws),
                              tuple(interval))
    return best


@dataclass
class Plan:
    """What a call samples with: `sampler` (a function of the sampler signature) on `times` with `options`."""

    sampler: Callable
    times: torch.Tensor
    options: dict


def plan(samplers: Registry, sampler, options: dict, schedule, path, steps: int, guidance: float,
         book: GridBook, pilot: Callable[[], AdaptiveGrid], seed: int = 0, progress: bool = False,
         interval: tuple = ()) -> Plan:
    """The plan for sampling `path` in `steps` steps with `sampler` (a `samplers` name, a function, or a
    diffusers scheduler) and `options`, on `schedule` (a `SCHEDULES` name, `adaptive`, a function,
    or None: the grid fitted for the call in `book`, else the sampler's own). A sampler whose own grid
    is `adaptive` and finds none in `book` runs on its `fixed` grid (an `UnfittedGrid` warning says
    so); `pilot()` is asked for only when the caller names `adaptive`."""
    name = sampler if isinstance(sampler, str) else None
    extra = samplers[name].extra if name else {}
    if hasattr(sampler, "set_timesteps"):
        fn = DiffusersSampler(sampler, seed)
    else:
        fn = samplers[name].build if name else sampler
        if not extra.get("contenders"):
            check_options(fn, options, name or "this sampler")
        elif options:
            raise ArgumentError(next(iter(options)), f"{name} chooses its sampler's options; name a sampler to set them")
    if schedule is None and name is not None:
        stored = book.find(name, steps, guidance, options, interval)
        if stored is not None:
            return Plan(samplers[stored.runs].build, torch.tensor(stored.times, dtype=torch.float64),
                        dict(stored.run_options))
    own = path.default_schedule(extra.get("schedule", "uniform"))
    if schedule is None and own == ADAPTIVE:
        fixed = path.default_schedule(extra["fixed"])
        within = f" within sigma/alpha {list(interval)}" if interval else ""
        warnings.warn(f"no grid fitted for {name} at {steps} steps, guidance {guidance:g}{within}: it runs on the "
                      f"fixed '{fixed}' grid; fit one once with `genkit fit-grid RUN --steps {steps}` (or "
                      f"`model.fit_grid`), or pass schedule='adaptive' to fit at every call", UnfittedGrid,
                      stacklevel=3)
        return Plan(fn, make_grid(fixed, path, steps), options)
    schedule = schedule or own
    if schedule != ADAPTIVE:
        return Plan(fn, make_grid(schedule, path, steps), options)
    adaptive = pilot()
    if isinstance(fn, DiffusersSampler):  # its own steps: the equidistributed grid
        return Plan(fn, make_grid(adaptive, path, steps), options)
    if name is None:
        ts, options = adaptive.fitted(fn, steps, progress, **options)
        return Plan(fn, ts, options)
    grid = fit(samplers, name, steps, guidance, options, adaptive, progress, interval)
    return Plan(samplers[grid.runs].build, torch.tensor(grid.times, dtype=torch.float64), dict(grid.run_options))


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


SIGNATURE = ("denoiser", "x", "ts", "noise", "callback", "progress")  # what every sampler takes; the rest are options
