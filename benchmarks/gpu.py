"""One command for the day a GPU is lent (#39): training and sampling throughput against diffusers,
one recipe trained for a few minutes with its FID, and the half-precision and compiled paths of
sampling checked against fp32. On the first CUDA device (else the CPU), in about 8 minutes.

- Training: one step = forward + backward + AdamW on a batch of 32x32x1 images, for the RF-UNet and
  RF-DiT recipes' nets against diffusers' UNet2DModel (the layouts within 10% of the UNet's
  parameters, the fastest counting) and DiTTransformer2DModel of the DiT's depth, width, heads and
  patch (parameters reported: adaLN-Zero and its learned-sigma head make it larger), in fp32, bf16
  autocast, fp16 autocast with loss scaling, and bf16 through torch.compile: images per second.
- Sampling: `model.sample(B, steps=10, sampler="ddim")` of the RF-UNet recipe's net against
  diffusers' DDIMPipeline on the UNet2DModel, 10 steps, in fp32 and bf16 (genkit: a bf16 copy of the
  weights; diffusers: autocast, its numpy output refusing bf16 images): images per second.
- Quality: the RF-UNet recipe trained for `--minutes`, then FID of 1,000 samples at NFE 5 (its
  sampler on its fitted grid) beside the real-data floor.
- Precision: that model's samples in bf16, fp16 and compiled fp32 against fp32 from the same seeds:
  the largest pixel difference (images in [0, 1]).

    python benchmarks/gpu.py              # writes benchmarks/results/gpu.json with the device name
    python benchmarks/gpu.py --dry-run    # tiny sizes and two training steps, on any device (the slow tests)
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from harness import benchmark_parser, recipe_path, train, train_for_minutes, write_results
from throughput import diffusers_unets, n_params

import genkit
from genkit.config import load_config
from genkit.evaluation import Evaluator
from genkit.inference import build_model
from genkit.nets import build_net

SIZE = 32
PRECISIONS = ("fp32", "bf16", "fp16", "bf16+compile")


class DiffusersDiT(torch.nn.Module):
    """diffusers' DiTTransformer2DModel behind genkit's `net(x, t, y)` call, its learned sigma dropped."""

    def __init__(self, hidden: int, depth: int, heads: int, patch: int, classes: int = 10):
        super().__init__()
        from diffusers import DiTTransformer2DModel

        self.dit = DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=1,
                                         out_channels=2, num_layers=depth, patch_size=patch, sample_size=SIZE,
                                         num_embeds_ada_norm=classes)

    def forward(self, x, t, y=None):
        return self.dit(x, timestep=t * 1000, class_labels=y).sample[:, :1]


def timed(step, seconds: float, warmup: int = 3) -> float:
    """Seconds per call of `step`, over about `seconds` (one call if 0), after `warmup` calls."""
    for _ in range(warmup):
        step()
    sync()
    calls, start = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        sync()
        if time.perf_counter() - start >= seconds:
            return (time.perf_counter() - start) / calls


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def training_step(net: torch.nn.Module, precision: str, batch: int, device: torch.device):
    """One AdamW step on random data in `precision` (fp16: with a GradScaler; +compile: through
    torch.compile)."""
    net = net.to(device).train()
    model = torch.compile(net) if precision.endswith("+compile") else net
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision.split("+")[0])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(batch, 1, SIZE, SIZE, generator=g).to(device), torch.rand(batch, generator=g).to(device)
    y, target = torch.randint(0, 10, (batch,), generator=g).to(device), torch.randn(batch, 1, SIZE, SIZE).to(device)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.mse_loss(model(x, t, y).float(), target)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    return step


def training(device: torch.device, batch: int, seconds: float, precisions=PRECISIONS) -> list[dict]:
    rows = []
    unet_cfg, dit_cfg = load_config(recipe_path("rf_unet_mnist")), load_config(recipe_path("rf_dit_mnist"))
    d = dit_cfg.model.dit
    pairs = {"unet": (lambda: build_net(unet_cfg), lambda: diffusers_unets(n_params(build_net(unet_cfg)))),
             "dit": (lambda: build_net(dit_cfg),
                     lambda: {"diffusers-dit": DiffusersDiT(d.hidden_size, d.depth, d.num_heads, d.patch_size)})}
    for name, (ours, theirs) in pairs.items():
        for precision in precisions:
            if precision == "fp16" and device.type == "cpu":
                continue  # fp16 autocast on a CPU is not a path anyone trains on
            ours_net = ours()
            row = {"net": name, "precision": precision, "genkit_params": n_params(ours_net),
                   "genkit_img_per_s": round(batch / timed(training_step(ours_net, precision, batch, device), seconds))}
            best = {}
            for label, net in theirs().items():
                best[label] = batch / timed(training_step(net, precision, batch, device), seconds)
                row.setdefault("diffusers_params", n_params(net))
            label = max(best, key=best.get)
            row.update(diffusers=label, diffusers_img_per_s=round(best[label]),
                       ratio=round(row["genkit_img_per_s"] / best[label], 3))
            rows.append(row)
            print(row, flush=True)
    return rows


def sampling(device: torch.device, batch: int, seconds: float) -> list[dict]:
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    cfg = load_config(recipe_path("rf_unet_mnist"))
    model = build_model(cfg, build_net(cfg), device)
    target = n_params(model.net)
    unet = next(iter(diffusers_unets(target, conditional=False).values())).to(device)
    assert isinstance(unet, UNet2DModel)
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000))
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for precision in ("fp32", "bf16"):
        ours = timed(lambda: model.sample(batch, steps=10, sampler="ddim", precision="no" if precision == "fp32" else
                                          "bf16", progress=False), seconds, warmup=1)
        def theirs_step():  # bf16 by autocast: the pipeline's numpy output refuses bf16 weights' images
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                pipe(batch_size=batch, num_inference_steps=10, output_type="np")
        theirs = timed(theirs_step, seconds, warmup=1)
        rows.append({"precision": precision, "genkit_img_per_s": round(batch / ours, 1),
                     "diffusers_img_per_s": round(batch / theirs, 1), "ratio": round(theirs / ours, 3)})
        print(rows[-1], flush=True)
    return rows


def quality(workdir: Path, minutes: float, num: int, dry_run: bool) -> tuple[dict, genkit.GenerativeModel]:
    out = workdir / "rf_unet_mnist"
    if dry_run:
        train(recipe_path("rf_unet_mnist"), out, "train.max_steps=2", "sample.fit_grid=false")
        run = {"steps": 2}
    else:
        run = train_for_minutes(recipe_path("rf_unet_mnist"), out, minutes)
    model = genkit.load(out, device="auto")
    evaluator = Evaluator(model.cfg.data, progress=False)
    drawn = model.sample(num, seed=0, steps=5, progress=False)
    return {**run, "num": num, "nfe": drawn.nfe, "fid": evaluator.score(drawn.images)["fid"],
            "floor_fid": evaluator.floor(num)["fid"]}, model


def precision_checks(model, num: int, compiled: bool = True) -> dict:
    reference = model.sample(num, seed=0, steps=5, progress=False).images
    checks = {}
    paths = {"bf16": {"precision": "bf16"}, "fp16": {"precision": "fp16"}, **({"compile": {"compile": True}} if compiled else {})}
    for name, kwargs in paths.items():
        try:
            images = model.sample(num, seed=0, steps=5, progress=False, **kwargs).images
            checks[name] = round(float((images - reference).abs().max()), 5)
        except genkit.ArgumentError as err:  # fp16 on a device without it
            checks[name] = f"refused: {err}"
    return checks


def main() -> None:
    parser = benchmark_parser("gpu", __doc__, workdir=True)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, on any device: checks the script runs")
    parser.add_argument("--minutes", type=float, default=3.0, help="training time of the quality part (default: 3)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch, seconds, num = (4, 0.0, 8) if args.dry_run else (128, 4.0, 1000)
    compiled = not (args.dry_run and device.type == "cpu")  # compiling on a CPU takes minutes: not for a dry run
    started = time.perf_counter()
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "dry_run": args.dry_run,
              "training": training(device, batch, seconds, PRECISIONS if compiled else PRECISIONS[:3]),
              "sampling": sampling(device, batch, seconds)}
    result["quality"], model = quality(Path(args.workdir), args.minutes, num, args.dry_run)
    result["precision_max_abs_diff"] = precision_checks(model, min(num, 64), compiled)
    result["seconds"] = round(time.perf_counter() - started)
    print(result["quality"], result["precision_max_abs_diff"], f"{result['seconds']} s")
    write_results("gpu", result, args.json)


if __name__ == "__main__":
    main()
