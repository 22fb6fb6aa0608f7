"""Learning-rate schedules and the training precision."""
from __future__ import annotations

import math
import os

import torch

from genkit.inference import hardware_precision


def warmup_cosine(warmup: int, total: int):
    """LR multiplier: linear warm-up over `warmup` steps, then a cosine decay to zero at `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def lr_schedule(optimizer: torch.optim.Optimizer, tc) -> torch.optim.lr_scheduler.LambdaLR:
    """`train.lr_schedule` over `train.max_steps` with `train.warmup_steps` of warm-up: genkit's
    warm-up + cosine, or any schedule of `diffusers.optimization.get_scheduler` by name."""
    if tc.lr_schedule == "warmup_cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(tc.warmup_steps, tc.max_steps))
    from diffusers.optimization import get_scheduler  # importing diffusers takes seconds: only where it is used

    return get_scheduler(tc.lr_schedule, optimizer, num_warmup_steps=tc.warmup_steps, num_training_steps=tc.max_steps)


def mixed_precision(choice: str) -> str | None:
    """What to hand accelerate for `train.mixed_precision`. `auto` defers to a precision chosen with
    `accelerate launch --mixed_precision` or `accelerate config` (None: accelerate reads it), and
    otherwise takes bf16 where the hardware has it, fp16 (with accelerate's loss scaling) on a GPU
    without, and full precision on a CPU without. The launcher's own default, `no`, does not count
    as a choice: ask for full precision with `no` here."""
    if choice != "auto":
        return choice
    if os.environ.get("ACCELERATE_MIXED_PRECISION", "no") != "no":
        return None
    return hardware_precision(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
