"""What the tests share: a tiny labelled imagefolder and a tiny config that trains in seconds
(fixtures), and helpers: running the scripts and entry points as a user does, random weights for
zero-initialised nets, and hypothesis strategies for config overrides."""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from PIL import Image

from genkit.config import all_keys, load_config

ROOT = Path(__file__).resolve().parent.parent


def run_script(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python ARGS...` from the repository root, as a user runs train.py, sample.py, eval.py."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def call(main, argv) -> tuple[int, str]:
    """Run a CLI entry point in-process: (exit status, stderr)."""
    code, _, stderr = call_out(main, argv)
    return code, stderr


def call_out(main, argv) -> tuple[int, str, str]:
    """Run a CLI entry point in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def assert_ran_or_one_line(code: int, stderr: str) -> None:
    """A command either succeeded or failed with status 2 and one line starting 'error: '."""
    lines = [line for line in stderr.splitlines() if line.strip() and "it/s]" not in line and "s/it]" not in line]
    if code == 0:
        return
    assert code == 2, stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]


def perturb(net, scale=0.05, seed=0):
    """Give zero-initialised layers random weights, so the output depends on every input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return net


def default_grid(sampler: str, net, path, prediction: str, steps: int, dim: int) -> tuple[torch.Tensor, dict]:
    """(times, options): the grid `sampler` gets by default for the exact denoiser `net` on `path`,
    and the options it takes there: its registered schedule, or for `adaptive` the one fitted to it
    by a pilot of its own (32 draws in `dim` dimensions), so that the caller's denoiser counts only
    its own evaluations."""
    from genkit.samplers import ADAPTIVE, SAMPLERS, SCHEDULES, AdaptiveGrid, Denoiser

    schedule = path.default_schedule(SAMPLERS[sampler].extra.get("schedule", "uniform"))
    if schedule == ADAPTIVE:
        pilot = torch.randn(32, dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        return AdaptiveGrid.calibrate(Denoiser(net, path, prediction), pilot).fitted(SAMPLERS[sampler].build, steps)
    return SCHEDULES[schedule](path, steps), {}


# Config overrides a careless user might type: real keys, near misses and junk, with any values.
CONFIG_KEYS = all_keys()
override_values = st.one_of(
    st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["true", "no", "", "[1, 2]", "[]", "{a: 1}", "null", "unet", "dit", "latest", "[", "3e-4"]),
    st.text(max_size=12),
)
override_keys = st.one_of(st.sampled_from(CONFIG_KEYS), st.text(min_size=0, max_size=20),
                          st.sampled_from(CONFIG_KEYS).map(lambda k: k[:-1]),
                          st.sampled_from(CONFIG_KEYS).map(lambda k: k + ".x"))


def reset_accelerate_state() -> None:
    """Forget accelerate's process-wide state, so that the next run in this process may choose
    another mixed precision (accelerate refuses a change once its state is made)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each test gets its own accelerate singleton state (mixed precision may differ)."""
    yield
    reset_accelerate_state()


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


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """Real MNIST digits from the bundled copy (100 train, 50 test) as a class-folder imagefolder:
    data that genkit's MNIST metrics accept, small enough to load in a moment."""
    import datasets

    from genkit.assets import locate

    root = tmp_path_factory.mktemp("digits")
    for split, n in (("train", 100), ("test", 50)):
        rows = datasets.load_dataset(str(locate("data/mnist")), split=f"{split}[:{n}]")
        for i, row in enumerate(rows):
            folder = root / split / str(row["label"])
            folder.mkdir(parents=True, exist_ok=True)
            row["image"].save(folder / f"{i}.png")
    return root


def digit_overrides(digits, output_dir) -> list[str]:
    """`tiny_overrides` on `digits` at 32 x 32 (padded, as the recipes do), for runs that are scored."""
    return tiny_overrides(digits, output_dir) + ["data.image_size=32", "data.fit=pad", "model.num_classes=10"]


def tiny_overrides(data_path, output_dir) -> list[str]:
    return [
        f"data.path={data_path}", "data.image_size=16", "data.fit=resize", f"output_dir={output_dir}",
        "model.num_classes=4", "model.unet.channels=32", "model.unet.channel_mult=[1,2]",
        "model.unet.num_res_blocks=1", "model.unet.attention_resolutions=[8]",
        "model.dit.hidden_size=32", "model.dit.depth=2", "model.dit.num_heads=2", "model.dit.patch_size=4",
        "train.batch_size=8", "train.max_steps=4", "train.warmup_steps=1", "train.log_every=1",
        "train.sample_every=0", "train.checkpoint_every=2", "train.mixed_precision=no",
        "sample.steps=3", "sample.num=4",
        # the default sampler, on its fixed grid: fitting its grid at the end of training (6 s on 32 x 32
        # digits, most of a test's time) has tests of its own
        "sample.fit_grid=false",
    ]


@pytest.fixture
def small_pilot(monkeypatch):
    """Fitted grids from pilots of 8 draws: for tests of how grids are fitted, stored and read, not of
    how good they are (a tiny model's 16 px images would start from 64, `pilot_draws`)."""
    import genkit.samplers.adaptive as adaptive

    monkeypatch.setattr(adaptive, "PILOT_DRAWS", (8, 8))


@pytest.fixture
def tiny_cfg(imagefolder, tmp_path):
    def make(*extra: str):
        return load_config(None, tiny_overrides(imagefolder, tmp_path / "run") + list(extra))
    return make
