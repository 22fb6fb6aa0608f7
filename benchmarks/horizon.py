"""How far more training moves a recipe's FID: what a quality goal would cost in training.

`benchmarks/quality.py` trains each recipe for its 10 CPU-minutes on MNIST. Here one recipe
trains on one data set for multiples (`--scales`) of the steps its MNIST run took there
(`--steps-from`, quality.json's training entries): the LR schedule's horizon grows with it, as a
longer budget would give. Each run is scored as quality.py scores its rows (the recipe's
candidates at NFE 5, 10 and 20 at its own guidance, `--num` samples, the data set's feature net,
the real-data floor of the same run). Results are merged into `benchmarks/results/horizon.json`
under `DATA/RECIPE`, one entry per scale with its steps, training seconds, best FID at NFE <= 20
and that FID over the floor.

    python benchmarks/horizon.py --data fashion_mnist --recipe RF-UNet --scales 3
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from harness import STARTED_AT, benchmark_parser, device, machine, write_results
from quality import BUNDLED_DATA, RECIPES, data_path, eval_recipe, steps_taken, train_recipe

from genkit.config import DataConfig
from genkit.evaluation import Evaluator


def main() -> None:
    p = benchmark_parser("horizon", __doc__, workdir=True)
    p.add_argument("--recipe", default="RF-UNet", choices=list(RECIPES), help="default: %(default)s")
    p.add_argument("--data", default="fashion_mnist", help=f"{' or '.join(BUNDLED_DATA)} or a path (default: %(default)s)")
    p.add_argument("--scales", type=float, nargs="+", default=[3.0],
                   help="multiples of the MNIST run's steps to train for (default: %(default)s)")
    p.add_argument("--steps-from", metavar="JSON", default="benchmarks/results/quality.json",
                   help="the results file whose MNIST training entry gives the recipe's steps (default: %(default)s)")
    p.add_argument("--vae-minutes", type=float, default=20.0,
                   help="training wall time of the latent recipe's autoencoder (default: %(default)s)")
    p.add_argument("--num", type=int, default=1000, help="samples per FID (default: %(default)s)")
    p.add_argument("--device", default=device(), help="for sampling (default: %(default)s)")
    args = p.parse_args()
    if min(args.scales) <= 0 or args.num < 10:
        p.error("need --scales > 0 and --num >= 10")
    base = steps_taken(args.steps_from, [args.recipe])[args.recipe]
    evaluator = Evaluator(DataConfig(path=data_path(args.data)), progress=False)
    floor = evaluator.floor(args.num)["fid"]
    path = Path(args.json)
    results = json.loads(path.read_text()) if path.is_file() else {}
    runs = results.setdefault("runs", {}).setdefault(f"{Path(args.data).name}/{args.recipe}", {})
    for scale in args.scales:
        workdir = Path(args.workdir) / f"{Path(args.data).name}-x{scale:g}"
        started = time.perf_counter()
        trained = train_recipe(args.recipe, workdir, 0, args.vae_minutes, args.data,  # no budget: steps
                               steps=round(base * scale))
        rows = eval_recipe(args.recipe, workdir, evaluator, args.num, args.device)
        best = min(rows, key=lambda r: r["fid"])
        runs[f"{scale:g}"] = {"scale": scale, "steps": trained["steps"], "mnist_steps": base,
                              "train_seconds": trained["train_seconds"], "floor_fid": floor,
                              "best_fid": best["fid"], "best_nfe": best["nfe"], "best_sampler": best["sampler"],
                              "best_over_floor": round(best["fid"] / floor, 3),
                              "fid_by_nfe": {r["nfe"]: r["fid"] for r in rows},
                              "commit": STARTED_AT, "machine": machine(),
                              "wall_minutes": round((time.perf_counter() - started) / 60, 1)}
        write_results("horizon", {k: v for k, v in results.items() if k not in ("commit", "machine")}, path)
        print(json.dumps(runs[f"{scale:g}"], indent=2))


if __name__ == "__main__":
    main()
