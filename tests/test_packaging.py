"""What a user gets from a plain (non-editable) install: recipes found by name, the bundled MNIST,
the `genkit` command and `python -m genkit`."""
import subprocess
import sys
import sysconfig

import pytest

from genkit.assets import find_recipe, locate, recipe_names
from tests.conftest import ROOT


def test_recipes_are_found_by_name_or_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # away from the repository: only the bundled copies are in reach
    assert "rf_unet_mnist" in recipe_names()
    by_name, by_path = find_recipe("rf_unet_mnist"), find_recipe("configs/rf_unet_mnist.yaml")
    assert by_name == by_path and by_name.is_file()
    assert find_recipe("nope") is None and find_recipe("../configs/rf_unet_mnist") is None
    (tmp_path / "mine.yaml").write_text("train: {lr: 0.1}\n")
    assert find_recipe("mine.yaml").resolve() == (tmp_path / "mine.yaml").resolve()  # a local file comes first
    assert locate("data/mnist") is not None and locate("data/nope") is None


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
def test_version_and_module_entry_point():
    import genkit

    out = subprocess.run([sys.executable, "-m", "genkit", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == f"genkit {genkit.__version__}"
    out = subprocess.run([sys.executable, "-m", "genkit"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "expected a command" in out.stderr


def test_commands_start_without_importing_libraries_only_some_commands_use():
    """diffusers, torchmetrics and FSDP took 6 of the 10 s that `genkit --help` took to start: they
    are imported where they are used."""
    heavy = ("diffusers", "torchmetrics", "torch.distributed.fsdp", "torch.distributed.tensor")
    out = subprocess.run([sys.executable, "-c", "import sys, genkit.cli; print(' '.join(sys.modules))"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert not [name for name in heavy if name in loaded]


def test_output_piped_into_head_is_no_error():
    """Regression: `genkit train --list-recipes | head -1` printed 'error: : Broken pipe'."""
    out = subprocess.run(f"{sys.executable} -m genkit train --list-recipes | head -1", shell=True, cwd=ROOT,
                         capture_output=True, text=True)
    assert out.stdout.strip() and out.stderr == ""


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_trains_and_samples_by_recipe_name(tmp_path):
    """Build the wheel, install it (no editable link, no repository on the path) into a new venv
    that borrows only the third-party packages, then train and sample from an empty directory."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheel")], check=True, timeout=300)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # torch and friends from this environment: a plain path entry, so its editable genkit hook never runs
    (tmp_path / "venv" / site.split(str(venv) + "/")[1] / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"])
    wheel = next((tmp_path / "wheel").glob("genkit-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, timeout=300)
    work = tmp_path / "work"
    work.mkdir()

    def genkit(*args):
        return subprocess.run([str(venv / "bin" / "genkit"), *args], cwd=work, capture_output=True, text=True,
                              timeout=600)

    where = subprocess.run([str(python), "-c", "import genkit; print(genkit.__file__)"], cwd=work,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), where
    train = genkit("train", "--config", "rf_unet_mnist", "train.max_steps=2", "train.batch_size=8",
                   "train.sample_every=0", "train.log_every=1", "output_dir=run")
    assert train.returncode == 0, train.stderr[-2000:]
    sample = genkit("sample", "--checkpoint", "run", "--num", "4", "--steps", "2", "--out", "grid.png")
    assert sample.returncode == 0, sample.stderr[-2000:]
    assert (work / "grid.png").stat().st_size > 0
