"""Image data sets through HF `datasets`: decoded into memory as uint8 tensors for fast epochs
(`ImageData`), or, for splits larger than `data.memory_mb`, read from `datasets`' memory-mapped
table as batches are asked for and decoded on worker processes (`DiskImageData`). Both give the
trainer the same bytes for the same (seed, step): the choice changes speed and memory only."""
from __future__ import annotations

import dataclasses
import difflib
import functools
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from genkit.arguments import reason, shorten
from genkit.assets import locate
from genkit.config import ConfigError, DataConfig



def resolve_data_path(path: str) -> str:
    """A local path as given, else a data set bundled with genkit (`data/mnist`, so the recipes
    work from any directory and from a plain install), else the string unchanged (a hub id)."""
    found = locate(path)
    return path if found is None else str(found)


@dataclass
class ImageData:
    """A whole split in memory: images [N, C, H, W] uint8 and labels [N] long (or None)."""

    images: torch.Tensor
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, ...]:
        """One image's shape (C, H, W)."""
        return tuple(self.images.shape[1:])

    def head(self, n: int) -> torch.Tensor:
        """The first n images, uint8 [n, C, H, W]."""
        return self.images[:n]

    def batch(self, indices: torch.Tensor, hflip_generator: torch.Generator | None = None):
        """(images scaled to [-1, 1], their labels, None: no noise is coupled to them); random
        horizontal flips if a generator is given. The trainer's data protocol, with `PairData`."""
        return as_batch(self.images[indices], self.labels[indices] if self.labels is not None else None,
                        hflip_generator)


def as_batch(images: torch.Tensor, labels: torch.Tensor | None, hflip_generator: torch.Generator | None):
    """uint8 images [B, C, H, W] -> (floats in [-1, 1], flipped at random where a generator is given,
    labels, None)."""
    x = images.float() / 127.5 - 1
    if hflip_generator is not None:
        flip = torch.rand(len(images), generator=hflip_generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x, labels, None


class DiskImageData:
    """A split left on disk: `datasets`' memory-mapped table of undecoded images (memory bounded
    whatever the split's size), each batch decoded by `fit_image` when it is asked for; with
    `stream`, decoded ahead of the trainer on worker processes. `labels` [N] are held in memory."""

    def __init__(self, table, cfg: DataConfig, labels: torch.Tensor | None):
        self.table, self.cfg, self.labels = table, cfg, labels
        self._ahead = None  # the prefetching iterator of `stream`, and the batch it has ready
        self._ready = None

    def __len__(self) -> int:
        return len(self.table)

    @functools.cached_property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.decode(torch.zeros(1, dtype=torch.long)).shape[1:])

    def head(self, n: int) -> torch.Tensor:
        return self.decode(torch.arange(min(n, len(self))))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 images [B, C, H, W] of rows `indices` [B]."""
        cells = self.table[indices.tolist()][self.cfg.image_column]
        images = torch.from_numpy(np.stack([fit_image(_decode(cell, int(i), self.cfg), self.cfg)
                                            for cell, i in zip(cells, indices)]))
        return images[:, None] if images.dim() == 3 else images.permute(0, 3, 1, 2).contiguous()

    def stream(self, indices_of: Callable[[int], torch.Tensor], start: int, stop: int, workers: int) -> None:
        """Decode the batches of steps start..stop - 1 (`indices_of(step)` [B]) ahead, on `workers`
        processes (0: in this one, one step ahead)."""
        loader = torch.utils.data.DataLoader(StepBatches(self, indices_of, start, stop), batch_size=None,
                                             num_workers=workers, prefetch_factor=4 if workers else None)
        self._ahead, self._ready = iter(loader), None

    def close(self) -> None:
        """Stop the workers of `stream` now (left to the garbage collector, their shutdown stalled a
        later run for up to 20 s)."""
        self._ahead = self._ready = None

    def batch(self, indices: torch.Tensor, hflip_generator: torch.Generator | None = None):
        """`ImageData.batch` on the same rows: the streamed batch where it is the one asked for, else
        (a step retried, or no stream) decoded here."""
        images = None
        if self._ahead is not None:
            if self._ready is None:
                self._ready = next(self._ahead, None)
            if self._ready is not None and torch.equal(self._ready[0], indices):
                images, self._ready = self._ready[1], None
                if isinstance(images, ConfigError):  # an image a worker could not decode: the run stops, naming it
                    raise images
        if images is None:
            images = self.decode(indices)
        return as_batch(images, self.labels[indices] if self.labels is not None else None, hflip_generator)


class RandomCrops:
    """Training images through a random crop, as ADM's (Dhariwal & Nichol, 2021): each image is
    decoded at `CROP_MARGIN` times `size` (`data`), and each draw takes a random square of side
    size..CROP_MARGIN * size at a random place, resized to `size` (bilinear, antialiased): crops of
    80-100% of the image. The centre crop (`head`) is what evaluation sees (`fit_image`)."""

    def __init__(self, data: ImageData | DiskImageData, size: int, hflip: bool):
        self.data, self.size, self.hflip = data, size, hflip

    def __len__(self) -> int:
        return len(self.data)

    @property
    def labels(self) -> torch.Tensor | None:
        return self.data.labels

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.data.shape[0], self.size, self.size)

    def head(self, n: int) -> torch.Tensor:
        """The first n images' centre crops, uint8 [n, C, size, size]."""
        images = self.data.head(n).float()
        return _resize(images, self.size).round().clamp(0, 255).to(torch.uint8)

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None):
        """`ImageData.batch`, flipped with `generator` where `hflip` says so, then cropped with it."""
        if generator is None:
            raise ValueError("random crops need a generator")
        x, labels, noise = self.data.batch(indices, generator if self.hflip else None)
        full = x.shape[-1]  # x: [B, C, full, full]
        sides = torch.randint(self.size, full + 1, (len(x),), generator=generator)
        corners = (torch.rand(len(x), 2, generator=generator) * (full - sides + 1)[:, None]).long()
        crops = [_resize(x[i:i + 1, :, top:top + side, left:left + side], self.size)
                 for i, (side, (top, left)) in enumerate(zip(sides.tolist(), corners.tolist()))]
        return torch.cat(crops), labels, noise  # [B, C, size, size]


