"""Consistency models (Song et al. 2023) on the rectified-flow path: one network evaluation maps
noise to data. Trained from scratch (consistency training, with the improved recipe of Song &
Dhariwal 2023, iCT) or distilled from a trained genkit model (consistency distillation, CD).

The consistency function is the flow's own x0 estimate, f(x_t, t) = x_t - t u(x_t, t), so
f(x, 0) = x holds by construction. Training pulls f at the upper end of an interval [t_i, t_i+1]
of a discretization towards the stop-gradient f at its lower end, both points on the same noisy
line (1 - t) x0 + t eps. iCT's parts, with noise levels as sigma = t / (1 - t): Karras's grid
(rho = 7) on [sigma_min, sigma_max] between t = 0 and t = 1, a discretization that doubles from
`start_intervals` to `end_intervals` over training, intervals drawn by a lognormal density over
sigma (or uniformly), the pseudo-Huber distance, and a weight 1 / (t_i+1 - t_i) (iCT's
1 / (sigma_i+1 - sigma_i) in this path's time).

Distillation (`teacher` set) takes the lower end of an interval from one step of the teacher's
probability-flow ODE started at the upper end (Euler or Heun, Song et al. 2023's algorithm 2),
instead of the same noise: the teacher may live on any Gaussian path (DDPM, score SDE, flow), as
its prediction is read at the time of equal log-SNR. As in iCT, the target is the student's own
stop-gradient output (no EMA target network).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genkit.methods.base import drop_labels
from genkit.paths import FlowPath, _bcast
from genkit.registry import ConfigError, one_of, require

TEACHER_SOLVERS = ("euler", "heun")


@dataclass
class ConsistencyConfig:
    """`method.consistency`: iCT's discretization, curriculum, noise density and distance."""

    sigma_min: float = 0.002  # the grid's noise-to-signal range, sigma = t / (1 - t)
    sigma_max: float = 80.0
    rho: float = 7.0  # Karras et al. 2022's spacing
    start_intervals: int = 10  # s0: the discretization at the start of training
    end_intervals: int = 1280  # s1: it doubles until it reaches this
    interval_density: str = "lognormal"  # lognormal: iCT's density over sigma; uniform: each interval alike (CD)
    noise_mean: float = -1.1  # lognormal(mean, std) over sigma
    noise_std: float = 2.0
    huber_c: float = 0.00054  # pseudo-Huber distance sqrt(|d|^2 + c^2) - c with c = huber_c * sqrt(dims)
    teacher: str = ""  # distillation: a trained genkit model (run or checkpoint directory); "": from scratch
    teacher_solver: str = "heun"  # the teacher's ODE step across one interval: euler | heun
    teacher_guidance: float = 1.0  # the teacher's classifier-free guidance (the student learns the guided ODE)


def check(cfg) -> None:
    c = cfg.method.consistency
    require(c, "method.consistency", positive=["sigma_min", "sigma_max", "rho", "start_intervals", "end_intervals",
                                               "noise_std", "huber_c"], non_negative=["teacher_guidance"])
    one_of(c.teacher_solver, TEACHER_SOLVERS, "method.consistency.teacher_solver")
    one_of(c.interval_density, ("lognormal", "uniform"), "method.consistency.interval_density")
    if c.sigma_min >= c.sigma_max:
        raise ConfigError(f"method.consistency.sigma_min: must be below sigma_max ({c.sigma_max}), got {c.sigma_min}")
    if c.start_intervals > c.end_intervals:
        raise ConfigError(f"method.consistency.start_intervals: must not exceed end_intervals ({c.end_intervals})")
    if cfg.method.resolved_prediction != "velocity":
        raise ConfigError("method.prediction: the consistency function is the flow's x0 estimate x - t u; "
                          "use velocity (or auto)")


def build_path(method_cfg) -> FlowPath:
    return FlowPath()


def pseudo_huber(diff: torch.Tensor, c: float) -> torch.Tensor:
    """sqrt(|diff|^2 + c^2) - c per sample: [B, ...] -> [B]."""
    return (diff.flatten(1).pow(2).sum(1) + c**2).sqrt() - c


