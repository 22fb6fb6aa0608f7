"""PixelCNN sampling, naive against cached, in one process; and a checkpoint's test NLL.

Draws `--num` images (classes in turn, seed 0) from the default PixelCNN of
configs/pixelcnn_mnist.yaml, or from `--checkpoint`, twice: naive (the whole net for every
pixel) and cached (Ramachandran et al. 2017), both in fp32, and checks that they are the same
images. With a checkpoint, also its exact test NLL (in fp32 unless --bf16) (nats per image; the marginal
log sum_y p(x | y) p(y) for a class-conditional model) on `--test-images` binarized test digits.

    python benchmarks/pixelcnn.py [--checkpoint runs/pixelcnn_mnist]
"""
from __future__ import annotations

import json
import time

import torch
from harness import benchmark_parser, recipe_path, write_results

import genkit
from genkit.config import load_config
from genkit.data import label_frequencies, load_images
from genkit.nets import build_net
from genkit.inference import AutoregressiveModel


def timed_sample(model: AutoregressiveModel, num: int, how: str) -> tuple[torch.Tensor, float]:
    started = time.perf_counter()
    images = model.sample(num, seed=0, sampler=how, batch_size=num, progress=True).images
    return images, time.perf_counter() - started


def main() -> None:
    parser = benchmark_parser("pixelcnn", __doc__)
    parser.add_argument("--checkpoint", help="a trained PixelCNN run or checkpoint (default: the recipe, untrained)")
    parser.add_argument("--config", default=str(recipe_path("pixelcnn_mnist")))
    parser.add_argument("--num", type=int, default=64, help="images to sample (default: 64)")
    parser.add_argument("--test-images", type=int, default=10000, help="test digits for the NLL (default: 10000)")
    parser.add_argument("--bf16", action="store_true", help="score the NLL under bf16 autocast (sampling stays fp32)")
    args = parser.parse_args()

    if args.checkpoint:
        model = genkit.load(args.checkpoint)
    else:
        cfg = load_config(args.config)
        torch.manual_seed(0)
        model = AutoregressiveModel(cfg, build_net(cfg))
    naive, naive_s = timed_sample(model, args.num, "naive")
    cached, cached_s = timed_sample(model, args.num, "cached")
    result = {"naive_s": round(naive_s, 3), "cached_s": round(cached_s, 3), "speedup": round(naive_s / cached_s, 2),
              "identical": bool(torch.equal(naive, cached)), "num": args.num, "test_nll_nats": None}
    print(json.dumps(result))
    if args.checkpoint:
        data = model.cfg.data
        test = load_images(data, split="test", limit=args.test_images)
        prior = label_frequencies(data, model.num_classes) if model.num_classes else None
        scores = model.evaluate(test.images, test.labels, prior, precision="bf16" if args.bf16 else "no")
        result.update(test_nll_nats=round(scores["nll_nats"], 3), nll_precision="bf16" if args.bf16 else "fp32",
                      test=scores)
    print(json.dumps(result, indent=2))
    write_results("pixelcnn", result, args.json)


if __name__ == "__main__":
    main()
