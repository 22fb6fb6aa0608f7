"""Shared fixtures: a tiny labelled imagefolder and a tiny config that trains in seconds."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from genkit.config import load_config


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each test gets its own accelerate singleton state (mixed precision may differ)."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="session")
def imagefolder(tmp_path_factory):
    """Grey 20x20 images in class folders 0..3 (32 train, 16 test): bright squares whose position
    encodes the class."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for i in range(48):
        label, split = i % 4, "train" if i < 32 else "test"
        img = (rng.random((20, 20)) * 40).astype(np.uint8)
        r, c = divmod(label, 2)
        img[2 + 8 * r:10 + 8 * r, 2 + 8 * c:10 + 8 * c] = 230
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(folder / f"{i}.png")
    return root


def tiny_overrides(data_path, output_dir) -> list[str]:
    return [
        f"data.path={data_path}", "data.image_size=16", "data.fit=resize", f"output_dir={output_dir}",
        "model.num_classes=4", "model.unet.channels=32", "model.unet.channel_mult=[1,2]",
        "model.unet.num_res_blocks=1", "model.unet.attention_resolutions=[8]",
        "model.dit.hidden_size=32", "model.dit.depth=2", "model.dit.num_heads=2", "model.dit.patch_size=4",
        "train.batch_size=8", "train.max_steps=4", "train.warmup_steps=1", "train.log_every=1",
        "train.sample_every=0", "train.checkpoint_every=2", "train.mixed_precision=no",
        "sample.steps=3", "sample.num=4",
    ]


@pytest.fixture
def tiny_cfg(imagefolder, tmp_path):
    def make(*extra: str):
        return load_config(None, tiny_overrides(imagefolder, tmp_path / "run") + list(extra))
    return make