CROP_MARGIN = 1.25  # a random crop's image is decoded this much larger than the crop: crops of 80-100% of it


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """x [B, C, H, W] -> [B, C, size, size], bilinear with antialiasing (a no-op at that size)."""
    if x.shape[-2:] == (size, size):
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class StepBatches(torch.utils.data.IterableDataset):
    """(indices, uint8 images) of the batches of steps start..stop - 1, in order; worker w of W
    decodes steps start + w, start + w + W, ..., which `DataLoader` interleaves back in order. An
    image that does not decode comes as its `ConfigError` in place of the images, for the trainer to
    raise as it is (a worker's own exception would reach it wrapped in the worker's traceback)."""

    def __init__(self, data: DiskImageData, indices_of: Callable[[int], torch.Tensor], start: int, stop: int):
        self.data, self.indices_of, self.start, self.stop = data, indices_of, start, stop

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        first, every = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        for step in range(self.start + first, self.stop, every):
            indices = self.indices_of(step)
            try:
                yield indices, self.data.decode(indices)
            except ConfigError as err:
                yield indices, err


def fit_image(image: Image.Image, cfg: DataConfig) -> np.ndarray:
    """Convert, then pad (centred, black) or resize-and-centre-crop to a square: [H, W(, C)] uint8
    (`random_crop` gives the centre crop: the trainer's draws are `RandomCrops`'s).
    16-bit grey levels are scaled to 8 bits (PIL's own conversion would clip them to white)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        levels = np.asarray(image, dtype=np.float64) / 257
        image = Image.fromarray(np.clip(np.round(levels), 0, 255).astype(np.uint8), mode="L")
    image = image.convert("L" if cfg.channels == 1 else "RGB")
    size, (w, h) = cfg.image_size, image.size
    if cfg.fit == "pad" and w <= size and h <= size:
        canvas = Image.new(image.mode, (size, size))
        canvas.paste(image, ((size - w) // 2, (size - h) // 2))
        image = canvas
    elif (w, h) != (size, size):
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image)


def _decode(value, index: int, cfg: DataConfig) -> Image.Image:
    """A PIL image from a data set cell: undecoded bytes or a path (`datasets`' image cell), a
    path as text (relative to a local data set's directory), an array of pixels [H, W(, C)], or
    an image already decoded."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (np.ndarray, list)):
        return _from_pixels(value, index, cfg)
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict) or not (value.get("bytes") or value.get("path")):
        raise ConfigError(f"data.image_column: row {index} of {cfg.path} holds {shorten(value)} in column "
                          f"'{cfg.image_column}', not an image (image bytes, a path or an array of pixels)")
    name = value.get("path")
    try:
        if value.get("bytes"):
            source = io.BytesIO(value["bytes"])
        else:
            source = Path(name)
            base = Path(resolve_data_path(cfg.path))
            if not source.is_absolute() and not source.exists() and base.exists():
                source = (base if base.is_dir() else base.parent) / source
        image = Image.open(source)
        image.load()
        return image
    except Exception as err:  # PIL raises many kinds for a bad file
        raise ConfigError(f"data.path: image {name or f'#{index}'} of {cfg.path} cannot be decoded "
                          f"({reason(err)})") from None


def _from_pixels(value, index: int, cfg: DataConfig) -> Image.Image:
    """An image from an array of pixels [H, W] or [H, W, C] (C = 1, 3 or 4): uint8 as it is,
    other numbers read as 0..255 if any exceeds 1, else as 0..1."""
    try:
        pixels = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        pixels = None
    if pixels is None or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (1, 3, 4)) \
            or not np.isfinite(pixels).all():
        raise ConfigError(f"data.image_column: row {index} of {cfg.path} holds an array that is not an image "
                          f"(expected finite pixels [H, W] or [H, W, C])")
    if not (isinstance(value, np.ndarray) and value.dtype == np.uint8) and pixels.size and pixels.max() <= 1:
        pixels = pixels * 255
    pixels = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)


