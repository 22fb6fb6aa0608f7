"""SD3's channel table on MNIST: autoencoders with 4, 8 and 16 latent channels, and a latent
rectified-flow DiT on each, at one CPU budget.

For each channel count an autoencoder (`vae_mnist`, latent_channels = C) trains for
`--vae-minutes`, then a latent RF-DiT (`rf_dit_latent_mnist` on that autoencoder) for
`--flow-minutes` (each run's LR horizon: the steps that fit, from a short calibration run in
the same directory, which also encodes the data set once; encoding is timed apart). Reported per
channel count: reconstruction PSNR, SSIM and rFID of `--num` test digits, and the generative FID
of `--num` class-conditional samples at NFE <= 20 (Heun, 10 steps: 19 evaluations; and the
default dpmpp_2m at 20), beside the real-data floor measured in the same run.

    python benchmarks/latent.py --vae-minutes 4 --flow-minutes 6
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from harness import benchmark_parser, fit_grid, train_for_minutes, write_results
from tqdm.auto import tqdm

import genkit
from genkit.data import load_images
from genkit.evaluation import Evaluator

SAMPLERS = (("heun", 10), ("dpmpp_2m", 20))  # (sampler, steps): 19 and 20 network evaluations


def main() -> None:
    p = benchmark_parser("latent", __doc__, workdir=True)
    p.add_argument("--channels", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--vae-minutes", type=float, default=4.0)
    p.add_argument("--flow-minutes", type=float, default=6.0)
    p.add_argument("--num", type=int, default=1000)
    args = p.parse_args()
    torch.manual_seed(0)
    workdir = Path(args.workdir)
    evaluator = Evaluator(progress=False)
    floor = evaluator.floor(args.num)["fid"]
    test = load_images(evaluator.data_cfg, split="test", limit=args.num, progress=False)
    rows = []
    for channels in args.channels:
        vae_dir, flow_dir = workdir / f"vae_c{channels}", workdir / f"rf_dit_latent_c{channels}"
        vae = train_for_minutes("vae_mnist", vae_dir, args.vae_minutes, "train.report_to=none",
                                f"model.vae.latent_channels={channels}")
        recon = genkit.load(vae_dir).evaluate(test.images, evaluator=evaluator)
        tqdm.write(f"C={channels}: PSNR {recon['psnr']:.2f} SSIM {recon['ssim']:.3f} rFID {recon['rfid']:.2f}")
        started = time.perf_counter()
        flow = train_for_minutes("rf_dit_latent_mnist", flow_dir, args.flow_minutes, "train.report_to=none",
                                 f"data.autoencoder={vae_dir}")
        flow["wall_seconds"] = round(time.perf_counter() - started, 1)  # calibration, encoding and training
        model = genkit.load(flow_dir)
        labels = model.default_labels(args.num)
        fids = {}
        for sampler, steps in SAMPLERS:
            fit_grid(model, sampler, steps)
            drawn = model.sample(args.num, seed=0, sampler=sampler, steps=steps, labels=labels, progress=False,
                                 precision="auto")
            fids[f"{sampler}_nfe{drawn.nfe}"] = evaluator.score(drawn.images, labels)["fid"]
        tqdm.write(f"C={channels}: latent RF-DiT FID {fids} (floor {floor:.2f})")
        rows.append({"latent_channels": channels, "latent_shape": list(model.codec.latent_shape),
                     "psnr": recon["psnr"], "ssim": recon["ssim"], "rfid": recon["rfid"], "vae": vae, "flow": flow, "fid": fids,
                     "best_fid": min(fids.values())})
        write_results("latent", {"vae_minutes": args.vae_minutes, "flow_minutes": args.flow_minutes, "num": args.num,
                                 "floor_fid": floor, "rows": rows}, args.json)
    for row in rows:
        print(f"C={row['latent_channels']:2d}  PSNR {row['psnr']:6.2f}  SSIM {row['ssim']:.3f}  rFID {row['rfid']:7.2f}  "
              f"FID {row['best_fid']:7.2f}  (floor {floor:.2f})")


if __name__ == "__main__":
    main()
