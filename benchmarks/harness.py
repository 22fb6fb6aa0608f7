"""What the benchmarks share: recipes, training in a subprocess, step counts, and results files.

A recipe trains in its own process (`python train.py`), as a user runs it: nothing of one run's
accelerate state or threads leaks into the next, and the benchmark process only samples and
scores. Results go to `benchmarks/results/NAME.json` with the commit and the machine they were
measured on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch
from genkit.samplers import takes_fitted_grid

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
QUIET = ["train.sample_every=0", "train.checkpoint_every=0"]  # a benchmark run writes one checkpoint, at the end
# the RF-UNet recipe's net on 2x2 patches with 64 channels at each of its three levels: 1.75M parameters
# against the recipe's 1.65M (the quality and sampling-throughput tables' patch-2 UNet)
PATCH_2_UNET = ("model.unet.patch_size=2", "model.unet.channels=64", "model.unet.channel_mult=[1,1,1]",
                "model.unet.num_res_blocks=1")


def benchmark_parser(name: str, doc: str, workdir: bool = False) -> argparse.ArgumentParser:
    """A benchmark's command line: described by its docstring's first line, with `--json` (default
    benchmarks/results/NAME.json) and, for benchmarks that train, `--workdir` (default runs/NAME)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--json", default=str(RESULTS / f"{name}.json"), help="where to write the results (default: %(default)s)")
    if workdir:
        p.add_argument("--workdir", default=f"runs/{name}", help="where runs are trained (default: %(default)s)")
    return p


def recipe_path(name: str) -> Path:
    """configs/NAME.yaml."""
    return ROOT / "configs" / f"{name}.yaml"


def train(config: str | Path, output_dir: str | Path, *overrides: str) -> Path:
    """Train `config` (a recipe name or a YAML path) into `output_dir` in a subprocess; returns the
    run directory. Periodic grids and checkpoints are off unless `overrides` turn them on."""
    config = recipe_path(config) if not Path(config).suffix else Path(config)
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(config), f"output_dir={output_dir}",
               *QUIET, *overrides]
    subprocess.run(command, check=True, cwd=ROOT)
    return Path(output_dir)


def steps_per_second(config: str | Path, workdir: str | Path, *overrides: str, steps: int = 12) -> float:
    """Training steps per second of `config` on this machine, from a short run's log (the first two
    logged steps, which build kernels, are left out)."""
    out = train(config, Path(workdir) / "calibration", f"train.max_steps={steps}", "train.log_every=2",
                *overrides)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    batch = _batch_size(out)
    # img_per_s is cumulative from the start: seconds to reach a step = step * batch / img_per_s
    seconds = [r["step"] * batch / r["img_per_s"] for r in records]
    return (records[-1]["step"] - records[0]["step"]) / (seconds[-1] - seconds[0])


def train_for_minutes(config: str | Path, out: str | Path, minutes: float, *overrides: str) -> dict:
    """Train `config` into `out` for `minutes` of training, its LR horizon the steps that fit: a
    12-step calibration run in `out` itself measures the rate first (and leaves what a run may
    reuse, such as a latent model's encoded data), then the run starts over. Returns its steps,
    training seconds, the calibration's wall seconds and the net's parameter count."""
    import time

    out = Path(out)
    started = time.perf_counter()
    train(config, out, "train.max_steps=12", "train.log_every=2", *overrides)
    calibration = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["step"] * _batch_size(out) / r["img_per_s"] for r in records]  # img_per_s is cumulative
    rate = (records[-1]["step"] - records[0]["step"]) / (seconds[-1] - seconds[0])
    steps = max(10, int(rate * minutes * 60 * 0.98))
    entry = train_for_steps(config, out, steps, f"train.max_minutes={minutes}", "train.overwrite=true", *overrides)
    return {**entry, "calibration_seconds": round(calibration, 1)}


def train_for_steps(config: str | Path, out: str | Path, steps: int, *overrides: str) -> dict:
    """Train `config` into `out` for `steps` steps, its LR horizon (as `train_for_minutes` does once
    it knows how many fit): the same training on a busy machine as on a quiet one, only slower."""
    import genkit

    train(config, out, f"train.max_steps={steps}", f"train.warmup_steps={min(100, steps // 10)}", *overrides)
    model = genkit.load(out)
    return {"steps": model.training["step"], "train_seconds": model.training["train_seconds"],
            "params": sum(p.numel() for p in model.net.parameters())}


def _batch_size(run: Path) -> int:
    from genkit.checkpoint import CONFIG_FILE, resolve_checkpoint
    from genkit.config import load_config

    return load_config(resolve_checkpoint(run) / CONFIG_FILE).train.batch_size


def steps_for(nfe: int, evals_per_step: int = 1, last_is_one: bool = False) -> int:
    """The most steps whose network evaluations fit in `nfe`: `evals_per_step` per step, or one
    on the last step with `last_is_one` (Heun's: 2 steps - 1)."""
    if last_is_one:
        return max(1, (nfe - 1) // evals_per_step + 1)
    return max(1, nfe // evals_per_step)


def steps_for_sampler(sampler: str, nfe: int) -> int:
    """Steps of `sampler` within `nfe` evaluations: Heun's 2 per step but 1 on the last, one else."""
    return steps_for(nfe, 2, last_is_one=True) if sampler == "heun" else steps_for(nfe)


def commit() -> str:
    """The commit the benchmark ran at, with `+dirty` when the tree had uncommitted changes."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> dict:
    """Where the figures were measured."""
    info = {"cpu": cpu_model() or platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "bf16": torch.ops.mkldnn._is_mkldnn_bf16_supported()}  # without it (no AVX-512/AMX) bf16 is emulated
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def cpu_model() -> str | None:
    """The CPU's model name, from /proc/cpuinfo (Linux), else None: two machines of one kind here
    differ (an Intel CPU with AMX, an AMD EPYC without), and their figures with them."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def write_results(name: str, result: dict, path: str | Path | None = None) -> Path:
    """Write `result` with the commit the benchmark started at (`STARTED_AT`: a long run outlives
    later commits) and the machine to `path` (default benchmarks/results/NAME.json), through a
    temporary file so that an interrupted write leaves the old results whole."""
    path = Path(path) if path else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps({"commit": STARTED_AT, "machine": machine(), **result}, indent=2) + "\n")
    tmp.replace(path)
    return path


STARTED_AT = commit()  # at import: the code the benchmark runs


def fit_grid(model, sampler: str, steps: int, guidance: float | None = None, guidance_interval=None) -> None:
    """What `genkit fit-grid` stores, for a sampler that samples on a fitted grid (others: nothing), so
    that a benchmark scores the grid a user samples on once it is fitted (at `guidance` within
    `guidance_interval`, default the config's)."""
    if takes_fitted_grid(sampler):
        model.fit_grid(steps=steps, guidance=guidance, sampler=sampler, progress=False,
                       guidance_interval=guidance_interval)
