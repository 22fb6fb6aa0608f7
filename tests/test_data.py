import multiprocessing
import shutil

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


def test_a_split_on_disk_gives_the_bytes_of_one_in_memory(imagefolder):
    """`open_images` keeps a split in memory up to `data.memory_mb` and leaves a larger one on disk;
    `DiskImageData` decodes the same bytes, flips them with the same draws, and, streamed by worker
    processes, hands over each step's batch in order; a step asked for again (a retried update) is
    decoded where it is asked for."""
    from genkit.data import DiskImageData, ImageData, StepIndices, open_images

    cfg = DataConfig(path=str(imagefolder), image_size=16, fit="resize")
    memory = open_images(cfg, progress=False)
    disk = open_images(DataConfig(path=str(imagefolder), image_size=16, fit="resize", memory_mb=0), progress=False)
    assert isinstance(memory, ImageData) and isinstance(disk, DiskImageData)
    assert len(disk) == len(memory) == 32 and disk.shape == memory.shape == (1, 16, 16)
    assert torch.equal(disk.labels, memory.labels) and torch.equal(disk.head(5), memory.images[:5])
    indices = StepIndices(len(memory), 8, seed=3, rank=1, world=2)
    for step in range(3):
        ours = disk.batch(indices(step), torch.Generator().manual_seed(step))
        theirs = memory.batch(indices(step), torch.Generator().manual_seed(step))
        assert all(torch.equal(a, b) for a, b in zip(ours[:2], theirs[:2])) and ours[2] is None
    disk.stream(indices, 2, 9, workers=2)
    for step in (2, 3, 3, 4, 5, 6, 7, 8):  # step 3 twice
        x, y, _ = disk.batch(indices(step))
        assert torch.equal(x, memory.batch(indices(step))[0]) and torch.equal(y, memory.labels[indices(step)])
    assert disk._ready is None and next(disk._ahead, None) is None  # every streamed batch was used, in order


@pytest.mark.parametrize("augment", [("data.hflip=true",), ("data.hflip=true", "data.fit=random_crop")])
def test_training_from_disk_matches_memory_bitwise_and_resumes_exactly(tiny_cfg, tmp_path, augment):
    """A run that reads its data from disk (two decoding workers, random flips, random crops) ends with
    the weights of the same run in memory, bit for bit, and, killed and resumed, with the weights it
    would have had."""
    from safetensors.torch import load_file

    from genkit.training import train

    def weights(final):
        return load_file(str(final / "net.safetensors"))

    in_memory = weights(train(tiny_cfg(*augment, f"output_dir={tmp_path / 'memory'}")))
    disk = (*augment, "data.loader=disk", "data.workers=2", f"output_dir={tmp_path / 'disk'}")
    from_disk = train(tiny_cfg(*disk))
    assert all(torch.equal(in_memory[k], v) for k, v in weights(from_disk).items())
    shutil.rmtree(from_disk)  # as if the run had died between step 2 and step 4
    resumed = train(tiny_cfg(*disk, "train.resume=latest"))
    assert all(torch.equal(in_memory[k], v) for k, v in weights(resumed).items())


def test_an_image_that_does_not_decode_on_a_worker_stops_training_naming_it(imagefolder, tmp_path, tiny_cfg):
    """A damaged file in a split read from disk stops the run with one line naming the file, from a
    decoding worker as from the main process (not the worker's traceback), and its workers with it."""
    from genkit.training import train

    damaged = tmp_path / "damaged"
    shutil.copytree(imagefolder, damaged)
    bad = sorted((damaged / "train" / "2").iterdir())[0]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    for workers in (0, 2):
        cfg = tiny_cfg(f"data.path={damaged}", "data.loader=disk", f"data.workers={workers}", "train.max_steps=8",
                       f"output_dir={tmp_path / f'run{workers}'}")
        with pytest.raises(ConfigError, match=f"data.path: image .*{bad.name} of .* cannot be decoded") as caught:
            train(cfg)
        assert "Traceback" not in str(caught.value)
        assert not multiprocessing.active_children()  # the workers stop with the run, not at a later collection


