"""One check of the arguments every way of drawing takes (the command line, `model.sample`, the
diffusers pipeline, reflow): counts, seeds, steps, guidance, its interval and class labels. Each
bad value is an `ArgumentError` named by its parameter, whatever its type; the command line maps
the names to its flags."""
from __future__ import annotations

import math
import numbers

import torch

from genkit.registry import ArgumentError

MAX_SEED, MAX_STEPS, MAX_NUM = 2**63 - 1, 100_000, 10_000_000  # beyond these a value is a typo
SHOWN = {MAX_SEED: "2**63-1"}


def shorten(value, limit: int = 60) -> str:
    """`repr(value)`, cut to `limit` characters: a message never echoes a huge value whole."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def reason(err: BaseException) -> str:
    """An exception in one line: its type and the first line of its message, cut to 200 characters."""
    text = str(err)
    return f"{type(err).__name__}: {text.splitlines()[0][:200] if text.strip() else 'unreadable'}"


def integer(value, name: str, low: int, high: int) -> int:
    """`value` as an int in low..high (a Python or numpy integer; not a bool, a float or a string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(name, f"must be an integer in {low}..{SHOWN.get(high, high)}, got {shorten(value)}")
    if not low <= value <= high:
        raise ArgumentError(name, f"must lie in {low}..{SHOWN.get(high, high)}, got {shorten(value)}")
    return int(value)


def number(value, name: str, low: float = 0.0) -> float:
    """`value` as a finite float >= `low` (an int or a float; not a bool or a string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < low:
        raise ArgumentError(name, f"must be a finite number >= {low:g}, got {shorten(value)}")
    return float(value)


def check_draw(n, seed, batch_size, steps=None, guidance=None) -> tuple:
    """The arguments of a draw of `n` samples, checked and made plain Python numbers: (n, seed,
    batch_size, steps, guidance); `steps` and `guidance` where the model takes them (None: the
    model's defaults, passed through)."""
    return (integer(n, "n", 1, MAX_NUM), integer(seed, "seed", 0, MAX_SEED),
            integer(batch_size, "batch_size", 1, MAX_NUM),
            None if steps is None else integer(steps, "steps", 1, MAX_STEPS),
            None if guidance is None else number(guidance, "guidance"))


def check_guidance_interval(value, name: str = "guidance_interval") -> tuple[float, ...]:
    """`value` as the noise levels where classifier-free guidance applies (Kynkäänniemi et al. 2024,
    "Applying guidance in a limited interval"): bounds on the noise-to-signal ratio sigma/alpha (EDM's
    sigma), `(lo, hi)` for lo <= sigma/alpha <= hi, `(lo,)` for every level from lo up, `()` for all.
    Returned as a tuple of floats; `(0,)` and `(0, inf)`, which are all levels too, come back as `()`."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or len(value) > 2 or \
            any(isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(v) for v in value):
        raise ArgumentError(name, f"must be [lo, hi], [lo] or [] (bounds on sigma/alpha), got {shorten(value)}")
    bounds = tuple(float(v) for v in value)
    if bounds and not (0 <= bounds[0] < math.inf and (len(bounds) == 1 or bounds[0] < bounds[1])):
        raise ArgumentError(name, f"needs 0 <= lo < hi (finite lo), got {shorten(value)}")
    if len(bounds) == 2 and bounds[1] == math.inf:
        bounds = bounds[:1]
    return () if bounds == (0.0,) else bounds


def check_images(images, batch_size) -> None:
    """Images to score, a tensor [N, C, H, W] with N >= 1, and how many go through the net at once."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ArgumentError("images", f"must be a tensor [N, C, H, W], got {shorten(images)}")
    if len(images) == 0:
        raise ArgumentError("images", "got no images to score")
    integer(batch_size, "batch_size", 1, MAX_NUM)


def class_labels(labels, n: int, num_classes: int) -> torch.Tensor | None:
    """`labels` (an int, a sequence or a tensor of class ids, or None: class i mod K for sample i)
    as [n] class ids in 0..num_classes-1; None for an unconditional model. Fractions, booleans
    and text are refused, never rounded."""
    if labels is None:
        return torch.arange(n) % num_classes if num_classes > 0 else None
    if num_classes == 0:
        raise ArgumentError("labels", "this model is unconditional (model.num_classes = 0)")
    wanted = f"class ids in 0..{num_classes - 1}"
    try:
        given = torch.as_tensor(labels).reshape(-1)
    except (TypeError, ValueError, OverflowError, RuntimeError):  # text, ragged lists, beyond int64
        raise ArgumentError("labels", f"must be {wanted}, got {shorten(labels)}") from None
    if given.dtype == torch.bool or given.is_complex() or \
            (given.is_floating_point() and not bool((given == given.round()).all() & given.isfinite().all())):
        raise ArgumentError("labels", f"must be {wanted}, got {shorten(labels)}")
    if given.numel() == 0:
        raise ArgumentError("labels", f"must be {wanted}, got none")
    if given.numel() == 1:
        given = given.expand(n)
    if given.numel() != n:
        raise ArgumentError("labels", f"got {given.numel()} labels for {n} samples")
    if given.min() < 0 or given.max() >= num_classes:
        raise ArgumentError("labels", f"must lie in 0..{num_classes - 1}")
    return given.long().clone()
