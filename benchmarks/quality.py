"""Sample quality at a fixed CPU training budget: genkit's recipes against a diffusers baseline.

Each recipe trains with its default config (or a named variant of it, `RECIPES`) for
`--budget-minutes` of wall time on this machine (the LR schedule's horizon is the number of
steps that fit, measured in a short calibration run first; data loading and calibration are not
counted). The latent RF-DiT first needs an autoencoder: `vae_mnist` trains for `--vae-minutes`,
reported beside the budget, and the data set's encoding is not counted either. Then, for NFE
5, 10 and 20, every candidate (sampler, grid) of `CANDIDATES` draws `--num` class-conditional
samples (classes in turn) at the recipe's classifier-free guidance weight and interval (as its
file gives them now: sampling settings do not change training), and the best FID in the data
set's feature net (the MNIST classifier for MNIST) is reported with every candidate's, beside the
real-data floor: as many real training images scored the same way. `--guidance` tries other weights as well (within
the recipe's interval): the best of them is reported beside the recipe's (`other_guidance`), not in
its place, since the rows measure the recipes as they are.

`--data` trains and scores the same recipes on another data set with only `data.path` changed
(the recipes were tuned on MNIST). `--steps-from` trains each recipe for the steps its run of
the same name in an earlier results file fit in its budget, instead of timing it: the same
training whatever else the machine runs, only slower. Rows carry their `data` and `floor_fid`;
a run on another data set adds its rows to `--json`, keeping the rest. `--update` re-runs some
recipes and keeps the others' rows: its rows name their commit, its training entries their
commit and CPU, and `measured` keeps naming the run the other rows came from.

The diffusers rows are the fair baseline of `benchmarks/diffusers_models.py` (diffusers'
UNet2DModel trained as its docs recommend for few-step sampling, sampled by its best scheduler
per NFE), read from its results file with the commit, machine and floor of its own run.

    python benchmarks/quality.py --budget-minutes 10 --plot docs/quality.png
    python benchmarks/quality.py --phase train ...   # train only (the timed part)
    python benchmarks/quality.py --phase eval ...    # sample and score runs trained before
    python benchmarks/quality.py --data fashion_mnist --steps-from benchmarks/results/quality.json \
        --recipes RF-UNet DDPM-UNet VP-SDE-UNet RF-DiT
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from harness import (PATCH_2_UNET, STARTED_AT, benchmark_parser, fit_grid, machine, recipe_path,
                     steps_for_sampler, train_for_minutes, train_for_steps, write_results)
from tqdm.auto import tqdm

import genkit
from genkit.config import DataConfig, load_config
from genkit.evaluation import Evaluator

WIDTH_256 = ("model.dit.hidden_size=256", "model.dit.num_heads=4")  # the pixel DiT before it took width 128
RECIPES = {  # name -> (recipe, overrides)
    "DDPM-UNet": ("ddpm_unet_mnist", ()),
    "DDPM-UNet (uniform t)": ("ddpm_unet_mnist", ("method.ddpm.timestep_density=uniform",)),
    "DDPM-UNet (eps, uniform t)": ("ddpm_unet_mnist", ("method.prediction=eps", "method.ddpm.timestep_density=uniform")),
    "VP-SDE-UNet": ("sde_vp_unet_mnist", ()),
    "VP-SDE-UNet (uniform t)": ("sde_vp_unet_mnist", ("method.sde.time_density=uniform",)),
    "RF-UNet": ("rf_unet_mnist", ()), "RF-UNet (patch 2)": ("rf_unet_mnist", ("model.unet.patch_size=2",)),
    "RF-UNet (batch 64)": ("rf_unet_mnist", ("train.batch_size=64",)),
    "RF-UNet (Adam beta2 0.99)": ("rf_unet_mnist", ("train.adam_betas=[0.9,0.99]",)),
    "RF-UNet (patch 2, 64-64)": ("rf_unet_mnist", ("model.unet.patch_size=2", "model.unet.channels=64",
                                                   "model.unet.channel_mult=[1,1]", "model.unet.num_res_blocks=[1,2]")),
    "RF-UNet (patch 2, 64-64-64)": ("rf_unet_mnist", PATCH_2_UNET),
    "RF-DiT": ("rf_dit_mnist", ()), "Latent-RF-DiT": ("rf_dit_latent_mnist", ()),
    "RF-DiT (seed 1)": ("rf_dit_mnist", ("train.seed=1",)),
    "RF-DiT (width 192)": ("rf_dit_mnist", ("model.dit.hidden_size=192", "model.dit.num_heads=3")),
    "RF-DiT (width 256)": ("rf_dit_mnist", WIDTH_256),
    "RF-DiT (width 256, seed 1)": ("rf_dit_mnist", WIDTH_256 + ("train.seed=1",)),
    "RF-DiT (width 256, batch 64)": ("rf_dit_mnist", WIDTH_256 + ("train.batch_size=64",)),
    "RF-DiT (width 256, lr 2e-3)": ("rf_dit_mnist", WIDTH_256 + ("train.lr=2e-3",)),
    "RF-DiT (width 256, lr 5e-4)": ("rf_dit_mnist", WIDTH_256 + ("train.lr=5e-4",)),
    "RF-DiT (width 256, patch 4)": ("rf_dit_mnist", WIDTH_256 + ("model.dit.patch_size=4",)),
}
NFES = (5, 10, 20)
# candidate (sampler, grid) pairs per method (None: the sampler's default grid, `adaptive` for DPM-Solver++)
CANDIDATES = {"ddpm": (("dpmpp_2m_pc", None), ("dpmpp_2m_pc", "auto"), ("unipc", "flow")),
              "sde": (("dpmpp_2m_pc", None), ("dpmpp_2m_pc", "auto"), ("unipc", "flow")),
              "flow": (("dpmpp_2m_pc", None), ("dpmpp_2m_pc", "auto"), ("heun", None))}


def run_dir(workdir: Path, recipe: str) -> Path:
    return workdir / recipe.lower().replace(" ", "_").replace("(", "").replace(")", "")


# ------------------------------------------------------------------------------------- genkit


def train_recipe(recipe: str, workdir: Path, minutes: float, vae_minutes: float, data: str,
                 steps: int | None = None) -> dict:
    """Train a recipe on `data` for `minutes` (its LR horizon: the steps that fit, from a
    calibration run) or for `steps`; a latent recipe first trains its autoencoder for `vae_minutes`."""
    config, overrides = RECIPES[recipe]
    entry = {"recipe": recipe, "library": "genkit", "data": data, "overrides": list(overrides),
             "commit": STARTED_AT, "cpu": machine()["cpu"], **({} if steps is None else {"steps_from_mnist": True})}
    overrides = (*overrides, f"data.path={data_path(data)}", "train.report_to=none")
    if config == "rf_dit_latent_mnist":
        vae_dir = workdir / "vae_mnist"
        entry["autoencoder"] = train_for_minutes("vae_mnist", vae_dir, vae_minutes, *overrides[-2:])
        overrides = (*overrides, f"data.autoencoder={vae_dir}")
    out = run_dir(workdir, recipe)
    entry.update(train_for_minutes(config, out, minutes, *overrides) if steps is None else
                 train_for_steps(config, out, steps, "train.overwrite=true", *overrides))
    return entry


def data_path(data: str) -> str:
    """A bundled data set's name as `data.path` takes it (`data/NAME`), else the path as given."""
    return f"data/{data}" if data in BUNDLED_DATA else data


