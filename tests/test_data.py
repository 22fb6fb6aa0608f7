import pytest
import torch

from genkit.config import ConfigError, DataConfig
from genkit.data import batch_indices, load_images


def test_mnist_parquet_layout_loads_padded_to_32():
    data = load_images(DataConfig(), split="test", limit=50, progress=False)
    assert data.images.shape == (50, 1, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels.shape == (50,) and 0 <= data.labels.min() and data.labels.max() <= 9
    # 28x28 digits centred on a black 32x32 canvas: the 2-pixel border is empty
    border = torch.cat([data.images[..., :2, :].flatten(), data.images[..., -2:, :].flatten(),
                        data.images[..., :, :2].flatten(), data.images[..., :, -2:].flatten()])
    assert border.max() == 0 and data.images.max() > 200
    x, y, noise = data.batch(torch.arange(4))
    assert noise is None  # images come with no coupled noise (reflow pairs do)
    assert x.min() >= -1 and x.max() <= 1 and x.dtype == torch.float32 and y.tolist() == data.labels[:4].tolist()


def test_fashion_mnist_ships_in_the_same_layout_with_its_licence():
    """The bundled Fashion-MNIST (scripts/fashion_mnist.py) loads by its path as MNIST does, from any
    directory: 10,000 test images of ten garments, the test pixel mean of the IDX files (73.15)."""
    import json

    import pyarrow.parquet as pq

    from genkit.assets import locate

    root = locate("data/fashion_mnist")
    assert root is not None and "Expat" in (root / "LICENSE").read_text()
    meta = json.loads(pq.read_metadata(root / "test-00000-of-00001.parquet").metadata[b"huggingface"])
    assert meta["info"]["features"]["label"]["names"][9] == "Ankle boot"
    data = load_images(DataConfig(path="data/fashion_mnist", fit="pad"), split="test", progress=False)
    assert data.images.shape == (10_000, 1, 32, 32) and sorted(set(data.labels.tolist())) == list(range(10))
    assert abs(data.images[..., 2:-2, 2:-2].double().mean().item() - 73.15) < 0.01  # the 28x28 images, unpadded


def test_imagefolder_resized_with_labels(imagefolder):
    data = load_images(DataConfig(path=str(imagefolder), image_size=16, fit="resize"), progress=False)
    assert data.images.shape == (32, 1, 16, 16)
    assert sorted(set(data.labels.tolist())) == [0, 1, 2, 3]


def test_rgb_conversion(imagefolder):
    data = load_images(DataConfig(path=str(imagefolder), image_size=8, channels=3, fit="resize"), progress=False)
    assert data.images.shape == (32, 3, 8, 8)


def test_hflip_is_seeded():
    data = load_images(DataConfig(), split="test", limit=8, progress=False)
    a = data.batch(torch.arange(8), torch.Generator().manual_seed(1))[0]
    b = data.batch(torch.arange(8), torch.Generator().manual_seed(1))[0]
    plain = data.batch(torch.arange(8))[0]
    assert torch.equal(a, b)
    flipped = [not torch.equal(a[i], plain[i]) for i in range(8)]
    assert any(flipped) and all(torch.equal(a[i], plain[i].flip(-1)) for i in range(8) if flipped[i])


@pytest.mark.parametrize("path, needle", [("/nonexistent/dir", "does not exist"), ("./nope", "does not exist")])
def test_missing_path_is_one_line(path, needle):
    with pytest.raises(ConfigError, match=needle):
        load_images(DataConfig(path=path), progress=False)


def test_empty_directory(tmp_path):
    with pytest.raises(ConfigError, match="data.path"):
        load_images(DataConfig(path=str(tmp_path)), progress=False)


def test_batch_order_is_a_pure_function_of_seed_and_step():
    n, b = 100, 16
    assert torch.equal(batch_indices(n, b, 0, 7), batch_indices(n, b, 0, 7))
    assert not torch.equal(batch_indices(n, b, 0, 7), batch_indices(n, b, 1, 7))
    epoch = torch.cat([batch_indices(n, b, 3, s) for s in range(n // b)])
    assert len(set(epoch.tolist())) == len(epoch) == (n // b) * b  # no repeats within an epoch
    with pytest.raises(ConfigError, match="batch_size"):
        batch_indices(10, 16, 0, 0)


def test_grid_layout_and_png(tmp_path):
    from PIL import Image

    from genkit.images import make_grid, save_grid, to_uint8

    images = torch.linspace(0, 1, 5 * 3 * 4 * 4).reshape(5, 3, 4, 4)
    grid = make_grid(to_uint8(images), nrow=2, padding=1)
    assert grid.shape == (3, 3 * 5 + 1, 2 * 5 + 1)  # 3 rows of 2, 4 px + 1 px padding
    assert torch.equal(grid[:, 1:5, 6:10], to_uint8(images[1]))  # image 1: row 0, column 1
    assert to_uint8(torch.tensor([0.0, 0.5, 1.0, 2.0])).tolist() == [0, 128, 255, 255]
    path = save_grid(images, tmp_path / "g.png", nrow=2)
    assert Image.open(path).size == (2 * 6 + 2, 3 * 6 + 2) and Image.open(path).mode == "RGB"
