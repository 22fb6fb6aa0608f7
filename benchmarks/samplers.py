"""Sampler accuracy per network evaluation, against diffusers' schedulers, on an exact oracle.

Data: a Gaussian mixture in 16 dimensions (8 components, std 0.05, means uniform in [-1, 1]),
shaped as 1x4x4 images, under DDPM's linear schedule (T = 1000); the denoiser is the exact
E[eps | x_t], so every error is the sampler's. Metric: sliced 2-Wasserstein distance (256 fixed
projections) between 8,000 samples and 8,000 exact draws; the floor is the same distance
between two exact sample sets. Every sampler runs with the defaults a user gets. genkit's
samplers also run on the VP SDE (Song et al. 2021: Euler-Maruyama, predictor-corrector) and on
the rectified-flow path (exact velocity); the ratios against diffusers use DDPM's path only.

    python benchmarks/samplers.py --json samplers.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from genkit.methods import make_betas
from genkit.oracles import GaussianMixture, sliced_wasserstein
from genkit.paths import DiscreteVPPath, FlowPath, VPPath
from genkit.samplers import DEFAULT_SCHEDULE, SAMPLERS, SCHEDULES, BatchNoise, Denoiser, DiffusersSampler

NFES = (5, 10, 20, 50)
N = 8000


def diffusers_schedulers() -> dict:
    """diffusers' schedulers with their defaults, each also with trailing spacing."""
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        HeunDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    out = {}
    for cls in (DDIMScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler, DPMSolverMultistepScheduler,
                UniPCMultistepScheduler):
        for spacing in (None, "trailing"):
            kwargs = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
            if cls is DDIMScheduler:
                kwargs.update(clip_sample=False, set_alpha_to_one=True)
            if spacing:
                kwargs["timestep_spacing"] = spacing
            name = cls.__name__.replace("Scheduler", "") + (f"[{spacing}]" if spacing else "")
            out[name] = lambda cls=cls, kwargs=kwargs: cls(**kwargs)
    return out


def steps_for(nfe: int, second_order_per_step: bool) -> int:
    """Steps that spend `nfe` evaluations: Heun-type samplers spend 2 per step but 1 on the last."""
    return (nfe + 1) // 2 if second_order_per_step else nfe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    path = DiscreteVPPath(make_betas("linear", 1000))
    gmm = GaussianMixture.random(8, 16, 0.05, seed=0)
    data = gmm.sample(N, torch.Generator().manual_seed(1)).float().reshape(N, 1, 4, 4)
    floor = sliced_wasserstein(data, gmm.sample(N, torch.Generator().manual_seed(2)).float())
    start = torch.randn(N, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    rows = []

    def record(sampler, library, nfe, out, target_nfe, path_name="ddpm"):
        row = {"sampler": sampler, "library": library, "path": path_name, "nfe": nfe, "target_nfe": target_nfe,
               "sw2": round(sliced_wasserstein(out, data), 5)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    # genkit's samplers on DDPM's discrete path, on the VP SDE and on the rectified-flow path
    paths = {"ddpm": (path, "eps", list(SAMPLERS)),
             "vp_sde": (VPPath(), "eps", ["em", "pc", "ddim", "dpmpp_2m_pc", "ode"]),
             "flow": (FlowPath(), "velocity", ["euler", "heun", "dpmpp_2m", "dpmpp_2m_pc", "ode"])}
    for path_name, (p, prediction, names) in paths.items():
        for name in names:
            for target in NFES:
                denoiser = Denoiser(gmm.as_net(p, prediction), p, prediction)
                if name == "ode":  # adaptive dopri5 spends what the tolerance needs: a fixed-grid rk4 row instead
                    ts = SCHEDULES["log_snr"](p, max(1, (target - 1) // 4) + 1)
                    out = SAMPLERS["ode"](denoiser, start.clone(), ts, method="rk4")
                    record("ode[rk4]", "genkit", denoiser.nfe, out, target, path_name)
                    continue
                steps = target // 2 if name == "pc" else steps_for(target, name == "heun")
                ts = SCHEDULES[DEFAULT_SCHEDULE[name]](p, steps)
                out = SAMPLERS[name](denoiser, start.clone(), ts, BatchNoise(0))
                record(name, "genkit", denoiser.nfe, out, target, path_name)

    for name, make in diffusers_schedulers().items():
        for target in NFES:
            sched = make()
            denoiser = Denoiser(gmm.as_net(path), path, "eps")
            steps = steps_for(target, name.startswith("HeunDiscrete"))
            ts = torch.zeros(steps + 1)  # only its length matters to the adapter
            out = DiffusersSampler(sched, seed=0)(denoiser, start.clone(), ts)
            record(name, "diffusers", denoiser.nfe, out, target)

    def best(library, target):
        return min(r["sw2"] for r in rows if r["library"] == library and r["target_nfe"] == target
                   and r["nfe"] <= target and r["path"] == "ddpm")

    result = {"floor": round(floor, 5), "rows": rows,
              "best_ratio_nfe10": round(best("genkit", 10) / best("diffusers", 10), 3),
              "best_ratio_nfe5": round(best("genkit", 5) / best("diffusers", 5), 3)}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