def _label(value, index: int, cfg: DataConfig) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and \
            not (isinstance(value, float) and value.is_integer()):
        raise ConfigError(f"data.label_column: row {index} of {cfg.path} has label {value!r}, not an integer class id")
    return int(value)


FILE_FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}
SINGLE_FILE_SPLIT = "train"  # the one split a data set in one file holds


def open_split(path: str, split: str):
    """`datasets`' split `split` of a data set directory, a hub id, or one data file (a parquet,
    arrow, csv or json file, which holds the one split 'train'); an image folder in the common
    layout is indexed by `image_folder_split`, as `datasets`' imagefolder would read it."""
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    if Path(path).is_dir():
        indexed = image_folder_split(Path(path), split)
        if indexed is not None:
            return indexed
    if not Path(path).is_file():
        return datasets.load_dataset(path, split=split)
    kind = FILE_FORMATS.get(Path(path).suffix.lower())
    if kind is None:
        raise ConfigError(f"data.path: {path} is a file genkit cannot read as a data set; name a directory, a hub "
                          f"id, or a {', '.join(sorted(FILE_FORMATS))} file")
    if split != SINGLE_FILE_SPLIT:
        raise ConfigError(f"data.path: {path} is one file, which holds one split ('{SINGLE_FILE_SPLIT}'), not "
                          f"'{split}'; keep the splits apart as files in a directory ({split}-*.{kind})")
    return datasets.load_dataset(kind, data_files={SINGLE_FILE_SPLIT: path}, split=SINGLE_FILE_SPLIT)


FOLDER_SPLITS = ("train", "test", "validation")


def image_folder_split(root: Path, split: str):
    """Split `split` of an image folder laid out as root/<split>/<class>/<image>, with splits named
    train, test or validation and nothing else in it: a `datasets.Dataset` of undecoded image paths
    and labels (the sorted class names of every split, as `datasets`' imagefolder numbers them), in
    its row order (sorted paths). None for any other layout, which `datasets` reads. imagefolder
    records metadata of every file first (minutes and half a gigabyte for 200,000 images); this
    lists the folders (seconds)."""
    import datasets
    import pyarrow as pa
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    def subdirectories(directory: Path) -> list[Path] | None:
        entries = list(directory.iterdir())
        return entries if all(e.is_dir() for e in entries) else None

    root = root.resolve()  # rows name absolute paths, as imagefolder's do
    splits = subdirectories(root)
    if not splits or any(s.name not in FOLDER_SPLITS for s in splits):
        return None
    files: dict[str, list[tuple[str, str]]] = {}  # split -> (path, class)
    for split_dir in splits:
        classes = subdirectories(split_dir)
        if classes is None:
            return None
        for class_dir in classes:
            with os.scandir(class_dir) as entries:
                for entry in entries:
                    if not entry.is_file() or os.path.splitext(entry.name)[1].lower() not in ImageFolder.EXTENSIONS:
                        return None  # metadata files, other files, deeper folders: `datasets`' rules
                    files.setdefault(split_dir.name, []).append((entry.path, class_dir.name))
    if split not in files:
        raise ValueError(f'Unknown split "{split}". Should be one of {sorted(files)}.')
    names = sorted({label for rows in files.values() for _, label in rows})
    rows = sorted(files[split])
    paths = pa.array([path for path, _ in rows], pa.string())
    image = pa.StructArray.from_arrays([pa.nulls(len(rows), pa.binary()), paths], names=["bytes", "path"])
    features = datasets.Features({"image": datasets.Image(decode=False)})
    columns = {"image": image}
    if len(names) > 1:  # imagefolder's rule: labels where there is more than one class
        features["label"] = datasets.ClassLabel(names=names)
        index = {name: i for i, name in enumerate(names)}
        columns["label"] = pa.array([index[label] for _, label in rows], pa.int64())
    return datasets.Dataset(pa.table(columns), info=datasets.DatasetInfo(features=features), split=split)


