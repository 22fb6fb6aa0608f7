"""Fashion-MNIST (Xiao, Rasul and Vollgraf 2017; Expat licence) from Debian's `dataset-fashion-mnist`
package into `data/fashion_mnist/`, in the hub's parquet layout that `data/mnist/` uses: one parquet
file per split, columns `image` (datasets.Image, PNG bytes, mode L) and `label` (ClassLabel, the ten
garment names), with the package's licence notice beside them.

    apt-get install dataset-fashion-mnist
    python scripts/fashion_mnist.py [--source /usr/share/datasets/fashion-mnist] [--out data/fashion_mnist]
"""
from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SPLITS = {"train": "train", "test": "t10k"}  # split -> the IDX files' prefix
LICENCE = Path("/usr/share/doc/dataset-fashion-mnist/copyright")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped): its magic number's dimensions, big-endian sizes, then unsigned bytes."""
    data = gzip.decompress(path.read_bytes())
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def convert(source: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    features = Features({"image": Image(), "label": ClassLabel(names=CLASSES)})
    for split, prefix in SPLITS.items():
        images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")  # [N, 28, 28]
        labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")  # [N]
        if len(images) != len(labels):
            raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels")
        rows = {"image": [PILImage.fromarray(image, mode="L") for image in images], "label": labels.tolist()}
        Dataset.from_dict(rows, features=features).to_parquet(str(out / f"{split}-00000-of-00001.parquet"))
        print(f"{split}: {len(images)} images, pixel mean {images.mean():.2f}")
    shutil.copy(LICENCE if LICENCE.is_file() else source / "LICENSE", out / "LICENSE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "fashion_mnist")
    args = parser.parse_args()
    convert(args.source, args.out)


if __name__ == "__main__":
    main()