class Consistency:
    """Consistency training (iCT) or, with a `teacher`, distillation on the flow path (see the
    module docstring); `progress`, the share of training done, is set by the trainer before each
    step and drives the curriculum."""

    build_path = staticmethod(build_path)

    def __init__(self, cfg, num_classes: int = 0, path: FlowPath | None = None, teacher=None):
        self.cfg, self.null_class = cfg, num_classes
        self.prediction = "velocity"
        self.path = path if path is not None else build_path(cfg)
        self.progress = 0.0
        if teacher is not None and teacher.num_classes != num_classes:
            raise ConfigError(f"method.consistency.teacher: the teacher has {teacher.num_classes} classes, "
                              f"this model {num_classes}")
        dropped = cfg.p_uncond > 0 or cfg.consistency.teacher_guidance != 1  # the teacher's null class is asked
        if teacher is not None and num_classes and dropped and not getattr(teacher, "predicts_unconditionally", True):
            raise ConfigError("method.p_uncond: the teacher was trained without label dropout, so it has no prediction "
                              "for the dropped labels or for guidance; distil with method.p_uncond=0 and "
                              "method.consistency.teacher_guidance=1")
        # distillation's teacher (loaded by the trainer from `teacher`): a `GenerativeModel`, or
        # anything with its `path`, `num_classes` and `denoiser(labels, guidance, precision)`
        self.teacher = teacher

    def log_terms(self, loss: float, dims: int) -> dict:
        return {"intervals": self.num_intervals()}

    def num_intervals(self) -> int:
        """iCT's curriculum: s0 * 2^stage, capped at s1, the stages splitting training evenly."""
        c = self.cfg.consistency
        stages = math.floor(math.log2(c.end_intervals / c.start_intervals)) + 1
        return min(c.start_intervals * 2 ** math.floor(self.progress * stages), c.end_intervals)

    def grid(self, intervals: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, sigma) [n + 2] float64, ascending: 0, Karras's n points on [sigma_min, sigma_max], 1."""
        c, n = self.cfg.consistency, intervals or self.num_intervals()
        ramp = torch.linspace(0, 1, n, dtype=torch.float64)
        low, high = c.sigma_min ** (1 / c.rho), c.sigma_max ** (1 / c.rho)
        sigma = torch.cat([torch.zeros(1, dtype=torch.float64), (low + ramp * (high - low)) ** c.rho,
                           torch.full((1,), math.inf, dtype=torch.float64)])
        t = torch.cat([sigma[:-1] / (1 + sigma[:-1]), torch.ones(1, dtype=torch.float64)])
        return t, sigma

    def draw_intervals(self, n: int, sigma: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Interval indices [n], each drawn with the lognormal mass of its sigma range (iCT), or
        uniformly (Song et al. 2023's consistency distillation)."""
        c = self.cfg.consistency
        if c.interval_density == "uniform":
            return torch.randint(0, len(sigma) - 1, (n,), generator=generator)
        cdf = torch.erf((sigma.log() - c.noise_mean) / (math.sqrt(2) * c.noise_std))  # [-1, 1], log 0 = -inf
        mass = cdf[1:] - cdf[:-1]
        return torch.multinomial(mass, n, replacement=True, generator=generator)

    def consistency_function(self, net, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """f(x_t, t): the x0 the flow's velocity points to, x_t - t u; f(x, 0) = x."""
        u = net(self.path.net_input(x_t, t), t.to(x_t), y)
        dtype = torch.promote_types(u.dtype, torch.float32)  # bf16 outputs in float32; float64 kept
        return self.path.to_x0_eps(u.to(dtype), x_t.to(dtype), t, "velocity")[0]

    @torch.no_grad()
    def teacher_velocity(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """dx/dt of the teacher's probability-flow ODE at flow times t [B], x [B, ...]: its (x0, eps)
        read at its own time of the same log-SNR, with x rescaled onto its path, in the precision
        of the autocast region around (the run's)."""
        teacher, device, t = self.teacher, x.device.type, t.cpu()  # paths keep their tables on the CPU
        tau = teacher.path.t_of_log_snr(self.path.log_snr(t))
        # x = (1 - t) (x0 + sigma/alpha eps) on the flow; the same point on the teacher's path, by the
        # norms of (alpha, sigma), which stays finite at either end
        scale = ((teacher.path.alpha(tau) ** 2 + teacher.path.sigma(tau) ** 2) / ((1 - t) ** 2 + t**2)).sqrt()
        tau, scale = tau.to(x.device), scale.to(x.device)
        half = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(half, "no")
        denoiser = teacher.denoiser(labels=y, guidance=self.cfg.consistency.teacher_guidance, precision=precision)
        x0, eps = denoiser(_bcast(scale, x) * x, tau)
        return (eps - x0).to(x.dtype)

    @torch.no_grad()
    def teacher_step(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """x at flow times t [B] carried to times s [B] < t by one Euler or Heun step of the
        teacher's ODE (Heun falls back to Euler where s = 0, as in Karras et al. 2022)."""
        dt = _bcast(s - t, x)
        v = self.teacher_velocity(x, t, y)
        euler = x + dt * v
        if self.cfg.consistency.teacher_solver == "euler":
            return euler
        v_next = self.teacher_velocity(euler, torch.where(s > 0, s, t), y)  # rows with s = 0 are discarded
        later = (s > 0).reshape(-1, *([1] * (x.dim() - 1)))
        return torch.where(later, x + dt * (v + v_next) / 2, euler)

    def loss(self, net, x0: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator | None = None,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        t, sigma = self.grid()
        i = self.draw_intervals(x0.shape[0], sigma, generator)
        lower, upper = t[i].to(x0.device), t[i + 1].to(x0.device)
        eps = torch.randn(x0.shape, generator=generator).to(x0) if noise is None else noise.to(x0)
        y = drop_labels(y, self.cfg.p_uncond, self.null_class, generator)
        x_upper = self.path.noise(x0, eps, upper)
        x_lower = self.path.noise(x0, eps, lower) if self.teacher is None else self.teacher_step(x_upper, upper, lower, y)
        student = self.consistency_function(net, x_upper, upper, y)
        with torch.no_grad():
            target = self.consistency_function(net, x_lower, lower, y)
        c = self.cfg.consistency.huber_c * math.sqrt(x0[0].numel())
        weight = (1 / (upper - lower)).to(student)
        return (weight * pseudo_huber(student - target, c)).mean()