BUNDLED_DATA = ("mnist", "fashion_mnist")


def eval_recipe(recipe: str, workdir: Path, evaluator: Evaluator, num: int, device: str,
                guidances: list[float] | None = None) -> list[dict]:
    """Rows of `recipe`'s best FID per NFE over the candidates (sampler, grid) at the recipe's own
    `sample.guidance` and `sample.guidance_interval`, with every candidate's FID; other guidance
    weights in `guidances` are tried too (within the same interval), and the best of them is reported
    beside it (`other_guidance`), not in its place."""
    model = genkit.load(run_dir(workdir, recipe), device=device)
    labels = model.default_labels(num)
    precision = "auto" if device == "cpu" else "no"  # bf16 on CPUs that have it (AMX)
    own, interval = recipe_guidance(recipe)
    rows = []
    for nfe in NFES:
        tried, guidance_of = {}, {}
        for guidance in dict.fromkeys([own, *(guidances or [])]):
            for sampler, schedule in CANDIDATES[model.cfg.method.name]:
                steps = steps_for_sampler(sampler, nfe)
                if schedule is None:
                    fit_grid(model, sampler, steps, guidance, interval)
                drawn = model.sample(num, seed=0, sampler=sampler, schedule=schedule, steps=steps, guidance=guidance,
                                     guidance_interval=interval, labels=labels, progress=False, precision=precision)
                name = candidate_name(sampler, schedule, guidance, interval)
                tried[name], guidance_of[name] = evaluator.score(drawn.images, labels)["fid"], guidance
                tqdm.write(f"{recipe:18s} NFE {drawn.nfe:3d} {name:32s} FID {tried[name]:8.2f}")
        best = min((name for name in tried if guidance_of[name] == own), key=tried.get)
        row = {"recipe": recipe, "library": "genkit", "nfe": nfe, "fid": tried[best], "sampler": best,
               "guidance": own, **({"guidance_interval": list(interval)} if interval else {}), "candidates": tried}
        others = [name for name in tried if guidance_of[name] != own]
        if others:
            other = min(others, key=tried.get)
            row["other_guidance"] = {"guidance": guidance_of[other], "sampler": other, "fid": tried[other]}
        rows.append(row)
    return rows


