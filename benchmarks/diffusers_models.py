"""The fair diffusers baseline (#38): diffusers' UNet2DModel trained as diffusers' docs recommend for
few-step sampling, for a CPU budget, then sampled at NFE 5, 10 and 20 by diffusers' best scheduler
and by genkit's default sampler on the same model (through `genkit.from_diffusers`).

Training follows diffusers' training examples with the options their docs recommend, on the
data set genkit's recipes train on (MNIST 32x32, class-conditional, as the recipes are):

- v-prediction on DDPM's linear betas rescaled to zero terminal SNR, to be sampled with trailing
  timesteps (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed": the
  `rescale_betas_zero_snr` / `timestep_spacing="trailing"` pair diffusers' docs give);
- Min-SNR-5 loss weighting (Hang et al. 2023; `--snr_gamma 5.0` of diffusers' examples, through
  `diffusers.training_utils.compute_snr`), timesteps uniform;
- AdamW with warm-up and cosine decay (`diffusers.optimization`), gradient clipping at 1, EMA as
  the examples keep it (`EMAModel` with warm-up), bf16 autocast where the CPU has it (AMX; fp32
  elsewhere: emulated bf16 is far slower), and the batch size, of 32, 64 and 128, that trains the
  most images per second here (measured first); the learning rate of genkit's DDPM-UNet recipe.

The budget is wall time of training steps (data loading and the batch-size measurement are not
counted); the LR schedule's horizon is the number of steps the measured rate fits in it.

Sampling: for each NFE every candidate scheduler (DPM-Solver++ 2M and 3M, each plain, with Karras
sigmas and with lu_lambdas; UniPC; DDIM; Euler; each with trailing and with leading timesteps)
draws `--pilot` samples (classes in turn); the `--finalists` best are drawn again at `--num`
samples, and the best of those is diffusers' best. genkit's default sampler (the model's
`sample.sampler` on its fitted grid) draws `--num` samples of the same model. Every draw starts
from the same noise, genkit's streams of seed 0 (sample i from stream i). FID in the MNIST
feature net beside the real-data floor; `ratio_default_vs_diffusers_best` per NFE.

`ode_error`: how far each draw's first 100 images (`REFERENCE`) lie from the ODE's own (root mean
square per pixel, images in [0, 1]; the ODE solved by 200 fp32 steps, `REFERENCE_STEPS`, of
genkit's DPM-Solver++(2M) without clipping, from the same noise), for every candidate and for
genkit's default: a sampler's accuracy, apart from whether its error happens to lower FID.
`ode_error_ratio_default` per NFE: genkit's default's over diffusers' best's, and over the
smallest of any candidate's.

`ode_limit`: the FID of the model's probability-flow ODE solved to convergence (`ODE_STEPS` steps
of DPM-Solver++(2M), by diffusers' scheduler and by genkit's sampler without clipping, as
diffusers solves it): where a few-step scheduler scores better than this, its error, not the
ODE, made the better images.

    python benchmarks/diffusers_models.py                 # writes benchmarks/results/diffusers_models.json
    python benchmarks/diffusers_models.py --dry-run       # tiny sizes: checks the script runs
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from harness import benchmark_parser, fit_grid, steps_for_sampler, write_results
from tqdm.auto import tqdm

import genkit
from genkit.config import DataConfig
from genkit.data import batch_indices, load_images
from genkit.evaluation import Evaluator
from genkit.samplers import SampleNoise

NFES = (5, 10, 20)
TRAINING_FILE = "genkit_training.json"  # what training measured, beside the pipeline it saved
BATCH_SIZES = (32, 64, 128)
LR = 2e-3  # genkit's DDPM-UNet recipe's
SNR_GAMMA = 5.0
ODE_STEPS = 40  # DPM-Solver++(2M) steps of the ODE limit: at 40 the two libraries' solves agree to about 1 FID
REFERENCE, REFERENCE_STEPS = 100, 200  # the ODE's images for `ode_error`: 100 vs 200 steps differ by 0.002 RMS


def diffusers_unet(classes: int = 10):
    """The UNet2DModel layout `benchmarks/throughput.py` matches to genkit's recipe UNet (1.65M
    parameters): 1.8M, one ResNet block per level on the way down, as genkit's recipe keeps one at
    32x32, where a CPU step spends most of its time."""
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(32, 64, 96),
                       layers_per_block=1, norm_num_groups=32, num_class_embeds=classes,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))


def training_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="v_prediction",
                         rescale_betas_zero_snr=True, timestep_spacing="trailing", clip_sample=False)


def has_bf16() -> bool:
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


class Trainer:
    """One training step of diffusers' example loop with the options above."""

    def __init__(self, data, batch_size: int, seed: int = 0):
        from diffusers.training_utils import EMAModel

        torch.manual_seed(seed)
        self.data, self.batch_size = data, batch_size
        self.unet, self.scheduler = diffusers_unet(), training_scheduler()
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=LR, weight_decay=1e-6)
        self.ema = EMAModel(self.unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75)
        self.lr_schedule = None
        self.steps = 0

    def horizon(self, total: int) -> None:
        from diffusers.optimization import get_cosine_schedule_with_warmup

        self.lr_schedule = get_cosine_schedule_with_warmup(self.optimizer, min(100, total // 10), total)

    def step(self) -> float:
        from diffusers.training_utils import compute_snr

        x0, y, _ = self.data.batch(batch_indices(len(self.data), self.batch_size, 0, self.steps))
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (len(x0),))
        target = self.scheduler.get_velocity(x0, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=has_bf16()):
            pred = self.unet(self.scheduler.add_noise(x0, noise, t), t, class_labels=y).sample
        snr = compute_snr(self.scheduler, t)
        weight = torch.minimum(snr, torch.full_like(snr, SNR_GAMMA)) / (snr + 1)  # Min-SNR for v-prediction
        loss = (F.mse_loss(pred.float(), target, reduction="none").mean(dim=(1, 2, 3)) * weight).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.optimizer.step()
        if self.lr_schedule is not None:
            self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(self.unet.parameters())
        self.steps += 1
        return loss.item()


def images_per_second(data, batch_size: int, steps: int) -> float:
    trainer = Trainer(data, batch_size)
    trainer.step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    return steps * batch_size / (time.perf_counter() - started)


def train(data, minutes: float, out: Path, dry_run: bool) -> dict:
    """Pick the batch size, train for `minutes`, save the EMA weights as a DDPMPipeline folder."""
    from diffusers import DDPMPipeline

    rates = {b: images_per_second(data, b, 1 if dry_run else 3) for b in ((8,) if dry_run else BATCH_SIZES)}
    batch_size = max(rates, key=rates.get)
    trainer = Trainer(data, batch_size)
    total = 2 if dry_run else max(10, int(rates[batch_size] / batch_size * minutes * 60))
    trainer.horizon(total)
    started = time.perf_counter()
    with tqdm(total=total, desc=f"diffusers UNet2DModel, batch {batch_size}") as bar:
        while trainer.steps < total and (dry_run or time.perf_counter() - started < minutes * 60):
            bar.set_postfix(loss=f"{trainer.step():.4f}")
            bar.update(1)
    seconds = time.perf_counter() - started
    trainer.ema.copy_to(trainer.unet.parameters())
    DDPMPipeline(unet=trainer.unet, scheduler=trainer.scheduler).save_pretrained(out)
    training = {"steps": trainer.steps, "horizon": total, "batch_size": batch_size,
                "images_per_second_by_batch": rates, "train_seconds": round(seconds, 1), "bf16": has_bf16(),
                "lr": LR, "snr_gamma": SNR_GAMMA, "params": sum(p.numel() for p in trainer.unet.parameters())}
    (out / TRAINING_FILE).write_text(json.dumps(training, indent=2))  # for --phase eval
    return training


def candidates() -> dict[str, tuple[type, dict]]:
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, UniPCMultistepScheduler

    found = {}
    for spacing in ("trailing", "leading"):
        for order in (2, 3):
            for sigmas, options in (("", {}), (" karras", {"use_karras_sigmas": True}),
                                    (" lu", {"use_lu_lambdas": True})):
                found[f"dpmpp_{order}m{sigmas} {spacing}"] = (DPMSolverMultistepScheduler, dict(
                    algorithm_type="dpmsolver++", solver_order=order, timestep_spacing=spacing, **options))
        found[f"unipc {spacing}"] = (UniPCMultistepScheduler, dict(timestep_spacing=spacing))
        found[f"ddim {spacing}"] = (DDIMScheduler, dict(timestep_spacing=spacing))
        found[f"euler {spacing}"] = (EulerDiscreteScheduler, dict(timestep_spacing=spacing))
    return found


def starting_noise(num: int) -> torch.Tensor:
    """The unit noise [num, 1, 32, 32] genkit's `model.sample(num, seed=0)` starts from (a VP path's
    prior is unit normal)."""
    return SampleNoise(0, range(num)).randn(1, 32, 32)


@torch.no_grad()
def draw(unet, scheduler, nfe: int, num: int, batch_size: int = 250) -> torch.Tensor:
    """diffusers' pipeline loop with `scheduler` at `nfe` steps: `num` images in [0, 1], classes in
    turn, from `starting_noise` (the same for every scheduler and for genkit)."""
    images, noise = [], starting_noise(num)
    for start in range(0, num, batch_size):
        scheduler.set_timesteps(nfe)  # also resets a multistep scheduler's history
        n = min(batch_size, num - start)
        x = noise[start:start + n] * scheduler.init_noise_sigma
        labels = torch.arange(start, start + n) % 10
        for t in scheduler.timesteps:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=has_bf16()):
                out = unet(scheduler.scale_model_input(x, t), t, class_labels=labels).sample
            x = scheduler.step(out.float(), t, x).prev_sample
        images.append(((x.clamp(-1, 1) + 1) / 2))
    return torch.cat(images)


