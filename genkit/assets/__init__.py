"""Files shipped inside the package: the recipes (`configs/`) and MNIST in the hub's parquet
layout (`data/mnist/`), so that a plain `pip install genkit` trains by recipe name, offline."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
RECIPES = ROOT / "configs"


def locate(path: str | Path) -> Path | None:
    """`path` if it exists from here, else the bundled file it names when relative
    (`data/mnist`, `configs/rf_unet_mnist.yaml`), else None."""
    given = Path(path).expanduser()
    if given.exists():
        return given
    if not given.is_absolute() and (ROOT / given).exists():
        return ROOT / given
    return None


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def find_recipe(name: str | Path) -> Path | None:
    """A recipe file: `name` as a path (see `locate`), or a bundled recipe by its name with or
    without `.yaml` (`rf_unet_mnist`); None if neither exists."""
    found = locate(name)
    if found is not None and found.is_file():
        return found
    for candidate in (RECIPES / str(name), RECIPES / f"{name}.yaml"):
        if Path(name).name == str(name) and candidate.is_file():
            return candidate
    return None
