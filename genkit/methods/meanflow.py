"""MeanFlow (Geng et al. 2025): learn the average velocity u(z, r, t) = 1/(t - r) int_r^t v(z_s, s) ds
of the rectified flow, so that one step z_r = z_t - (t - r) u(z_t, r, t) crosses [r, t] at once.

The net is trained through the MeanFlow identity u = v - (t - r) du/dt, where du/dt is the
derivative along the flow, v d_z u + d_t u: a Jacobian-vector product with tangent (v, 0, 1) in
(z, r, t), whose result is the stop-gradient target.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from genkit.methods.base import drop_labels
from genkit.paths import FlowPath
from genkit.registry import ConfigError, one_of, require


@dataclass
class MeanFlowConfig:
    """`method.meanflow`: the (r, t) density, the loss's adaptive weight and the JVP (Geng et al.
    2025, sections 4.1-4.3)."""

    logit_mean: float = -0.4  # r and t: the sorted pair of two logit-normal(m, s) draws
    logit_std: float = 1.0
    interval_fraction: float = 0.25  # share of pairs kept apart; the others have r = t (flow matching)
    adaptive_power: float = 1.0  # loss = sg(w) ||u - u_tgt||^2 with w = 1 / (||u - u_tgt||^2 + eps)^p
    adaptive_eps: float = 1e-3
    jvp: str = "forward"  # forward: torch.func.jvp; difference: central difference along (v, 0, 1)
    jvp_step: float = 1e-3  # the central difference's step


def check(cfg) -> None:
    m = cfg.method.meanflow
    require(m, "method.meanflow", positive=["logit_std", "adaptive_eps", "jvp_step"],
            non_negative=["adaptive_power"], unit=["interval_fraction"])
    one_of(m.jvp, ("forward", "difference"), "method.meanflow.jvp")
    if cfg.method.resolved_prediction != "velocity":
        raise ConfigError("method.prediction: MeanFlow's net predicts the average velocity; use velocity (or auto)")
    if not cfg.model.interval:
        raise ConfigError("model.interval: MeanFlow's net takes a second time r; set model.interval=true")


def build_path(method_cfg) -> FlowPath:
    return FlowPath()


def meanflow_target(u_fn, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, v: torch.Tensor,
                    jvp: str = "forward", step: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, u_tgt) at (z [B,...], r [B], t [B]) for `u_fn(z, r, t)` and the velocity `v` there:
    u_tgt = v - (t - r) du/dt, du/dt = d/de u_fn(z + e v, r, t + e) at e = 0, taken by forward-mode
    AD or by a central difference of `step`. u_tgt carries no gradient."""
    if jvp == "forward":
        with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention kernels have no forward-mode AD
            u, dudt = torch.func.jvp(u_fn, (z, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
    else:
        u = u_fn(z, r, t)
        with torch.no_grad():
            dudt = (u_fn(z + step * v, r, t + step) - u_fn(z - step * v, r, t - step)) / (2 * step)
    gap = (t - r).reshape(-1, *[1] * (z.dim() - 1))
    return u, (v - gap * dudt).detach()


class MeanFlow:
    """Regress the net u(z_t, r, t) onto v - (t - r) du/dt at z_t = (1 - t) x0 + t eps, with
    v = eps - x0 (the conditional velocity, as in the paper) and the adaptive loss weight."""

    build_path = staticmethod(build_path)

    def __init__(self, cfg, num_classes: int = 0, path: FlowPath | None = None):
        self.cfg, self.null_class = cfg, num_classes
        self.prediction = "velocity"
        self.path = path if path is not None else build_path(cfg)

    def log_terms(self, loss: float, dims: int) -> dict:
        return {}

    def sample_times(self, n: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, t) [n] float64 with r <= t: two logit-normal draws sorted, then r = t for all but a
        share `interval_fraction` of the pairs."""
        m = self.cfg.meanflow
        draws = torch.sigmoid(m.logit_mean + m.logit_std * torch.randn(n, 2, generator=generator, dtype=torch.float64))
        t, r = draws.max(1).values, draws.min(1).values
        apart = torch.rand(n, generator=generator, dtype=torch.float64) < m.interval_fraction
        return torch.where(apart, r, t), t

    def loss(self, net, x0: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator | None = None,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        m = self.cfg.meanflow
        r, t = self.sample_times(x0.shape[0], generator)
        eps = torch.randn(x0.shape, generator=generator).to(x0) if noise is None else noise.to(x0)
        z = self.path.noise(x0, eps, t)
        y = drop_labels(y, self.cfg.p_uncond, self.null_class, generator)
        r, t, v = r.to(x0), t.to(x0), eps - x0
        apart = r < t  # where r = t the target is v itself: no JVP is spent there
        errors = []
        for rows in (~apart, apart):
            if not rows.any():
                continue
            y_rows = None if y is None else y[rows]
            u_fn = lambda z_, r_, t_: net(z_, t_, y_rows, r=r_)  # noqa: E731
            if rows is apart:
                u, target = meanflow_target(u_fn, z[rows], r[rows], t[rows], v[rows], m.jvp, m.jvp_step)
            else:
                u, target = u_fn(z[rows], r[rows], t[rows]), v[rows]
            errors.append((u.float() - target.float()).flatten(1).pow(2).sum(1))  # [rows]
        squared = torch.cat(errors)
        weight = 1 / (squared.detach() + m.adaptive_eps) ** m.adaptive_power
        return (weight * squared).mean()