def genkit_ode(folder: Path, num: int, steps: int, precision: str = "no") -> torch.Tensor:
    """The first `num` images of the model's probability-flow ODE by genkit's DPM-Solver++(2M) in
    `steps` log-SNR steps, without clipping (as diffusers solves it)."""
    return genkit.from_diffusers(folder).sample(num, seed=0, sampler="dpmpp_2m", schedule="log_snr", steps=steps,
                                                labels=torch.arange(num) % 10, clip_x0=False, progress=False,
                                                precision=precision).images


def ode_error(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Root mean square per pixel between the first images drawn and the ODE's own."""
    if not images.isfinite().all():
        return math.inf
    return round(float((images[:len(reference)] - reference).pow(2).mean().sqrt()), 5)


def score(evaluator: Evaluator, images: torch.Tensor) -> float:
    if not images.isfinite().all():
        return math.inf
    return evaluator.score(images, torch.arange(len(images)) % 10)["fid"]


def diffusers_best(folder: Path, evaluator: Evaluator, nfe: int, pilot: int, num: int, finalists: int,
                   reference: torch.Tensor) -> dict:
    """Every candidate on `pilot` samples, the best `finalists` again on `num`: the best of those
    (with every candidate's `ode_error` on the pilot)."""
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(folder, subfolder="unet").eval()
    config = training_scheduler().config
    tried, errors = {}, {}
    for name, (kind, options) in candidates().items():
        try:
            images = draw(unet, kind.from_config(config, **options), nfe, pilot)
            tried[name], errors[name] = score(evaluator, images), ode_error(images, reference)
        except (ValueError, RuntimeError, IndexError, AssertionError) as err:  # a setting it refuses here
            tqdm.write(f"  {name}: refused ({str(err).splitlines()[0][:80]})")
            tried[name] = errors[name] = math.inf
        tqdm.write(f"diffusers NFE {nfe:3d} {name:24s} FID {tried[name]:8.2f} ({pilot} samples), "
                   f"ODE error {errors[name]:.4f}")
    final = {}
    for name in sorted(tried, key=tried.get)[:finalists]:
        kind, options = candidates()[name]
        final[name] = score(evaluator, draw(unet, kind.from_config(config, **options), nfe, num))
        tqdm.write(f"diffusers NFE {nfe:3d} {name:24s} FID {final[name]:8.2f} ({num} samples)")
    best = min(final, key=final.get)
    return {"library": "diffusers", "nfe": nfe, "scheduler": best, "fid": final[best], "ode_error": errors[best],
            "finalists": final, "pilot": tried, "pilot_ode_error": errors}


def genkit_default(folder: Path, evaluator: Evaluator, nfe: int, num: int, reference: torch.Tensor) -> dict:
    model = genkit.from_diffusers(folder)
    sampler = model.cfg.sample.sampler
    steps = steps_for_sampler(sampler, nfe)
    fit_grid(model, sampler, steps)
    drawn = model.sample(num, seed=0, steps=steps, labels=torch.arange(num) % 10, progress=False, precision="auto")
    fid, error = score(evaluator, drawn.images), ode_error(drawn.images, reference)
    tqdm.write(f"genkit    NFE {drawn.nfe:3d} {sampler:24s} FID {fid:8.2f} ({num} samples), ODE error {error:.4f}")
    return {"library": "genkit", "nfe": nfe, "nfe_used": drawn.nfe, "sampler": sampler, "fid": fid,
            "ode_error": error}


def ode_limit(folder: Path, evaluator: Evaluator, num: int, steps: int) -> dict:
    """FID of the probability-flow ODE solved to convergence by each library (see the module)."""
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(folder, subfolder="unet").eval()
    kind, options = candidates()["dpmpp_2m trailing"]
    scheduler = kind.from_config(training_scheduler().config, **options)
    found = {"steps": steps, "diffusers dpmpp_2m trailing": score(evaluator, draw(unet, scheduler, steps, num))}
    found["genkit dpmpp_2m log_snr"] = score(evaluator, genkit_ode(folder, num, steps, precision="auto"))
    tqdm.write(f"ODE limit ({steps} steps): {found}")
    return found


def main() -> None:
    p = benchmark_parser("diffusers_models", __doc__, workdir=True)
    p.add_argument("--minutes", type=float, default=10.0, help="training wall time (default: %(default)s)")
    p.add_argument("--num", type=int, default=1000, help="samples per final FID (default: %(default)s)")
    p.add_argument("--pilot", type=int, default=250, help="samples per candidate's first FID (default: %(default)s)")
    p.add_argument("--finalists", type=int, default=3, help="candidates drawn again at --num (default: %(default)s)")
    p.add_argument("--phase", choices=["all", "train", "eval"], default="all")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes: two training steps, 20 samples, NFE 2")
    args = p.parse_args()
    if args.dry_run:
        args.num, args.pilot, args.finalists = 20, 10, 2
    folder = Path(args.workdir) / "pipeline"
    data = load_images(DataConfig(path="data/mnist"))
    if args.dry_run:
        data.images, data.labels = data.images[:64], data.labels[:64]
    training = train(data, args.minutes, folder, args.dry_run) if args.phase != "eval" else \
        json.loads((folder / TRAINING_FILE).read_text())
    if args.phase == "train":
        print(training)
        return
    evaluator = Evaluator(DataConfig(path="data/mnist"), progress=False)
    floor = evaluator.floor(args.num)["fid"]
    reference = genkit_ode(folder, min(REFERENCE, args.pilot), REFERENCE_STEPS)  # fp32: the ODE's own images
    rows = []
    for nfe in ((2,) if args.dry_run else NFES):
        rows.append(diffusers_best(folder, evaluator, nfe, args.pilot, args.num, args.finalists, reference))
        rows.append(genkit_default(folder, evaluator, nfe, args.num, reference))
    pairs = list(zip(rows[::2], rows[1::2]))
    ratio = {str(r["nfe"]): round(g["fid"] / r["fid"], 3) for r, g in pairs}
    error_ratio = {str(r["nfe"]): {"vs_diffusers_best": round(g["ode_error"] / r["ode_error"], 3),
                                   "vs_diffusers_most_accurate":
                                       round(g["ode_error"] / min(r["pilot_ode_error"].values()), 3)}
                   for r, g in pairs}
    limit = ode_limit(folder, evaluator, args.num, 2 if args.dry_run else ODE_STEPS)
    write_results("diffusers_models", {"dry_run": args.dry_run, "minutes": args.minutes, "num_samples": args.num,
                                       "pilot_samples": args.pilot, "finalists": args.finalists,
                                       "training": training, "floor_fid": floor, "rows": rows, "ode_limit": limit,
                                       "ratio_default_vs_diffusers_best": ratio,
                                       "ode_error_reference": {"samples": len(reference), "steps": REFERENCE_STEPS},
                                       "ode_error_ratio_default": error_ratio}, args.json)
    print(f"genkit's default over diffusers' best, by NFE: {ratio} (floor FID {floor:.2f}); "
          f"ODE error over diffusers': {error_ratio}")


if __name__ == "__main__":
    main()
