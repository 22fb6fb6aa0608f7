"""UniPC (Zhao et al. 2023): a multistep predictor-corrector on the data prediction, exponential
in lambda = log(alpha / sigma), of any order, in the B(h) form of the paper's section 3.3.

Step s -> t of order p takes the denoised estimates m at s and at the p - 1 points before it. The
predictor (UniP-p) extrapolates them; once the net has been evaluated at the predicted point, the
corrector (UniC-p) redoes the step with that evaluation too, raising the order by one. The
evaluation is the one the next step needs anyway, so correcting costs no network evaluation.
As diffusers' `UniPCMultistepScheduler`, the orders rise from one over the first steps
(multistep warm-up) and fall to one on the last (`lower_order_final`): the final step is a
denoising jump to t = 0. Unlike it, bh1 stays finite on that step, and a first step from pure
noise (alpha = 0: flows, zero terminal SNR), where lambda starts at -inf, is predicted exactly
(first order) and corrected by a rule for the estimate between the two ends (`first_step`,
`genkit.samplers.base.FIRST_STEP_RULES`).
"""
from __future__ import annotations

import math

import torch

from genkit.registry import ArgumentError
from genkit.samplers.base import Callback, DenoiserLike, NoiseSource, first_step_weight, time_pairs

VARIANTS = ("bh1", "bh2")  # B(h) = h or e^h - 1 (the paper's eq. 11); bh2 is diffusers' default


def coefficients(h: float, ratios: list[float], variant: str) -> tuple[float, float, list[float], list[float]]:
    """For a step of log-SNR length h whose earlier points sit at `ratios` r_k = (lambda_k - lambda_s) / h
    (then r = 1 for the end point): (e^-h - 1, B(h), the predictor's and the corrector's weights of
    the scaled differences D_k = (m_k - m_s) / r_k), from the order conditions R rho = b."""
    order = len(ratios) + 1
    hh = -h  # data prediction integrates e^{-h}
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else h_phi_1
    rows, rhs, h_phi_k, factorial = [], [], h_phi_1 / hh - 1, 1
    nodes = [*ratios, 1.0]
    for i in range(1, order + 1):
        rows.append([r ** (i - 1) for r in nodes])
        rhs.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R, b = torch.tensor(rows, dtype=torch.float64), torch.tensor(rhs, dtype=torch.float64)
    if order == 1:
        predictor = []
    elif order == 2:
        predictor = [0.5]  # the paper's choice for UniP-2 (DPM-Solver++(2M)'s)
    else:
        predictor = torch.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
    corrector = [0.5] if order == 1 else torch.linalg.solve(R, b).tolist()
    return h_phi_1, b_h, predictor, corrector


def unipc(denoiser: DenoiserLike, x: torch.Tensor, ts: torch.Tensor, noise: NoiseSource | None = None,
          callback: Callback | None = None, progress: bool = False, order: int = 2, variant: str = "bh2",
          corrector: bool = True, first_step: str = "end") -> torch.Tensor:
    """UniPC-p (Zhao et al. 2023, algorithms 2 and 3 in the B(h) form) with `order` p in 1..3;
    `variant` bh1 or bh2; `corrector=False` leaves the predictor alone (UniP); `first_step`: how
    the corrector of a step from pure noise models the estimate (`FIRST_STEP_RULES`)."""
    if order not in (1, 2, 3):
        raise ArgumentError("order", f"must be 1, 2 or 3, got {order!r}")
    if variant not in VARIANTS:
        raise ArgumentError("variant", f"must be one of {', '.join(VARIANTS)}, got {variant!r}")
    end_weight = first_step_weight(first_step)
    path = denoiser.path
    lam = (0.5 * path.log_snr(ts)).tolist()  # -inf where alpha = 0, +inf at t = 0
    alpha, sigma = path.alpha(ts).tolist(), path.sigma(ts).tolist()
    steps = len(ts) - 1
    m: list[torch.Tensor] = []  # the denoised estimate at each grid point
    last = None  # the step just taken: (its start x, start index, e^-h - 1, B(h), corrector weights, D_k)
    for i, (t, s) in enumerate(time_pairs(ts, progress)):
        m.append(denoiser(x, t)[0])
        if i >= 3:
            m[i - 3] = None  # no step looks further back than order 3 needs
        if corrector and last is not None:
            x_s, j, h_phi_1, b_h, weights, diffs = last
            if h_phi_1 is None:  # from pure noise: the estimate's model (FIRST_STEP_RULES) weighs the two ends
                x = (sigma[i] / sigma[j]) * x_s + alpha[i] * (end_weight * m[i] + (1 - end_weight) * m[j])
            else:
                update = sum(w * d for w, d in zip(weights[:-1], diffs)) + weights[-1] * (m[i] - m[j])
                x = (sigma[i] / sigma[j]) * x_s - alpha[i] * (h_phi_1 * m[j] + b_h * update)
        if callback:
            callback(i, t, x, m[i])
        if s == 0:
            return m[i]
        h = lam[i + 1] - lam[i]
        if not math.isfinite(h):  # a first step from pure noise: first order, exactly
            last = (x, i, None, None, None, None)
            x = (sigma[i + 1] / sigma[i]) * x + alpha[i + 1] * m[i]
            continue
        p = min(order, i + 1, steps - i)  # warm-up, and lower order on the final steps
        while p > 1 and not math.isfinite(lam[i - p + 1]):  # earlier points at pure noise do not count
            p -= 1
        ratios = [(lam[i - k] - lam[i]) / h for k in range(1, p)]
        h_phi_1, b_h, predict, correct = coefficients(h, ratios, variant)
        diffs = [(m[i - k] - m[i]) / r for k, r in enumerate(ratios, start=1)]  # D_k
        last = (x, i, h_phi_1, b_h, correct, diffs)
        x = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * (h_phi_1 * m[i] + b_h * sum(
            (w * d for w, d in zip(predict, diffs)), torch.zeros_like(x)))
    return x
