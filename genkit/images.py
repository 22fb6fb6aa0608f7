"""Image edges of the library: [0, 1] tensors in, uint8 grids and PNG files out."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image

from genkit.files import atomic_path
from genkit.registry import ArgumentError


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 in [0, 255], same shape."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[0, 1] images [N, C, H, W] (C = 1 or 3) -> N PIL images, mode L or RGB."""
    arrays = to_uint8(images.cpu()).permute(0, 2, 3, 1).numpy()  # [N, H, W, C]
    return [Image.fromarray(a[..., 0] if a.shape[2] == 1 else a) for a in arrays]


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """Tile [N, C, H, W] uint8 images into one [C, H', W'] grid, `nrow` images per row."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = torch.zeros(c, rows * (h + padding) + padding, nrow * (w + padding) + padding, dtype=images.dtype)
    for i in range(n):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


def image_format(out: str | Path) -> str:
    """PIL's format for a file name's extension (.png, .jpg, .webp, ...), or `ArgumentError`."""
    suffix = Path(out).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise ArgumentError("out", f"cannot write images as '{suffix or Path(out).name}'; name a .png file")
    return fmt


def save_grid(images: torch.Tensor, out: str | Path, nrow: int | None = None) -> Path:
    """Write [0, 1] images [N, C, H, W] as one grid image, in the format its extension names,
    atomically (a crash leaves the old file or the new one, never half of one)."""
    fmt = image_format(out)
    grid = make_grid(to_uint8(images.cpu()), nrow)
    array = grid.permute(1, 2, 0).numpy()  # [H', W', C]
    image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    with atomic_path(out) as tmp:
        image.save(tmp, format=fmt)
    return Path(out)


def check_new_dir(out_dir: str | Path) -> Path:
    """`out_dir` if it is new or an empty directory, else `ArgumentError`."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ArgumentError("outdir", f"{out} exists and is not an empty directory; name a new one")
    return out


def check_npz_name(out: str | Path) -> None:
    if Path(out).suffix != ".npz":
        raise ArgumentError("npz", f"name a .npz file, got {Path(out).name!r}")


def save_images(images: torch.Tensor, out_dir: str | Path, start_index: int = 0) -> Path:
    """Write [0, 1] images [N, C, H, W] as one PNG each, `out_dir/000000.png` on (the layout that
    clean-fid and torch-fidelity read), into a directory that must be new or empty."""
    out = check_new_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(to_pil(images), start=start_index):
        with atomic_path(out / f"{i:06d}.png") as tmp:
            image.save(tmp, format="PNG")
    return out


def save_npz(images: torch.Tensor, labels: torch.Tensor | None, out: str | Path) -> Path:
    """Write [0, 1] images [N, C, H, W] as uint8 [N, H, W, C] under `arr_0` (the layout of the
    ADM evaluation suite, which torch-fidelity and clean-fid also take), with `labels` [N] if any."""
    import numpy as np

    check_npz_name(out)
    arrays = {"arr_0": to_uint8(images.cpu()).permute(0, 2, 3, 1).numpy()}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy()
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return Path(out)
