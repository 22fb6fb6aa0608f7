"""Exact likelihood through the probability-flow ODE (Song et al. 2021, appendix D.2).

The instantaneous change of variables (Chen et al. 2018) gives
    log p_0(x) = log p_T(x_T) + int_0^T div v(x_t, t) dt,
where v is the ODE's velocity (`GaussianPath` 'velocity' of the net's prediction). The
divergence is exact (one backward pass per dimension) or estimated with the Hutchinson-Skilling
trace estimator, whose probe noise stays fixed for the whole solve. By default (`auto`) it is
exact up to `EXACT_MAX_DIMS` dimensions; beyond, `probes` Hutchinson probes ride along one solve,
and their spread gives each point's standard error.

What no setting removes, and what bounds the result besides the solver's tolerance:
- the start at t_min > 0: the density is that of the data convolved with N(0, s^2), s = sigma /
  alpha at t_min (`smoothing_std`); on a VE path (sigma_min = 0.01) this is the largest term;
- the prior at t_max: the path's N(0, alpha^2 + sigma^2) stands in for the true marginal, which
  keeps a residual alpha(t_max) of the data (VP at t = 1: alpha = 0.0066).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from genkit.samplers.base import Denoiser

ESTIMATORS = ("auto", "hutchinson", "exact")
EXACT_MAX_DIMS = 64  # `auto` takes the exact divergence up to this many dimensions (one backward pass each)
PROBES = 4  # Hutchinson probes per point under `auto` beyond EXACT_MAX_DIMS


class LogLikelihood(NamedTuple):
    """log p(x) in nats [B] (float64, the mean over the probes) and its standard error [B] (0 for
    the exact divergence or a single probe, whose spread is unknown)."""

    log_p: torch.Tensor
    stderr: torch.Tensor


def _velocity_and_divergence(denoiser: Denoiser, x: torch.Tensor, t: float, probes: torch.Tensor | None):
    """v(x, t) [B, ...] and its divergence: exact [B, 1] when `probes` is None, else one
    estimate e^T (dv/dx) e per probe e in `probes` [K, B, ...]: [B, K]."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        x0, eps = denoiser(x, t)
        v = denoiser.path.from_x0_eps(x0, eps, torch.tensor([t], dtype=torch.float64), "velocity")
        if probes is not None:  # one vector-Jacobian product per probe
            divs = []
            for k, e in enumerate(probes):
                (vjp,) = torch.autograd.grad(v, x, e, retain_graph=k < len(probes) - 1)
                divs.append((vjp * e).flatten(1).sum(1))
            div = torch.stack(divs, 1)
        else:
            flat = v.flatten(1)
            div = torch.zeros(x.shape[0], dtype=v.dtype, device=x.device)
            for i in range(flat.shape[1]):
                (row,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i < flat.shape[1] - 1)
                div = div + row.flatten(1)[:, i]
            div = div[:, None]
    return v.detach(), div.detach()


