"""Training batches from memory and from disk: what each loader costs, per image and in memory.

Loader: Fashion-MNIST's 60,000 training images (padded to 32 px, random flips), 128 per batch, as
the trainer asks for them (`StepIndices`): `memory` decodes the split once, then slices it; `disk`
leaves it in `datasets`' memory-mapped table and decodes each batch, in this process (`workers 0`)
or on worker processes ahead of the trainer. Reported: seconds to open, images per second over
`--steps` batches, and the resident memory the process gained (its peak, from getrusage).

Trainer (`--folder-images N`, 0 to skip): a generated image folder of N RGB PNGs at 32 px in ten
class folders, trained with the RF-UNet recipe (only the data changed) for `--train-steps` steps
from disk (`data.loader=disk`, two decoding workers), against the same recipe on 60,000 of those
images decoded into memory (MNIST's size), and from disk on 2,000 of them (what the trainer holds
whatever the data: `peak_rss_growth_gb_from_2000_images`). Reported: the trainer's peak resident memory
(`peak_rss_gb`, its /proc high-water mark; `peak_rss_with_workers_gb` adds its workers', sampled
every 0.2 s) and `throughput_ratio`, the trained images per second from disk over in memory (the
first logged steps left out).
The trainer's `data.loader=auto` keeps a split in memory up to `data.memory_mb`.

    python benchmarks/data.py                      # 200,000 PNGs under --workdir (made once)
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from harness import QUIET, ROOT, benchmark_parser, recipe_path, write_results
from PIL import Image
from tqdm.auto import tqdm

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


def make_folder(root: Path, n: int, size: int = 32, classes: int = 10) -> Path:
    """root/train/<class>/<i>.png: n RGB PNGs of `size` px (a colour gradient per class, with noise),
    made once (`ROOT.complete` beside it marks a finished folder)."""
    if complete(root, n):
        return root
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, size)[None, :, None]
    for c in range(classes):
        (root / "train" / str(c)).mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(n), desc=f"writing {n} PNGs", mininterval=5):
        c = i % classes
        colour = np.array([(c * 37) % 256, (c * 91) % 256, (c * 151) % 256])
        image = ramp * colour + rng.integers(0, 64, (size, size, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "train" / str(c) / f"{i}.png")
    root.with_suffix(".complete").write_text(str(n))
    return root


def complete(folder: Path, n: int) -> bool:
    marker = folder.with_suffix(".complete")
    return marker.is_file() and int(marker.read_text()) == n


def subset(folder: Path, out: Path, n: int) -> Path:
    """The first n images of `folder` (by index) as a folder of hard links."""
    if complete(out, n):
        return out
    for path in (folder / "train").glob("*/*.png"):
        if int(path.stem) < n:
            target = out / "train" / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.link(path, target)
    out.with_suffix(".complete").write_text(str(n))
    return out


def train_run(folder: Path, out: Path, steps: int, *overrides: str) -> dict:
    """The RF-UNet recipe on `folder` (RGB) for `steps` steps in a subprocess: its peak resident
    memory (with its workers') and trained images per second after the first two logged steps."""
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(recipe_path("rf_unet_mnist")),
               f"output_dir={out}", f"data.path={folder}", "data.channels=3", f"train.max_steps={steps}",
               "train.log_every=2", "train.overwrite=true", "train.report_to=none", "sample.fit_grid=false",
               *QUIET, *overrides]
    began = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT)
    peak, peak_with_workers = 0, 0
    while process.poll() is None:
        peak = max(peak, kilobytes(process.pid, "VmHWM"))  # the trainer's own high-water mark
        family = [process.pid, *children(process.pid)]
        peak_with_workers = max(peak_with_workers, sum(kilobytes(pid, "VmRSS") for pid in family))
        time.sleep(0.2)
    if process.returncode != 0:
        raise SystemExit(f"training failed ({process.returncode}): {' '.join(command)}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    batch = 128  # the recipe's
    seconds = [r["step"] * batch / r["img_per_s"] for r in records]  # img_per_s is cumulative
    rate = (records[-1]["step"] - records[1]["step"]) * batch / (seconds[-1] - seconds[1])
    return {"overrides": list(overrides), "steps": steps, "images_per_second": round(rate, 2),
            "peak_rss_gb": round(peak / 2**20, 3), "peak_rss_with_workers_gb": round(peak_with_workers / 2**20, 3),
            "wall_seconds": round(time.perf_counter() - began, 1)}


def kilobytes(pid: int, field: str) -> int:
    """A memory figure of /proc/PID/status in kB (0 once the process is gone). The trainer is timed
    from this process, whose own size a child's getrusage figure would include (fork before exec)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith(field + ":")), 0)


def children(pid: int) -> list[int]:
    """The processes `pid` started (the trainer's decoding workers)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def main() -> None:
    parser = benchmark_parser("data", __doc__, workdir=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--folder-images", type=int, default=200_000, help="0: the loader part only")
    parser.add_argument("--train-steps", type=int, default=40)
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
    if args.folder_images:
        workdir = Path(args.workdir)
        folder = make_folder(workdir / f"folder_{args.folder_images}", args.folder_images)
        small = subset(folder, workdir / "folder_60000", 60_000)
        tiny = subset(folder, workdir / "folder_2000", 2_000)
        disk = train_run(folder, workdir / "run_disk", args.train_steps, "data.loader=disk", "data.workers=2")
        print(disk, flush=True)
        disk_tiny = train_run(tiny, workdir / "run_disk_2000", args.train_steps, "data.loader=disk", "data.workers=2")
        print(disk_tiny, flush=True)
        in_memory = train_run(small, workdir / "run_memory", args.train_steps, "data.loader=memory")
        print(in_memory, flush=True)
        result.update(trainer={"recipe": "rf_unet_mnist", "folder_images": args.folder_images, "image_size": 32,
                               "channels": 3, "disk": disk, "disk_2000": disk_tiny, "memory_60000": in_memory},
                      peak_rss_growth_gb_from_2000_images=round(disk["peak_rss_gb"] - disk_tiny["peak_rss_gb"], 3),
                      peak_rss_gb=disk["peak_rss_gb"],
                      throughput_ratio=round(disk["images_per_second"] / in_memory["images_per_second"], 3))
    write_results("data", result, args.json)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