def _open_images(cfg: DataConfig, split: str):
    """`datasets`' split with its image cells left undecoded, and whether it has labels; `ConfigError`
    (one line) for a missing path, an empty split or absent columns."""
    import datasets

    path = resolve_data_path(cfg.path)
    if not Path(path).exists():
        local_parent = Path(path).parent
        if path.startswith((".", "/", "~")) or path.count("/") != 1 or local_parent.is_dir():  # not a hub id
            near = difflib.get_close_matches(Path(path).name, [p.name for p in local_parent.iterdir()], n=1) \
                if local_parent.is_dir() else []
            hint = f" (did you mean {local_parent / near[0]}?)" if near else ""
            raise ConfigError(f"data.path: {cfg.path} does not exist{hint}")
    try:
        ds = open_split(path, split)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"data.path: cannot load split '{split}' from {cfg.path}: {str(err).splitlines()[0]}")
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError,
            datasets.exceptions.DatasetGenerationError) as err:  # the last: files that are no data set's rows
        raise ConfigError(f"data.path: {cfg.path} holds no loadable data set ({type(err).__name__})")
    if len(ds) == 0:
        raise ConfigError(f"data.path: split '{split}' of {cfg.path} is empty")
    if cfg.image_column not in ds.column_names:
        raise ConfigError(f"data.image_column: '{cfg.image_column}' is not a column of {cfg.path} "
                          f"(columns: {', '.join(ds.column_names)})")
    if isinstance(ds.features[cfg.image_column], datasets.Image):  # decode here, to name a file that fails
        ds = ds.cast_column(cfg.image_column, datasets.Image(decode=False))
    return ds, bool(cfg.label_column) and cfg.label_column in ds.column_names


def load_images(cfg: DataConfig, split: str | None = None, limit: int | None = None,
                progress: bool = True) -> ImageData:
    """Load a split with `datasets.load_dataset` and decode it into memory.

    Raises `ConfigError` (one line) for a missing path, an empty split or absent columns.
    """
    split = split or cfg.split
    ds, has_labels = _open_images(cfg, split)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    arrays, labels = [], []
    for i, row in enumerate(tqdm(ds, desc=f"decoding {split}", disable=not progress, leave=False)):
        arrays.append(fit_image(_decode(row[cfg.image_column], i, cfg), cfg))
        if has_labels:
            labels.append(_label(row[cfg.label_column], i, cfg))
    images = torch.from_numpy(np.stack(arrays))
    images = images[:, None] if images.dim() == 3 else images.permute(0, 3, 1, 2)  # [N, C, H, W]
    return ImageData(images.contiguous(), torch.tensor(labels) if has_labels else None)


def open_images(cfg: DataConfig, split: str | None = None,
                progress: bool = True) -> ImageData | DiskImageData | RandomCrops:
    """A split for training: decoded into memory (`load_images`) where `cfg.loader` says `memory`, or
    says `auto` and the decoded split takes at most `cfg.memory_mb`; else left on disk
    (`DiskImageData`); seen through `RandomCrops` where `cfg.fit` says `random_crop`."""
    split = split or cfg.split
    if cfg.fit == "random_crop":
        hflip, size = cfg.hflip, cfg.image_size
        cfg = dataclasses.replace(cfg, image_size=math.ceil(size * CROP_MARGIN), fit="resize", hflip=False)
        return RandomCrops(open_images(cfg, split, progress), size, hflip)
    ds, has_labels = _open_images(cfg, split)
    decoded_mb = len(ds) * cfg.channels * cfg.image_size**2 / 2**20
    if cfg.loader == "memory" or (cfg.loader == "auto" and decoded_mb <= cfg.memory_mb):
        return load_images(cfg, split, progress=progress)
    labels = None
    if has_labels:
        labels = torch.tensor([_label(value, i, cfg) for i, value in enumerate(ds[cfg.label_column])])
    return DiskImageData(ds, cfg, labels)


def label_frequencies(cfg: DataConfig, num_classes: int, split: str | None = None) -> torch.Tensor:
    """The fraction of each class among a split's labels, an empirical p(y): [num_classes]."""
    ds = open_split(resolve_data_path(cfg.path), split or cfg.split)
    labels = torch.tensor(ds[cfg.label_column])
    return torch.bincount(labels, minlength=num_classes).double() / len(labels)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of n examples used in `epoch`: a pure function of (seed, epoch), which
    makes the data order exactly reproducible on resume."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of the global batch for optimiser step `step` (epochs drop their last partial batch)."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ConfigError(f"train.batch_size: {batch_size} is larger than the data set ({n} images)")
    epoch, offset = divmod(step, per_epoch)
    return epoch_order(n, seed, epoch)[offset * batch_size:(offset + 1) * batch_size]


@dataclass
class StepIndices:
    """`batch_indices` of each step for one process (rank `rank` of `world`): a picklable function of
    the step, for decoding workers."""

    n: int
    batch_size: int
    seed: int
    rank: int = 0
    world: int = 1

    def __call__(self, step: int) -> torch.Tensor:
        return batch_indices(self.n, self.batch_size, self.seed, step)[self.rank::self.world]
