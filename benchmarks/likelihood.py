"""Probability-flow ODE likelihood against the closed form.

Data N(mu, s^2 I) in 64 dimensions (mu = 0.3, s = 0.5) has an exact score on every path, so the
only errors left are the solver's, the divergence estimator's and the prior's (the path's
N(0, alpha^2 + sigma^2) at t = 1). For VP and VE, bits/dim of 64 data points by dopri5 at
rtol = atol = 1e-5 with the exact divergence, and with the Hutchinson estimator (Rademacher
probes) averaged over `--repeats` probes per point; against -log2 N(x; mu, s^2) / 64.

Then held-out data, with the error split by source (the mixture oracle gives every term in
closed form): a 2-D mixture of 3 components (std 0.15), a 16-D mixture of 8 (std 0.05) and an 8-D
anisotropic Gaussian (axis stds 0.3 * 4^u), 64 points each, exact divergence, dopri5 at 1e-5:
    smoothing = log p_0(x) - log p_tmin(x)        (the ODE starts at t_min, not at the data)
    prior     = exact marginal at t = 1 - the path's N(0, alpha^2 + sigma^2) at x_T
    solver    = log p_tmin(x) - the estimate with the exact prior
so that the total error of the default estimate is their sum; all in bits/dim, as means over the
points (a data set's likelihood) and, for the total, as the mean absolute error per point. The Hutchinson
spread is the standard deviation over 8 Rademacher probes of one point's estimate, in nats.

    python benchmarks/likelihood.py
"""
from __future__ import annotations

import json
import math

import torch
from harness import benchmark_parser, write_results

from genkit.likelihood import log_likelihood, smoothing_std
from genkit.oracles import GaussianMixture
from genkit.paths import SubVPPath, VEPath, VPPath
from genkit.samplers import Denoiser

DIM, MEAN, STD, POINTS = 64, 0.3, 0.5, 64


def bpd(log_p: torch.Tensor) -> float:
    return float(-log_p.mean() / (DIM * math.log(2)))


HELD_OUT = {  # name -> the data, a GaussianMixture
    "mixture2d_k3": lambda: GaussianMixture(torch.tensor([[-0.6, 0.3], [0.5, 0.5], [0.1, -0.7]]), std=0.15),
    "mixture16d_k8": lambda: GaussianMixture.random(8, 16, 0.05, seed=0),
    "aniso_gaussian8d": lambda: GaussianMixture.random(1, 8, 0.3, seed=4, anisotropy=4.0),
}


def error_sources(points: int = 64, probes: int = 8, t_min: float = 1e-5) -> list[dict]:
    """The default estimate's error on held-out mixtures, split into smoothing, prior and solver
    (signed, in bits/dim: true minus estimated, so positive means the likelihood is underestimated)."""
    out = []
    for name, make in HELD_OUT.items():
        data = make()
        x = data.sample(points, torch.Generator().manual_seed(0))
        to_bpd = 1 / (x.shape[1] * math.log(2))
        one = torch.ones(1, dtype=torch.float64)
        for sde, path in [("vp", VPPath()), ("subvp", SubVPPath()), ("ve", VEPath(sigma_max=50.0))]:
            ends = {}

            def exact_prior(x_end, path=path, data=data):
                ends["x_end"] = x_end
                return data.log_prob(x_end, one, path)
            denoiser = Denoiser(data.as_net(path), path, "eps")
            with_exact_prior = log_likelihood(denoiser, x, estimator="exact", rtol=1e-5, atol=1e-5, t_min=t_min,
                                              prior_logp=exact_prior)
            default = with_exact_prior - data.log_prob(ends["x_end"], one, path) + path.prior_logp(ends["x_end"])
            true0, true_tmin = data.log_prob(x), data.log_prob(x, torch.tensor(t_min), path)
            row = {"data": name, "sde": sde, "dim": x.shape[1], "nfe": denoiser.nfe,
                   "smoothing": float((true0 - true_tmin).mean() * to_bpd),
                   "prior": float((with_exact_prior - default).mean() * to_bpd),
                   "solver": float((true_tmin - with_exact_prior).mean() * to_bpd),
                   "total": float((true0 - default).mean() * to_bpd),
                   "total_abs_per_point": float((true0 - default).abs().mean() * to_bpd)}
            denoiser = Denoiser(data.as_net(path), path, "eps")
            default_call = log_likelihood(denoiser, x)  # every option at its default
            row["default_abs_err_max"] = float((true0 - default_call).abs().max() * to_bpd)
            row["default_nfe"] = denoiser.nfe
            row["smoothing_std"] = smoothing_std(path, t_min)
            row["smoothing_abs_max"] = float((true0 - true_tmin).abs().max() * to_bpd)
            denoiser = Denoiser(data.as_net(path), path, "eps")
            repeated = x[:16].repeat_interleave(probes, 0)
            hutch = log_likelihood(denoiser, repeated, estimator="hutchinson", probes=1, rtol=1e-5, atol=1e-5,
                                   t_min=t_min, generator=torch.Generator().manual_seed(1)).view(16, probes)
            row["hutchinson_spread_nats"] = float(hutch.std(1).mean())
            out.append(row)
            print(json.dumps(row), flush=True)
    return out


