"""Gaussian paths x_t = alpha(t) x0 + sigma(t) eps, t in [0, 1] (0 = data, 1 = noise).

A path knows alpha, sigma and their time derivatives, and converts between the quantities a
net may predict at (x_t, t): `eps`, `x0`, `v` (Salimans & Ho 2022: alpha eps - sigma x0),
`velocity` (dx_t/dt) and `score` (grad log p_t = -eps / sigma). Every sampler works on this
interface, so any sampler drives any net trained on any path.
"""
from __future__ import annotations

import math

import torch

PREDICTIONS = ("eps", "x0", "v", "velocity", "score")


def _bcast(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] or [] -> broadcastable against `like` [B, ...]."""
    value = torch.as_tensor(value, device=like.device)
    return value.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


class GaussianPath:
    """Base class: subclasses define `alpha`, `sigma`, `d_alpha`, `d_sigma` for t of shape [B]."""

    t_min = 1e-3  # the least noisy time a sampler should stop at before its final denoising jump

    def snap(self, t: torch.Tensor) -> torch.Tensor:
        """Move descending sampling times onto the times a net was trained at (all of (0, 1] here)."""
        return t

    def time_warp(self, u: torch.Tensor) -> torch.Tensor:
        """The time at fraction u of a uniform sampling clock (identity; flows apply SD3's shift)."""
        return u

    def default_schedule(self, registered: str) -> str:
        """The time grid a sampler registered with the grid `registered` gets on this path unless the
        caller names one: its own."""
        return registered

    def net_input(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the net is fed for x_t (as is; paths whose x_t grows large rescale it)."""
        return x

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # abstract

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # abstract

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # abstract

    def d_sigma(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # abstract

    # -------------------------------------------------- the forward SDE with these marginals

    def drift_coef(self, t: torch.Tensor) -> torch.Tensor:
        """f(t) of the linear forward SDE dx = f(t) x dt + g(t) dW: f = alpha' / alpha."""
        return self.d_alpha(t) / self.alpha(t)

    def diffusion_sq(self, t: torch.Tensor) -> torch.Tensor:
        """g(t)^2 = d(sigma^2)/dt - 2 f sigma^2, so that the SDE's marginals are N(alpha x0, sigma^2)."""
        s = self.sigma(t)
        return 2 * s * self.d_sigma(t) - 2 * self.drift_coef(t) * s**2

    def prior_std(self, t_max: float = 1.0) -> float:
        """Standard deviation of the prior at t_max, N(0, alpha^2 + sigma^2) for unit-variance data."""
        t = torch.tensor([t_max], dtype=torch.float64)
        return float((self.alpha(t) ** 2 + self.sigma(t) ** 2).sqrt())

    def prior_logp(self, x: torch.Tensor, t_max: float = 1.0) -> torch.Tensor:
        """log N(x; 0, prior_std^2 I) summed over all but the batch dimension: [B, ...] -> [B]."""
        var = self.prior_std(t_max) ** 2
        d = x[0].numel()
        return -0.5 * (x.double().flatten(1).square().sum(1) / var + d * math.log(2 * math.pi * var))

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """lambda(t) = log(alpha^2 / sigma^2)."""
        return 2 * (torch.log(self.alpha(t)) - torch.log(self.sigma(t)))

    def t_of_log_snr(self, lam: torch.Tensor, iters: int = 64) -> torch.Tensor:
        """Invert the (decreasing) log-SNR by bisection on [0, 1]: lambda [N] -> t [N] float64."""
        lo = torch.zeros_like(lam, dtype=torch.float64)
        hi = torch.ones_like(lam, dtype=torch.float64)
        for _ in range(iters):
            mid = (lo + hi) / 2
            above = self.log_snr(mid) > lam  # still too clean: move right
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return (lo + hi) / 2

    def noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Sample x_t given the data and the noise."""
        return _bcast(self.alpha(t), x0) * x0 + _bcast(self.sigma(t), x0) * eps

    def to_x0_eps(self, pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, kind: str):
        """Recover (x0, eps) from a prediction of kind `kind` at (x_t, t)."""
        a, s = _bcast(self.alpha(t), x_t), _bcast(self.sigma(t), x_t)
        if kind == "eps":
            return (x_t - s * pred) / a, pred
        if kind == "x0":
            return pred, (x_t - a * pred) / s
        if kind == "score":
            eps = -s * pred
            return (x_t - s * eps) / a, eps
        if kind == "v":  # solve [a s; -s a] [x0; eps] = [x_t; v]
            norm = a**2 + s**2
            return (a * x_t - s * pred) / norm, (s * x_t + a * pred) / norm
        if kind == "velocity":  # solve [a s; a' s'] [x0; eps] = [x_t; u]
            da, ds = _bcast(self.d_alpha(t), x_t), _bcast(self.d_sigma(t), x_t)
            det = a * ds - s * da
            return (ds * x_t - s * pred) / det, (a * pred - da * x_t) / det
        raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTIONS}")

    def from_x0_eps(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, kind: str) -> torch.Tensor:
        """The prediction of kind `kind` that corresponds to (x0, eps) at time t."""
        if kind == "eps":
            return eps
        if kind == "x0":
            return x0
        a, s = _bcast(self.alpha(t), x0), _bcast(self.sigma(t), x0)
        if kind == "score":
            return -eps / s
        if kind == "v":
            return a * eps - s * x0
        if kind == "velocity":
            return _bcast(self.d_alpha(t), x0) * x0 + _bcast(self.d_sigma(t), x0) * eps
        raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTIONS}")