def recipe_guidance(recipe: str) -> tuple[float, tuple[float, ...]]:
    """The guidance weight and interval `recipe` samples at as its file gives them now: the run may
    have been trained before they changed, and sampling settings do not change training."""
    config, overrides = RECIPES[recipe]
    sample = load_config(recipe_path(config), list(overrides)).sample
    return sample.guidance, tuple(sample.guidance_interval)


def candidate_name(sampler: str, schedule: str | None, guidance: float, interval: tuple = ()) -> str:
    """`sampler[grid]`, with ` guidance W` unless W is 1 (the plain conditional model), and ` in [lo, hi]`
    where guidance applies only within that sigma/alpha."""
    guided = f" guidance {guidance:g}" + (f" in [{', '.join(f'{b:g}' for b in interval)}]" if interval else "")
    return f"{sampler}[{schedule or 'default'}]" + (guided if guidance != 1 else "")


# ------------------------------------------------------------------------------------- diffusers


FAIR_BASELINE = "diffusers_models.json"  # benchmarks/diffusers_models.py's results, beside --json


def diffusers_rows(json_path: str, data: str) -> list[dict]:
    """The diffusers rows: the fair baseline of `benchmarks/diffusers_models.py` (its own training and
    machine, its best scheduler per NFE), read from its results file beside `json_path`."""
    path = Path(json_path).with_name(FAIR_BASELINE)
    if data != "mnist" or not path.is_file():
        raise SystemExit(f"the diffusers rows come from {path} (MNIST): run benchmarks/diffusers_models.py first")
    fair = json.loads(path.read_text())
    if fair.get("dry_run"):
        raise SystemExit(f"{path} holds a dry run")
    return [{"recipe": "UNet2DModel (fair baseline)", "library": "diffusers", "nfe": r["nfe"], "nfe_used": r["nfe"],
             "fid": r["fid"], "sampler": r["scheduler"], "floor_fid": fair["floor_fid"], "steps": fair["training"]["steps"],
             "commit": fair["commit"], "machine": fair["machine"]} for r in fair["rows"] if r["library"] == "diffusers"]


# ------------------------------------------------------------------------------------- main


