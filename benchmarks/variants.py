"""Which change to a recipe pays at a fixed CPU budget: train the recipe and each variant of it
for the same minutes, then score each at NFE <= 20.

Each run's LR horizon is the steps that fit its budget (`harness.train_for_minutes`). Scored: the
FID of `--num` class-conditional samples in the MNIST classifier's feature space with the
recipe's own sampler at 5, 10 and 20 network evaluations, beside the real-data floor measured in
the same run. A variant is `name:key=value,key=value`.

    python benchmarks/variants.py --recipe rf_dit_mnist --minutes 3 \\
        --variant "patch2:model.dit.patch_size=2,model.dit.hidden_size=128" --variant "lr3e-4:train.lr=3e-4"
"""
from __future__ import annotations

from pathlib import Path

import torch
from harness import benchmark_parser, fit_grid, steps_for_sampler, train_for_minutes, write_results
from tqdm.auto import tqdm

import genkit
from genkit.evaluation import Evaluator

NFES = (5, 10, 20)


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, overrides = text.partition(":")
    if not sep or not name:
        raise SystemExit(f"--variant: expected name:key=value,..., got {text!r}")
    return name, [o for o in overrides.split(",") if o]


def score(run: Path, evaluator: Evaluator, num: int) -> dict:
    """FID per NFE with the run's own sampler (Heun spends 2 evaluations a step, 1 on the last)."""
    model = genkit.load(run)
    labels, sampler = model.default_labels(num), model.cfg.sample.sampler
    fids = {}
    for nfe in NFES:
        fit_grid(model, sampler, steps_for_sampler(sampler, nfe))
        drawn = model.sample(num, seed=0, steps=steps_for_sampler(sampler, nfe), labels=labels, progress=False,
                             precision="auto")
        fids[f"{sampler}_nfe{drawn.nfe}"] = evaluator.score(drawn.images, labels)["fid"]
    return fids


def main() -> None:
    p = benchmark_parser("variants", __doc__, workdir=True)
    p.add_argument("--recipe", required=True, help="a recipe name (configs/NAME.yaml)")
    p.add_argument("--minutes", type=float, default=3.0, help="training minutes per run (default: %(default)s)")
    p.add_argument("--variant", action="append", default=[], help="name:key=value,... (repeatable)")
    p.add_argument("--num", type=int, default=1000, help="samples per FID (default: %(default)s)")
    p.set_defaults(json=None, workdir=None)  # default: benchmarks/results/variants_RECIPE.json, runs/variants/RECIPE
    args = p.parse_args()
    name_of_results = f"variants_{args.recipe}"
    workdir = Path(args.workdir or f"runs/variants/{args.recipe}")
    torch.manual_seed(0)
    variants = [("baseline", [])] + [parse_variant(v) for v in args.variant]
    evaluator = Evaluator(progress=False)
    floor = evaluator.floor(args.num)["fid"]
    rows = []
    for name, overrides in variants:
        run = workdir / name
        training = train_for_minutes(args.recipe, run, args.minutes, "train.report_to=none", *overrides)
        fids = score(run, evaluator, args.num)
        rows.append({"variant": name, "overrides": overrides, **training, "fid": fids, "best_fid": min(fids.values())})
        shown = "  ".join(f"{k} {v:.2f}" for k, v in fids.items())
        tqdm.write(f"{name:16s} {training['steps']:5d} steps  FID {shown}  (floor {floor:.2f})")
        write_results(name_of_results, {"recipe": args.recipe, "minutes": args.minutes, "num": args.num, "floor_fid": floor,
                                   "rows": rows}, args.json)


if __name__ == "__main__":
    main()
