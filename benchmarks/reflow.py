"""1-rectified against 2-rectified flow on MNIST: straightness and few-step sample quality.

Takes a trained flow (the 1-rectified flow), draws `--pairs` (noise, sample) pairs from it with
Euler, trains a 2-rectified flow on the pairs starting from the 1-rectified weights, then
reports for both: straightness (Liu et al. 2022, eq. 5, along 100-step Euler paths from 1000
noise draws) and FID of 1000 class-conditional samples at 1, 4 and 20 Euler steps.

    python benchmarks/reflow.py [--checkpoint runs/rf_unet_mnist]
"""
from __future__ import annotations

import json
from pathlib import Path

from harness import benchmark_parser, device, train, write_results

import genkit
from genkit.checkpoint import resolve_checkpoint
from genkit.evaluation import Evaluator
from genkit.reflow import generate_pairs, straightness
from genkit.samplers import SampleNoise


def measure(model, evaluator: Evaluator) -> dict:
    labels = model.default_labels(1000)
    row = {}
    for steps in (1, 4, 20):
        images = model.sample(1000, sampler="euler", steps=steps, schedule="uniform", labels=labels,
                              progress=False).images
        row[f"fid_euler_{steps}"] = evaluator.score(images, labels)["fid"]
    shape = (model.cfg.data.channels, model.cfg.data.image_size, model.cfg.data.image_size)
    x1 = SampleNoise(123, range(1000), model.device).randn(*shape)
    row["straightness"] = straightness(model.denoiser(labels.to(model.device)), x1, steps=100)
    return row


def main() -> None:
    p = benchmark_parser("reflow", __doc__, workdir=True)
    p.add_argument("--checkpoint", default="runs/rf_unet_mnist",
                   help="the 1-rectified flow: a run or checkpoint directory (default: the quick-start recipe's run)")
    p.add_argument("--pairs", type=int, default=20000, help="(noise, sample) pairs drawn from it (default: %(default)s)")
    p.add_argument("--pair-steps", type=int, default=20, help="Euler steps per pair (default: %(default)s)")
    p.add_argument("--train-steps", type=int, default=700,
                   help="steps of the 2-rectified flow, from the 1-rectified one's weights (default: %(default)s)")
    p.add_argument("--lr", type=float, default=5e-4, help="its learning rate (default: %(default)s)")
    args = p.parse_args()
    work = Path(args.workdir)
    evaluator = Evaluator(progress=False)
    rf1 = genkit.load(args.checkpoint, device=device())
    rows = [{"model": "1-rectified", **measure(rf1, evaluator)}]
    print(json.dumps(rows[-1]))
    pairs = generate_pairs(rf1, work / "pairs", args.pairs, steps=args.pair_steps, sampler="euler", batch_size=1000)
    source = resolve_checkpoint(args.checkpoint)
    rf2 = train(source / "config.yaml", work / "rf2", f"data.path={pairs}", f"train.init_from={source}",
                f"train.max_steps={args.train_steps}", f"train.lr={args.lr}", "train.warmup_steps=50", "train.resume=")
    rows.append({"model": "2-rectified", **measure(genkit.load(rf2, device=device()), evaluator)})
    print(json.dumps(rows[-1]))
    write_results("reflow", {"pairs": args.pairs, "pair_steps": args.pair_steps, "train_steps": args.train_steps,
                             "floor_fid": evaluator.floor(1000)["fid"], "rows": rows}, args.json)


if __name__ == "__main__":
    main()