def test_random_crops_take_80_to_100_percent_at_random_and_evaluation_sees_the_centre(tmp_path):
    """`data.fit=random_crop` (ADM's): images decoded at 5/4 of `image_size`, each draw a square of
    side image_size..5/4 image_size at a random place, resized to image_size. On an image whose
    pixel is its column, a crop of side s from column c0 reads c0 + (j + 1/2) s / size - 1/2 at
    column j: its slope and offset give the side and place back. The evaluation loader and `head`
    see the centre crop; the same generator gives the same crops; flips come first where asked."""
    from PIL import Image

    from genkit.data import RandomCrops, open_images

    folder = tmp_path / "ramp" / "train" / "0"
    folder.mkdir(parents=True)
    Image.fromarray(torch.arange(40, dtype=torch.uint8).repeat(40, 1).numpy() * 6, mode="L").save(folder / "a.png")
    cfg = DataConfig(path=str(tmp_path / "ramp"), image_size=32, fit="random_crop")
    data = open_images(cfg, progress=False)
    assert isinstance(data, RandomCrops) and data.shape == (1, 32, 32) and len(data) == 1
    assert data.data.shape == (1, 40, 40)  # decoded 5/4 as large
    sides, lefts = [], []
    for seed in range(200):
        x, _, _ = data.batch(torch.zeros(1, dtype=torch.long), torch.Generator().manual_seed(seed))
        assert x.shape == (1, 1, 32, 32)
        columns = ((x[0, 0] + 1) * 127.5 / 6).mean(0)  # the source column each crop column reads (x in [-1, 1])
        side = (columns[24] - columns[8]).item() * 32 / 16
        left = columns[8].item() - 8.5 * side / 32 + 0.5  # inner columns: the filter is cut at the edges
        sides.append(side)
        lefts.append(left)
        assert 32 - 0.1 < side < 40 + 0.1 and -0.1 < left and left + side < 40 + 0.1
    assert min(sides) < 33 and max(sides) > 39 and max(lefts) - min(lefts) > 5  # the whole range is drawn
    again = data.batch(torch.zeros(1, dtype=torch.long), torch.Generator().manual_seed(7))[0]
    assert torch.equal(again, data.batch(torch.zeros(1, dtype=torch.long), torch.Generator().manual_seed(7))[0])
    centre = load_images(cfg, progress=False).images  # evaluation's geometry: shorter side to 32, centre
    assert centre.shape == (1, 1, 32, 32) and torch.equal(centre, load_images(
        DataConfig(path=cfg.path, image_size=32, fit="resize"), progress=False).images)
    assert data.head(1).shape == (1, 1, 32, 32)
    assert (data.head(1).float() - centre.float()).abs().max() <= 6  # the same picture, resized from 40 px
    flipped = open_images(DataConfig(path=cfg.path, image_size=32, fit="random_crop", hflip=True), progress=False)
    slopes = {bool(flipped.batch(torch.zeros(1, dtype=torch.long), torch.Generator().manual_seed(s))[0][0, 0, 0]
                   .diff().mean() > 0) for s in range(20)}
    assert slopes == {True, False}  # some draws flipped, some not
    from genkit.config import load_config

    with pytest.raises(ConfigError, match="data.fit: latents are encoded once"):
        load_config("configs/rf_dit_latent_mnist.yaml", ["data.fit=random_crop"])


def test_an_image_folder_is_indexed_as_datasets_imagefolder_reads_it(tmp_path):
    """root/<split>/<class>/<image> is listed by genkit (seconds for 200,000 images, where imagefolder
    records every file's metadata first): the same rows in the same order, the same class names
    (every split's, sorted) and labels as `datasets`' imagefolder; other layouts are left to it."""
    import datasets
    import numpy as np
    from PIL import Image

    from genkit.data import image_folder_split

    rng = np.random.default_rng(0)
    for i in range(30):
        split = "train" if i < 20 else "test"
        label = ["cat", "dog", "emu"][i % 3] if split == "train" else ["ant", "cat"][i % 2]
        (tmp_path / "pets" / split / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((5, 5)) * 255).astype(np.uint8)).save(tmp_path / "pets" / split / label / f"{i}.png")
    for split in ("train", "test"):
        ours = image_folder_split(tmp_path / "pets", split)
        theirs = datasets.load_dataset(str(tmp_path / "pets"), split=split).cast_column("image",
                                                                                         datasets.Image(decode=False))
        assert ours.features == theirs.features and ours.features["label"].names == ["ant", "cat", "dog", "emu"]
        assert ours["image"] == theirs["image"] and ours["label"] == theirs["label"]
    with pytest.raises(ValueError, match="Unknown split"):
        image_folder_split(tmp_path / "pets", "validation")
    (tmp_path / "pets" / "train" / "cat" / "metadata.csv").write_text("file_name,caption\n")
    assert image_folder_split(tmp_path / "pets", "train") is None  # metadata: imagefolder's rules
    assert image_folder_split(tmp_path / "pets" / "train", "train") is None  # classes without splits
