"""Deterministic samplers of the probability-flow ODE dx/dt = alpha'(t) x0 + sigma'(t) eps
(Song et al. 2021), written in the path's own time t so that they serve every path."""
from __future__ import annotations

import math

import torch

from tqdm.auto import trange

from genkit.paths import _bcast
from genkit.registry import ArgumentError
from genkit.samplers.base import Callback, Denoiser, DenoiserLike, NoiseSource, first_step_weight, time_pairs


def _velocity(denoiser: DenoiserLike, x: torch.Tensor, t):
    """The probability-flow velocity and x0 estimate at time t (a float, or [B] per-sample times)."""
    x0, eps = denoiser(x, t)
    tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    return denoiser.path.from_x0_eps(x0, eps, tt, "velocity"), x0


def euler(denoiser: DenoiserLike, x: torch.Tensor, ts: torch.Tensor, noise: NoiseSource | None = None,
          callback: Callback | None = None, progress: bool = False) -> torch.Tensor:
    """Euler's method on the probability-flow ODE; the last step (to t = 0) lands on the
    denoised estimate, which is where an Euler step on a linear path lands too."""
    for i, (t, s) in enumerate(time_pairs(ts, progress)):
        u, x0 = _velocity(denoiser, x, t)
        if callback:
            callback(i, t, x, x0)
        x = x0 if s == 0 else x + (s - t) * u
    return x


