"""Routes to one network evaluation on MNIST, each trained within a stated CPU budget: FID at 1, 2
and 4 evaluations beside the real-data floor measured in the same run.

Routes (`--routes`, each trained from scratch in its own process):
  rf              the rectified-flow recipe, sampled with Euler (the baseline every route must beat)
  meanflow        MeanFlow with the exact JVP (torch.func.jvp; fp32: forward-mode AD has no bf16
                  autocast on the CPU)
  meanflow_fd     MeanFlow with a central-difference JVP (step 0.02), in bf16 autocast
  consistency     consistency training from scratch (iCT on the flow path), multistep consistency sampling
  reflow          a 2-rectified flow: the rf route's model draws --pairs pairs (counted in the
                  budget), then trains on them from its weights for a second budget
  distill         consistency distillation of the rf route's model (counted in the budget), the
                  student starting from its weights (configs/consistency_distill_unet_mnist.yaml)
  instaflow       the reflow route, then InstaFlow's one-step distillation: the 2-rectified flow
                  draws --pairs pairs of its own (counted), on which its weights learn the flow
                  loss at t = 1 for a third budget
  instaflow_rf    InstaFlow's one-step distillation straight from the rf route's pairs (no reflow
                  stage): the rf route's weights learn the flow loss at t = 1 for a second budget

Pairs are drawn with the drawing model's own sampler and steps (its config's `sample` section) in
the hardware's half precision, the deterministic probability-flow solve that `model.sample()` runs.

Each training run is given `--minutes`: its step count is set from a short calibration run of the
same recipe (the calibration is not counted), so that its learning-rate schedule completes.

    python benchmarks/one_step.py --minutes 10 --routes rf meanflow meanflow_fd
    python benchmarks/one_step.py --minutes 10 --routes rf distill reflow instaflow   # teacher, pairs counted
    python benchmarks/one_step.py --plot benchmarks/results/one_step*.json   # FID against NFE, log scale
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from harness import benchmark_parser, device, steps_per_second, train, write_results

import genkit
from genkit.checkpoint import resolve_checkpoint
from genkit.evaluation import Evaluator
from genkit.reflow import generate_pairs

NFES = (1, 2, 4)
ROUTES = {  # name -> (recipe, overrides, sampler)
    "rf": ("rf_unet_mnist", [], "euler"),
    "meanflow": ("meanflow_unet_mnist", ["method.meanflow.jvp=forward", "train.mixed_precision=no"], "meanflow"),
    "meanflow_fd": ("meanflow_unet_mnist", ["method.meanflow.jvp=difference", "method.meanflow.jvp_step=0.02",
                                            "train.mixed_precision=auto"], "meanflow"),
    "consistency": ("consistency_unet_mnist", [], "consistency"),
}
COMPOSED = ("reflow", "distill", "instaflow", "instaflow_rf")  # routes built on the rf route's model (see main)


def train_for(recipe: str, out: Path, minutes: float, *overrides: str) -> tuple[Path, dict]:
    """Train `recipe` for about `minutes` of wall time; (run, what it cost)."""
    rate = steps_per_second(recipe, out.parent / f"calibration-{out.name}", *overrides)
    steps = max(50, int(rate * 60 * minutes))
    started = time.perf_counter()
    run = train(recipe, out, f"train.max_steps={steps}", f"train.warmup_steps={min(100, steps // 10)}", *overrides)
    return run, {"steps": steps, "train_minutes": (time.perf_counter() - started) / 60}


def score(model, sampler: str, evaluator: Evaluator, num: int) -> dict:
    labels = model.default_labels(num)
    row = {}
    for nfe in NFES:
        drawn = model.sample(num, seed=0, sampler=sampler, steps=nfe, schedule="uniform", labels=labels,
                             progress=False)
        assert drawn.nfe == nfe, (sampler, nfe, drawn.nfe)
        row[f"fid_nfe{nfe}"] = evaluator.score(drawn.images, labels)["fid"]
    return row


def plot(results: list[Path], out: Path) -> Path:
    """FID against network evaluations for every route in `results`, with the real-data floor."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for path in results:
        result = json.loads(Path(path).read_text())
        for row in result["rows"]:
            ax.plot(NFES, [row[f"fid_nfe{n}"] for n in NFES], marker="o",
                    label=f"{row['route']} ({row['train_minutes']:.0f} min)")
    ax.axhline(result["floor_fid"], color="grey", linestyle="--", label="real data (floor)")
    ax.set(xscale="log", yscale="log")
    ax.set_xticks(NFES, [str(n) for n in NFES], minor=False)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set(xlabel="network evaluations per image", ylabel="FID (MNIST features, 1000 samples)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def main() -> None:
    p = benchmark_parser("one_step", __doc__, workdir=True)
    p.add_argument("--plot", nargs="+", metavar="RESULTS", help="only draw docs/one_step.png from results files")
    p.add_argument("--routes", nargs="+", default=["rf", "meanflow", "meanflow_fd"],
                   choices=[*ROUTES, *COMPOSED])
    p.add_argument("--minutes", type=float, default=10.0, help="training budget per run (default: 10)")
    p.add_argument("--num", type=int, default=1000, help="samples per FID (default: 1000)")
    p.add_argument("--pairs", type=int, default=10000, help="pairs the reflow route draws (default: 10000)")
    args = p.parse_args()
    if args.plot:
        print(f"wrote {plot(args.plot, Path(__file__).resolve().parent.parent / 'docs' / 'one_step.png')}")
        return
    work = Path(args.workdir)
    evaluator = Evaluator(progress=False)
    floor = evaluator.floor(args.num)["fid"]
    rows, trained = [], {}

    def rf():  # the teacher of the distill and reflow routes, trained once
        if "rf" not in trained:
            trained["rf"] = train_for("rf_unet_mnist", work / "rf", args.minutes)
        return trained["rf"]

    def pairs(model_run: Path, out: Path) -> tuple[Path, float]:
        started = time.perf_counter()
        model = genkit.load(model_run, device=device())
        drawn = generate_pairs(model, out, args.pairs, steps=model.cfg.sample.steps, sampler=model.cfg.sample.sampler,
                               batch_size=500, precision="auto")
        return drawn, (time.perf_counter() - started) / 60

    def rf_pairs():  # the rf route's pairs, drawn once for the reflow and instaflow_rf routes
        if "pairs" not in trained:
            trained["pairs"] = pairs(rf()[0], work / "pairs")
        return trained["pairs"]

    def distil_at_noise_end(start: Path, drawn: Path, out: Path) -> tuple[Path, dict]:
        """InstaFlow's one-step distillation: `start`'s weights learn the flow loss at t = 1 on `drawn`."""
        return train_for("rf_unet_mnist", out, args.minutes, f"data.path={drawn}",
                         f"train.init_from={resolve_checkpoint(start)}", "train.lr=5e-4",
                         "method.flow.time_density=noise_end")

    def reflow():  # the 2-rectified flow, with what it cost in all
        if "reflow" not in trained:
            first, first_cost = rf()
            drawn, pair_minutes = rf_pairs()
            run, cost = train_for("rf_unet_mnist", work / "reflow", args.minutes, f"data.path={drawn}",
                                  f"train.init_from={resolve_checkpoint(first)}", "train.lr=5e-4")
            trained["reflow"] = run, {"steps": cost["steps"], "pair_minutes": pair_minutes,
                                      "train_minutes": first_cost["train_minutes"] + pair_minutes + cost["train_minutes"]}
        return trained["reflow"]

    for route in args.routes:
        sampler = "euler"
        if route == "rf":
            run, cost = rf()
        elif route == "reflow":
            run, cost = reflow()
        elif route == "distill":
            teacher, teacher_cost = rf()
            run, cost = train_for("consistency_distill_unet_mnist", work / route, args.minutes,
                                  f"method.consistency.teacher={teacher}", f"train.init_from={teacher}")
            cost = {"steps": cost["steps"], "teacher_minutes": teacher_cost["train_minutes"],
                    "train_minutes": teacher_cost["train_minutes"] + cost["train_minutes"]}
            sampler = "consistency"
        elif route == "instaflow":
            second, second_cost = reflow()
            drawn, pair_minutes = pairs(second, work / "pairs-2")
            run, cost = distil_at_noise_end(second, drawn, work / route)
            cost = {"steps": cost["steps"], "pair_minutes": second_cost["pair_minutes"] + pair_minutes,
                    "train_minutes": second_cost["train_minutes"] + pair_minutes + cost["train_minutes"]}
        elif route == "instaflow_rf":
            first, first_cost = rf()
            drawn, pair_minutes = rf_pairs()
            run, cost = distil_at_noise_end(first, drawn, work / route)
            cost = {"steps": cost["steps"], "pair_minutes": pair_minutes,
                    "train_minutes": first_cost["train_minutes"] + pair_minutes + cost["train_minutes"]}
        else:
            recipe, overrides, sampler = ROUTES[route]
            run, cost = train_for(recipe, work / route, args.minutes, *overrides)
        row = {"route": route, **cost, **score(genkit.load(run, device=device()), sampler, evaluator, args.num)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = min(rows, key=lambda r: r["fid_nfe1"])
    result = {"minutes_per_run": args.minutes, "num": args.num, "floor_fid": floor, "pairs": args.pairs,
              "pairs_drawn_with": "the drawing model's sample config (sampler, steps), precision auto", "rows": rows,
              "best_one_step": {"route": best["route"], "fid": best["fid_nfe1"], "ratio_to_floor": best["fid_nfe1"] / floor}}
    print(json.dumps(result["best_one_step"]))
    write_results("one_step", result, args.json)


if __name__ == "__main__":
    main()