def estimate_log_likelihood(denoiser: Denoiser, x: torch.Tensor, estimator: str = "auto", probes: int = PROBES,
                            probe: str = "rademacher", method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                            t_min: float = 1e-5, t_max: float = 1.0, prior_logp=None,
                            generator: torch.Generator | None = None) -> LogLikelihood:
    """log p(x) per example with its standard error (`LogLikelihood`), integrating the ODE from
    t_min to t_max with torchdiffeq. `estimator`: `exact`, `hutchinson` (`probes` probes of kind
    `probe`, rademacher or gaussian, fixed along the solve), or `auto` (exact up to
    `EXACT_MAX_DIMS` dimensions, else hutchinson). `prior_logp(x_T) -> [B]` defaults to the
    path's N(0, alpha^2 + sigma^2). The solver's network evaluations are counted in `denoiser.nfe`."""
    from torchdiffeq import odeint

    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown divergence estimator {estimator!r}; expected one of {ESTIMATORS}")
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"unknown probe {probe!r}; expected rademacher or gaussian")
    if not isinstance(probes, int) or isinstance(probes, bool) or probes < 1:
        raise ValueError(f"probes must be a positive integer, got {probes!r}")
    if estimator == "auto":
        estimator = "exact" if x[0].numel() <= EXACT_MAX_DIMS else "hutchinson"
    e = None
    if estimator == "hutchinson":
        e = torch.randn((probes, *x.shape), generator=generator, dtype=x.dtype).to(x.device)  # [K, B, ...]
        if probe == "rademacher":
            e = e.sign()

    def dynamics(t, state):
        v, div = _velocity_and_divergence(denoiser, state[0], float(t), e)
        return v, div.to(state[1])

    # torchdiffeq integrates the tuple state in one dtype: keep it the data's (a net's float32)
    start = (x, torch.zeros(x.shape[0], 1 if e is None else probes, dtype=x.dtype, device=x.device))
    times = torch.tensor([t_min, t_max], dtype=x.dtype)
    x_end, delta = (s[-1] for s in odeint(dynamics, start, times, method=method, rtol=rtol, atol=atol))
    prior = prior_logp(x_end) if prior_logp is not None else denoiser.path.prior_logp(x_end, t_max)
    per_probe = prior.double()[:, None] + delta.double()  # [B, K]
    spread = per_probe.std(1) / math.sqrt(per_probe.shape[1]) if per_probe.shape[1] > 1 else \
        torch.zeros(len(x), dtype=torch.float64, device=per_probe.device)
    return LogLikelihood(per_probe.mean(1), spread)


def log_likelihood(denoiser: Denoiser, x: torch.Tensor, **options) -> torch.Tensor:
    """log p(x) in nats per example [B] (float64): `estimate_log_likelihood`'s mean."""
    return estimate_log_likelihood(denoiser, x, **options).log_p


def smoothing_std(path, t_min: float = 1e-5) -> float:
    """The noise the likelihood's start at t_min leaves on the data, in data units: sigma / alpha
    at t_min. The density computed is the data's convolved with N(0, smoothing_std^2 I)."""
    t = torch.tensor([t_min], dtype=torch.float64)
    return float(path.sigma(t) / path.alpha(t))


def dequantize(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantization of uint8 images k into the model's scale: x = (k + u) / 127.5 - 1."""
    u = torch.rand(images.shape, generator=generator).to(images.device)
    return (images.float() + u) / 127.5 - 1


def bits_per_dim(log_p: torch.Tensor, dims: int, scale: float = 127.5) -> torch.Tensor:
    """Bits per dimension of discrete data from a density on the model scale: dequantized data
    x = (k + u) / scale - 1 has p(k) = p(x) / scale^D, hence bpd = -log p / (D ln 2) + log2 scale."""
    return -log_p / (dims * math.log(2)) + math.log2(scale)


def dataset_bits_per_dim(denoiser_factory, images: torch.Tensor, batch_size: int = 50, seed: int = 0,
                         progress: bool = True, **options) -> tuple[float, float, int]:
    """Mean bits/dim of uint8 images [N, C, H, W] with its standard error (over the images; the
    probes' own spread is part of it) and the mean NFE per batch. `denoiser_factory()` returns a
    fresh `Denoiser` for each batch."""
    generator = torch.Generator().manual_seed(seed)
    values, nfes = [], []
    for i in tqdm(range(0, len(images), batch_size), desc="bits/dim", disable=not progress):
        denoiser = denoiser_factory()
        x = dequantize(images[i:i + batch_size], generator)
        values.append(bits_per_dim(log_likelihood(denoiser, x, generator=generator, **options), x[0].numel()))
        nfes.append(denoiser.nfe)
    bpd = torch.cat(values)
    return float(bpd.mean()), float(bpd.std() / math.sqrt(len(bpd))), round(sum(nfes) / len(nfes))
