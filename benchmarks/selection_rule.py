"""How `fitted` chooses between its contenders, against what the choice should have been.

`fitted` solves a model's pilot draws with each contender (its registered `contenders`, each on its own
fitted grid) and keeps the one whose end points lie nearest the pilot's reference by per-sample
RMS. On data with well-separated modes that distance is dominated by the few draws that end in
another mode, and says little about the distribution drawn. This benchmark measures, on
64-dimensional mixtures of 16 anisotropic components with unequal weights (seeds never used to
choose anything), on DDPM's linear/eps and cosine/v paths at 5 and 10 steps:

- on the pilot's draws: each contender's RMS (today's rule) and sliced W2 to the reference
  (a distance between distributions: 256 projections);
- on 3000 fresh draws: each contender's sliced W2 to the exact ODE's image of the same noise
  (dpmpp_2m_pc on 400 log-SNR steps), the distance the choice should minimise.

A cell counts as right for a rule when the contender it picks has the lower fresh-draw distance.

    python benchmarks/selection_rule.py
"""
from __future__ import annotations

import torch
from harness import benchmark_parser, write_results

from genkit.methods import make_betas
from genkit.oracles import GaussianMixture, sliced_wasserstein
from genkit.paths import DiscreteVPPath
from genkit.samplers import SAMPLERS, AdaptiveGrid, Denoiser
from genkit.samplers.adaptive import pilot_draws
from genkit.samplers.schedules import log_snr

SEEDS, DIM, STEPS, FRESH, PROJECTIONS = (31, 32, 33), 64, (5, 10), 3000, 256
PATHS = {"ddpm_linear_eps": ("linear", "eps"), "ddpm_cosine_v": ("cosine", "v")}


def cell(mixture: GaussianMixture, schedule: str, prediction: str) -> list[dict]:
    """One row per (steps, contender): its pilot RMS, pilot sliced W2 and fresh sliced W2."""
    path = DiscreteVPPath(make_betas(schedule, 1000))
    denoiser = Denoiser(mixture.as_net(path, prediction), path, prediction)
    pilot = torch.randn(pilot_draws(DIM), DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = AdaptiveGrid.calibrate(denoiser, pilot)
    fresh = torch.randn(FRESH, DIM, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    fine = log_snr(path, 400)
    exact = SAMPLERS["dpmpp_2m_pc"].build(denoiser, fresh * path.prior_std(float(fine[0])), fine)
    rows = []
    for steps in STEPS:
        for name, options in SAMPLERS["fitted"].extra["contenders"]:
            sampler = SAMPLERS[name].build
            ts, chosen = grid.fitted(sampler, steps, **options)
            on_pilot = sampler(denoiser, pilot * path.prior_std(float(ts[0])), ts, None, **chosen)
            on_fresh = sampler(denoiser, fresh * path.prior_std(float(ts[0])), ts, None, **chosen)
            rows.append({"steps": steps, "contender": name,
                         "pilot_rms": float((on_pilot - grid.reference).square().mean().sqrt()),
                         "pilot_sliced_w2": sliced_wasserstein(on_pilot, grid.reference, PROJECTIONS, 0),
                         "fresh_sliced_w2": sliced_wasserstein(on_fresh, exact, PROJECTIONS, 0)})
    return rows


def main() -> None:
    args = benchmark_parser("selection_rule", __doc__).parse_args()
    cells, right = [], {"pilot_rms": 0, "pilot_sliced_w2": 0}
    for seed in SEEDS:
        mixture = GaussianMixture.random(16, DIM, 0.1, seed=seed, anisotropy=4.0, unequal_weights=True)
        for path_name, (schedule, prediction) in PATHS.items():
            rows = cell(mixture, schedule, prediction)
            for steps in STEPS:
                pair = [r for r in rows if r["steps"] == steps]
                best = min(pair, key=lambda r: r["fresh_sliced_w2"])["contender"]
                picks = {rule: min(pair, key=lambda r: r[rule])["contender"] for rule in right}
                for rule, pick in picks.items():
                    right[rule] += pick == best
                cells.append({"seed": seed, "path": path_name, "steps": steps, "rows": pair, "fresh_best": best,
                              "picks": picks})
                print(seed, path_name, steps, "fresh best:", best, "picks:", picks, flush=True)
    result = {"dim": DIM, "fresh_draws": FRESH, "pilot_draws": pilot_draws(DIM), "projections": PROJECTIONS,
              "cells": cells, "right_of": len(cells), "right_pilot_rms": right["pilot_rms"],
              "right_pilot_sliced_w2": right["pilot_sliced_w2"]}
    write_results("selection_rule", result, args.json)
    print(f"right choices of {len(cells)} cells: per-sample RMS {right['pilot_rms']}, "
          f"sliced W2 {right['pilot_sliced_w2']}")


if __name__ == "__main__":
    main()
