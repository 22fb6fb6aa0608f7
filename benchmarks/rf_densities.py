"""SD3's timestep-density comparison (Esser et al. 2024, table 1) on MNIST.

The paper ranks rectified-flow timestep densities logit-normal(0, 1) first, then
logit-normal(1, 0.6), mode(1.29) and cosmap, with uniform well behind. Here each trains the
same RF-UNet recipe (configs/rf_unet_mnist.yaml) for `--steps` steps with the same seed, and
is scored by FID of 1000 samples (Euler at 5 and 20 steps) in genkit's MNIST feature space.

    python benchmarks/rf_densities.py --steps 900
"""
from __future__ import annotations

import json
from pathlib import Path

from harness import benchmark_parser, device, train, write_results

import genkit
from genkit.evaluation import Evaluator

DENSITIES = {
    "logit_normal(0, 1)": ["method.flow.time_density=logit_normal", "method.flow.logit_mean=0", "method.flow.logit_std=1"],
    "logit_normal(1, 0.6)": ["method.flow.time_density=logit_normal", "method.flow.logit_mean=1",
                             "method.flow.logit_std=0.6"],
    "mode(1.29)": ["method.flow.time_density=mode", "method.flow.mode_scale=1.29"],
    "cosmap": ["method.flow.time_density=cosmap"],
    "uniform": ["method.flow.time_density=uniform"],
}


def main() -> None:
    p = benchmark_parser("rf_densities", __doc__, workdir=True)
    p.add_argument("--steps", type=int, default=900)
    args = p.parse_args()
    evaluator = Evaluator(progress=False)
    floor = evaluator.floor(1000)["fid"]
    rows = []
    for name, overrides in DENSITIES.items():
        out = Path(args.workdir) / name.replace(" ", "").replace(",", "_").replace("(", "_").replace(")", "")
        model = genkit.load(train("rf_unet_mnist", out, f"train.max_steps={args.steps}", *overrides), device=device())
        labels = model.default_labels(1000)
        row = {"density": name, "steps": args.steps}
        for n in (5, 20):
            images = model.sample(1000, sampler="euler", steps=n, labels=labels, progress=False).images
            row[f"fid_euler_{n}"] = evaluator.score(images, labels)["fid"]
        rows.append(row)
        print(json.dumps(row))
    ranking = {f"by_fid_euler_{n}": [r["density"] for r in sorted(rows, key=lambda r: r[f"fid_euler_{n}"])]
               for n in (5, 20)}
    write_results("rf_densities", {"floor_fid": floor, "rows": rows, **ranking}, args.json)
    print(json.dumps(ranking, indent=2))


if __name__ == "__main__":
    main()
