"""Train the MNIST feature classifier used by `genkit eval` and commit its weights.

    python scripts/train_classifier.py [--epochs 4] [--seed 0] [--out genkit/evaluation/mnist_classifier.safetensors]
"""
from __future__ import annotations

import argparse
import time

import torch

from genkit.config import DataConfig
from genkit.data import load_images
from genkit.evaluation.classifier import WEIGHTS, accuracy, save_classifier, train_classifier


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="data/mnist", help="MNIST in the hub's parquet layout")
    p.add_argument("--out", default=str(WEIGHTS))
    args = p.parse_args()
    cfg = DataConfig(path=args.data, image_size=32, fit="pad")
    train, test = load_images(cfg, "train"), load_images(cfg, "test")
    started = time.perf_counter()
    net = train_classifier(train.images, train.labels, epochs=args.epochs, seed=args.seed)
    torch.set_grad_enabled(False)
    acc = accuracy(net, test.images, test.labels)
    save_classifier(net, args.out)
    print(f"test accuracy {acc:.4f} after {time.perf_counter() - started:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