def main() -> None:
    p = benchmark_parser("likelihood", __doc__)
    p.add_argument("--repeats", type=int, default=20, help="Hutchinson probes per data point")
    args = p.parse_args()
    data = GaussianMixture(torch.full((1, DIM), MEAN, dtype=torch.float64), STD)
    x = data.sample(POINTS, torch.Generator().manual_seed(0))
    true = bpd(torch.distributions.Normal(MEAN, STD).log_prob(x).sum(1))
    rows = []
    for name, path in [("vp", VPPath()), ("subvp", SubVPPath()), ("ve", VEPath(sigma_max=50.0))]:
        for estimator in ("exact", "hutchinson"):
            denoiser = Denoiser(data.as_net(path), path, "eps")
            points = x if estimator == "exact" else x.repeat_interleave(args.repeats, 0)
            log_p = log_likelihood(denoiser, points, estimator=estimator, probes=1, rtol=1e-5, atol=1e-5,
                                   generator=torch.Generator().manual_seed(1))
            if estimator == "hutchinson":
                log_p = log_p.view(POINTS, args.repeats).mean(1)
            value = bpd(log_p)
            rows.append({"sde": name, "estimator": estimator, "bpd": value, "bpd_true": true,
                         "abs_err": abs(value - true), "nfe": denoiser.nfe})
            print(f"{name:6s} {estimator:10s} bpd {value:.5f}  true {true:.5f}  |err| {abs(value - true):.5f}  "
                  f"NFE {denoiser.nfe}")
    exact = [r["abs_err"] for r in rows if r["estimator"] == "exact"]
    held_out = error_sources()
    result = {"dim": DIM, "points": POINTS, "hutchinson_repeats": args.repeats, "rows": rows,
              "max_abs_err_exact": max(exact), "held_out": held_out,
              "max_total_err_held_out": max(abs(r["total"]) for r in held_out),
              "max_total_abs_per_point_held_out": max(r["total_abs_per_point"] for r in held_out),
              # the figure: the default call's worst point, VP and sub-VP (VE: its smoothing, stated apart)
              "max_abs_err_default": max(r["default_abs_err_max"] for r in held_out if r["sde"] != "ve"),
              "ve_max_abs_err_default": max(r["default_abs_err_max"] for r in held_out if r["sde"] == "ve"),
              "ve_smoothing_abs_max": max(r["smoothing_abs_max"] for r in held_out if r["sde"] == "ve"),
              "ve_smoothing_std": next(r["smoothing_std"] for r in held_out if r["sde"] == "ve")}
    write_results("likelihood", result, args.json)
    print(f"max_abs_err_exact = {max(exact):.5f}; the default call's worst point (VP, sub-VP): "
          f"{result['max_abs_err_default']:.5f} bits/dim; VE: {result['ve_max_abs_err_default']:.5f}, of which "
          f"smoothing by N(0, {result['ve_smoothing_std']:.3g}^2): up to {result['ve_smoothing_abs_max']:.5f}")


if __name__ == "__main__":
    main()