def heun(denoiser: DenoiserLike, x: torch.Tensor, ts: torch.Tensor, noise: NoiseSource | None = None,
         callback: Callback | None = None, progress: bool = False) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, algorithm 1) in t; the last step to t = 0
    is a single evaluation, as in EDM. NFE = 2 * steps - 1."""
    for i, (t, s) in enumerate(time_pairs(ts, progress)):
        u, x0 = _velocity(denoiser, x, t)
        if callback:
            callback(i, t, x, x0)
        if s == 0:
            return x0
        guess = x + (s - t) * u
        u_next, _ = _velocity(denoiser, guess, s)
        x = x + (s - t) * 0.5 * (u + u_next)
    return x


def dpmpp_2m(denoiser: DenoiserLike, x: torch.Tensor, ts: torch.Tensor, noise: NoiseSource | None = None,
             callback: Callback | None = None, progress: bool = False, corrector: bool = False,
             first_step: str = "end") -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, algorithm 2): multistep second order in the data
    prediction, exponential integrator in lambda = log(alpha / sigma); first order on the
    first step and a denoising jump on the last.

    With `corrector`, each step is redone once the net has been evaluated at its end point,
    integrating the linear interpolant of the two data predictions exactly (a second-order
    corrector in the manner of UniC, Zhao et al. 2023). That evaluation is the one the next step
    needs anyway, so the corrector costs no network evaluation. `first_step` says how the corrector
    of a step from pure noise models the estimate (see `FIRST_STEP_RULES`).
    """
    end_weight = first_step_weight(first_step)
    path = denoiser.path
    lam = (0.5 * path.log_snr(ts)).tolist()  # -inf where alpha = 0, +inf at t = 0
    alpha, sigma = path.alpha(ts).tolist(), path.sigma(ts).tolist()
    x0_prev, h_prev, x_prev = None, None, None
    for i, (t, s) in enumerate(time_pairs(ts, progress)):
        x0, _ = denoiser(x, t)
        if corrector and x_prev is not None:  # redo the step i-1 -> i with both end points known
            h = h_prev
            phi1 = -math.expm1(-h)  # 1 - e^{-h}
            phi2 = (h - phi1) / h if math.isfinite(h) else end_weight  # (h - 1 + e^{-h}) / h
            x = (sigma[i] / sigma[i - 1]) * x_prev + alpha[i] * (phi1 * x0_prev + phi2 * (x0 - x0_prev))
        if callback:
            callback(i, t, x, x0)
        if s == 0:
            return x0
        h = lam[i + 1] - lam[i]
        d = x0
        if x0_prev is not None:
            r = h_prev / h
            d = (1 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
        x_prev = x
        x = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


def dpmpp_2m_pc(denoiser: DenoiserLike, x: torch.Tensor, ts: torch.Tensor, noise: NoiseSource | None = None,
                callback: Callback | None = None, progress: bool = False, first_step: str = "end") -> torch.Tensor:
    """DPM-Solver++(2M) with the free second-order corrector (see `dpmpp_2m`)."""
    return dpmpp_2m(denoiser, x, ts, noise, callback, progress, corrector=True, first_step=first_step)



ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


def ode(denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor, noise: NoiseSource | None = None,
        callback: Callback | None = None, progress: bool = False, method: str = "dopri5", rtol: float = 1e-5,
        atol: float = 1e-5, per_sample: bool = True) -> torch.Tensor:
    """The probability-flow ODE to tolerance, then one denoising jump to t = 0 (the one step
    `callback` sees: the solver's own steps are internal).

    Adaptive methods integrate from ts[0] to the smallest positive time ts[-2]; fixed-grid
    methods (euler, midpoint, rk4, ...) step on ts[:-1] through torchdiffeq (Chen et al. 2018).
    An adaptive solver that controls one step size for a whole batch makes each sample depend
    on its batch-mates, so with `per_sample` (the default) dopri5 runs as `dopri5_per_sample`,
    one step size per sample in one batched net call, and the other adaptive methods solve each
    sample on its own (slow for large batches). `per_sample=False` hands the batch to torchdiffeq
    whole. The NFE is what the solver spends (`denoiser.nfe`: per sample, the most any needed).
    """
    from torchdiffeq._impl.odeint import SOLVERS

    if method not in SOLVERS:
        raise ArgumentError("method", f"unknown ODE solver {method!r}; choose from {', '.join(SOLVERS)}")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not 0 < tol < 1:
            raise ArgumentError(name, f"must lie in (0, 1), got {tol}")
    adaptive = method in ADAPTIVE_METHODS
    if adaptive and per_sample and method == "dopri5":
        x = dopri5_per_sample(denoiser, x, float(ts[0]), float(ts[-2]), rtol, atol)
    elif adaptive and per_sample and len(x) > 1:
        out, most = [], 0
        for i in trange(len(x), desc="ode", disable=not progress, leave=False):
            one = denoiser.rows(slice(i, i + 1))
            out.append(_torchdiffeq_solve(one, x[i:i + 1], ts, method, rtol, atol))
            most = max(most, one.nfe)
        denoiser.nfe += most
        x = torch.cat(out)
    else:
        x = _torchdiffeq_solve(denoiser, x, ts, method, rtol, atol)
    x0 = denoiser(x, float(ts[-2]))[0]
    if callback:
        callback(0, float(ts[-2]), x, x0)
    return x0


def _torchdiffeq_solve(denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor, method: str, rtol: float, atol: float):
    from torchdiffeq import odeint

    def velocity(t, y):
        return _velocity(denoiser, y, float(t))[0]

    grid = ts[[0, -2]] if method in ADAPTIVE_METHODS else ts[:-1]
    # adaptive solvers otherwise step past the end and interpolate back, evaluating at t < t_end
    options = {"jump_t": grid[-1:]} if method in ADAPTIVE_METHODS else None
    return odeint(velocity, x, grid, method=method, rtol=rtol, atol=atol, options=options)[-1]


# Dormand & Prince (1980) RK5(4)7FM: nodes, stages, 5th-order weights, and 5th minus 4th order weights
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_DP_A = ((1 / 5,),
         (3 / 40, 9 / 40),
         (44 / 45, -56 / 15, 32 / 9),
         (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
         (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656))
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
_DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


def dopri5_per_sample(denoiser: Denoiser, x: torch.Tensor, t0: float, t1: float, rtol: float, atol: float,
                      max_steps: int = 10_000) -> torch.Tensor:
    """Dormand-Prince 5(4) on the probability-flow ODE from t0 to t1 with a time and a step size
    per sample (Hairer, Norsett & Wanner, Solving ODEs I, II.4 and II.5): every stage is one
    batched net call at each sample's own time, and each sample accepts, rejects and resizes its
    steps by its own error alone (RMS of err / (atol + rtol max(|x|, |x_new|)) <= 1)."""
    n = len(x)
    x = x.clone()
    t = torch.full((n,), t0, dtype=torch.float64)
    nfe = torch.zeros(n, dtype=torch.long)

    def f(rows, y, tt):  # velocity of the rows `rows` at their own times tt [R]
        nfe[rows] += 1
        return _velocity(denoiser.rows(rows), y, tt)[0]

    def rms(v, scale):  # per-sample RMS [B], on the CPU with the other per-sample bookkeeping
        return (v / scale).flatten(1).square().mean(1).sqrt().double().cpu()

    # initial step per sample (Hairer et al., II.4): h = 0.01 |x| / |f|, refined by a trial Euler step
    everyone = torch.arange(n)
    k1 = f(everyone, x, t)
    scale = atol + rtol * x.abs()
    d0, d1 = rms(x, scale), rms(k1, scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    direction = -1.0 if t1 < t0 else 1.0
    h0 = torch.minimum(h0, torch.full_like(h0, abs(t1 - t0)))
    k_trial = f(everyone, x + _bcast(direction * h0, x) * k1, t + direction * h0)
    d2 = rms(k_trial - k1, scale) / h0
    h1 = torch.where(torch.maximum(d1, d2) <= 1e-15, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
                     (0.01 / torch.maximum(d1, d2)) ** (1 / 5))
    h = torch.minimum(100 * h0, h1)  # [B] step lengths, > 0
    for _ in range(max_steps):
        live = (t - t1).abs() > 1e-12 * max(1.0, abs(t1))
        if not live.any():
            break
        rows = live.nonzero()[:, 0]
        on_device = rows.to(x.device)
        y, tt, k = x[on_device], t[rows], [k1[on_device]]
        step = direction * torch.minimum(h[rows], (t1 - tt).abs())  # [R], never past t1
        hb = _bcast(step, y)
        for c, a in zip(_DP_C[1:], _DP_A):
            k.append(f(rows, y + hb * sum(ai * ki for ai, ki in zip(a, k)), tt + c * step))
        y_new = y + hb * sum(bi * ki for bi, ki in zip(_DP_B, k))
        k_last = f(rows, y_new, tt + step)  # first stage of the next step (FSAL)
        err = hb * sum(ei * ki for ei, ki in zip(_DP_E, k + [k_last]))
        ratio = rms(err, atol + rtol * torch.maximum(y.abs(), y_new.abs()))
        accept = ratio <= 1
        acc, kept = rows[accept].to(x.device), accept.nonzero()[:, 0].to(x.device)
        x[acc], k1[acc] = y_new[kept], k_last[kept]
        t[rows[accept]] = tt[accept] + step[accept]
        factor = (0.9 * ratio.clamp(min=1e-10) ** -0.2).clamp(0.2, 10.0)
        h[rows] = step.abs() * torch.where(accept, factor, factor.clamp(max=1.0))
    else:
        raise RuntimeError(f"dopri5 did not reach t = {t1} in {max_steps} steps; loosen rtol/atol")
    denoiser.nfe += int(nfe.max())
    return x
