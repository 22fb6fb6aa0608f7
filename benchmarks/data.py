"""Training batches from memory and from disk: what each loader costs, per image and in memory.

Fashion-MNIST's 60,000 training images (padded to 32 px, random flips), 128 per batch, as the
trainer asks for them (`StepIndices`): `memory` decodes the split once, then slices it; `disk`
leaves it in `datasets`' memory-mapped table and decodes each batch, in this process (`workers 0`)
or on worker processes ahead of the trainer. Reported: seconds to open, images per second over
`--steps` batches, and the resident memory the process gained (its peak, from getrusage).
The trainer's `data.loader=auto` keeps a split in memory up to `data.memory_mb`.

    python benchmarks/data.py
"""
from __future__ import annotations

import resource
import time

import torch
from harness import benchmark_parser, write_results

from genkit.config import DataConfig
from genkit.data import DiskImageData, StepIndices, open_images


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(cfg: DataConfig, steps: int, batch_size: int, workers: int) -> dict:
    before, began = peak_mb(), time.perf_counter()
    data = open_images(cfg, progress=False)
    opened = time.perf_counter() - began
    indices = StepIndices(len(data), batch_size, seed=0)
    if isinstance(data, DiskImageData):
        data.stream(indices, 0, steps, workers)
    began = time.perf_counter()
    for step in range(steps):
        x, _, _ = data.batch(indices(step), torch.Generator().manual_seed(step))
    seconds = time.perf_counter() - began
    return {"loader": type(data).__name__, "workers": workers, "open_seconds": round(opened, 2),
            "images_per_second": round(steps * batch_size / seconds), "peak_rss_gain_mb": round(peak_mb() - before)}


def main() -> None:
    parser = benchmark_parser("data", __doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    rows = []
    for loader, workers in (("disk", 0), ("disk", 2), ("memory", 0)):  # disk first: memory's peak would mask it
        cfg = DataConfig(path="data/fashion_mnist", image_size=32, fit="pad", hflip=True, loader=loader)
        rows.append({**measure(cfg, args.steps, args.batch_size, workers)})
        print(rows[-1], flush=True)
    memory = next(r for r in rows if r["loader"] == "ImageData")
    result = {"data": "fashion_mnist train, 32 px", "steps": args.steps, "batch_size": args.batch_size, "rows": rows,
              "disk_2_workers_vs_memory_images_per_second": round(
                  rows[1]["images_per_second"] / memory["images_per_second"], 3)}
    write_results("data", result, args.json)


if __name__ == "__main__":
    main()