def main() -> None:
    p = benchmark_parser("quality", __doc__, workdir=True)
    p.add_argument("--budget-minutes", type=float, default=10.0, help="training wall time per recipe")
    p.add_argument("--vae-minutes", type=float, default=20.0,
                   help="training wall time of the latent recipe's autoencoder, reported beside the budget")
    p.add_argument("--data", default="mnist",
                   help="the data set: mnist, fashion_mnist or a path (only data.path changes; default: %(default)s)")
    p.add_argument("--steps-from", metavar="JSON",
                   help="train each recipe for the steps its run on MNIST in this results file took, not for a time")
    p.add_argument("--plot", help="the FID-against-NFE plot (default: docs/quality.png, docs/quality_DATA.png)")
    p.add_argument("--num", type=int, default=1000, help="samples per FID")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES) + ["diffusers"],
                   help=f"any of {', '.join(RECIPES)}, diffusers")
    p.add_argument("--phase", choices=["all", "train", "eval"], default="all")
    p.add_argument("--update", action="store_true",
                   help="keep the rows and training entries of other recipes already in --json (re-run some recipes only)")
    p.add_argument("--guidance", type=float, nargs="+", metavar="W",
                   help="classifier-free guidance weights to try besides each recipe's own sample.guidance "
                        "(the best is reported beside the recipe's, as other_guidance)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="for sampling")
    args = p.parse_args()
    unknown = set(args.recipes) - set(RECIPES) - {"diffusers"}
    if unknown or args.budget_minutes <= 0 or args.num < 10:
        p.error(f"unknown recipes {sorted(unknown)}" if unknown else "need --budget-minutes > 0 and --num >= 10")
    steps = steps_taken(args.steps_from, args.recipes) if args.steps_from else {}
    data = args.data
    workdir = Path(args.workdir) / ("" if data == "mnist" else Path(data).name)
    workdir.mkdir(parents=True, exist_ok=True)
    training_log = workdir / "training.json"
    if args.phase in ("all", "train"):
        trained = [t for t in json.loads(training_log.read_text())["runs"] if t["recipe"] not in args.recipes] \
            if training_log.is_file() else []
        for recipe in args.recipes:
            tqdm.write(f"training {recipe} on {data} for " +
                       (f"{steps[recipe]} steps" if recipe in steps else f"{args.budget_minutes} minutes"))
            if recipe != "diffusers":  # the fair baseline trains in its own benchmark
                trained.append(train_recipe(recipe, workdir, args.budget_minutes, args.vae_minutes, data,
                                            steps.get(recipe)))
            training_log.write_text(json.dumps({"budget_minutes": args.budget_minutes, "runs": trained}, indent=2))
    if args.phase == "train":
        return
    evaluator = Evaluator(DataConfig(path=data_path(data)), progress=False)
    floor = evaluator.floor(args.num)["fid"]
    rows = []
    for recipe in args.recipes:
        if recipe != "diffusers":
            rows += eval_recipe(recipe, workdir, evaluator, args.num, args.device, args.guidance)
    for row in rows:  # rows re-run by --update name their commit: the data set's `measured` names the rest's
        row.update(data=data, floor_fid=floor, **({"commit": STARTED_AT} if args.update else {}))
    if "diffusers" in args.recipes:  # scored in the fair baseline's own run, beside its own floor
        rows += [{**row, "data": data} for row in diffusers_rows(args.json, data)]
    training = json.loads(training_log.read_text())["runs"] if training_log.is_file() else []
    previous = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {}
    keep_others = args.update or data != "mnist"  # another data set's rows join MNIST's
    if keep_others and previous:
        def rerun(entry):
            same_recipe = entry["recipe"] in args.recipes or (entry["library"] == "diffusers" and "diffusers" in args.recipes)
            return same_recipe and entry.get("data", "mnist") == data
        rows = [r for r in map(with_data, previous["rows"]) if not rerun(r)] + rows
        training = [t for t in map(with_data, previous.get("training", [])) if not rerun(t)] + \
            [{"data": data, **t} for t in training if rerun({"data": data, **t})]
    # where each data set's rows were measured; the file's own commit and machine stay MNIST's
    measured = dict(previous.get("measured") or ({"mnist": {k: previous[k] for k in ("commit", "machine")}}
                                                 if "commit" in previous else {}))
    if not args.update or data not in measured:  # else each re-run recipe's training entry names its commit and cpu
        measured[data] = {"commit": STARTED_AT, "machine": machine()}
    result = {**previous, **measured.get("mnist", {})} if keep_others else {}  # the file's commit and machine: MNIST's
    result.update(rows=rows, training=training, over_floor_nfe_le_20=over_floor(rows), measured=measured)
    if data == "mnist":
        genkit_rows = [r for r in rows if r["library"] == "genkit" and r["nfe"] <= 20 and r["data"] == "mnist"]
        best = min(genkit_rows, key=lambda r: r["fid"]) if genkit_rows else None
        result.update(budget_minutes=args.budget_minutes, num_samples=args.num, floor_fid=floor,
                      best_genkit_nfe_le_20=best, best_over_floor=best["fid"] / floor if best else math.nan)
    write_results("quality", result, args.json)
    from genkit.plots import plot_quality

    name = "MNIST" if data == "mnist" else Path(data).name
    plot_quality([r for r in rows if r["data"] == data], args.plot or
                 ("docs/quality.png" if data == "mnist" else f"docs/quality_{Path(data).name}.png"), floor=floor,
                 title=f"{name}, {args.budget_minutes:g} min of CPU training per recipe",
                 features=f"{name} feature net")
    print(json.dumps(result, indent=2))


def with_data(entry: dict) -> dict:
    """A row or training entry from a results file written before rows named their data set (MNIST)
    and their floor `floor_fid`."""
    entry = {"data": "mnist", **entry}
    if "floor" in entry:
        entry["floor_fid"] = entry.pop("floor")
    return entry


def steps_taken(path: str, recipes: list[str]) -> dict[str, int]:
    """The steps each of `recipes` trained for on MNIST in an earlier results file."""
    taken = {t["recipe"]: t["steps"] for t in map(with_data, json.loads(Path(path).read_text())["training"])
             if t["data"] == "mnist"}
    missing = [r for r in recipes if r not in taken]
    if missing:
        raise SystemExit(f"--steps-from: {path} has no MNIST training entry for {', '.join(missing)}")
    return taken


def over_floor(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per data set, each recipe's best FID at NFE <= 20 over its floor."""
    ratios: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["nfe"] <= 20 and r.get("floor_fid"):
            by_recipe = ratios.setdefault(r["data"], {})
            key = f"{r['library']}: {r['recipe']}"
            by_recipe[key] = round(min(by_recipe.get(key, math.inf), r["fid"] / r["floor_fid"]), 3)
    return ratios


if __name__ == "__main__":
    main()
