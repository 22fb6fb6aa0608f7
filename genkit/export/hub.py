"""Models that travel: `save_pretrained` writes a directory that both `genkit.load` and diffusers'
`GenkitPipeline.from_pretrained` read, with a model card; `genkit.load("owner/name")` fetches one
from the Hugging Face Hub (through its cache, honouring HF_HUB_OFFLINE); `push_to_hub` uploads one.

    <directory>/
        model_index.json                 the diffusers pipeline: GenkitPipeline(model, scheduler)
        pipeline.py                      two lines naming it, for DiffusionPipeline.from_pretrained
        model/config.json                the genkit config and the model's fitted time grids (GenkitNet's arguments)
        model/diffusion_pytorch_model.safetensors
        scheduler/scheduler_config.json  the diffusers scheduler matching the path (absent if none does)
        genkit.json                      training steps and time, metrics with their floor
        README.md, samples.png           the model card and its sample grid
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import torch

from genkit.checkpoint import read_grids
from genkit.config import to_dict
from genkit.export.model_card import check_report, model_card
from genkit.files import write_json
from genkit.images import save_grid
from genkit.inference import GenerativeModel
from genkit.paths import FlowPath
from genkit.registry import ArgumentError

INDEX_FILE, CARD_DATA_FILE, GRID_FILE, SHIM_FILE = "model_index.json", "genkit.json", "samples.png", "pipeline.py"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as the Hub spells repositories
SHIM = '"""Lets `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` find genkit\'s pipeline."""\n' \
       "from genkit.export.diffusers_pipeline import GenkitPipeline  # noqa: F401\n"


def is_pretrained(directory: Path) -> bool:
    return (Path(directory) / INDEX_FILE).is_file() and (Path(directory) / "model" / "config.json").is_file()


def default_scheduler(model):
    """The diffusers scheduler a pipeline samples with: DPM-Solver++ (multistep) on DDPM's discrete
    paths, flow-matching Euler on rectified flows, none elsewhere (the model's genkit sampler)."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    if model.family != "denoiser":
        return None
    if isinstance(model.path, FlowPath):
        return model.make_scheduler(FlowMatchEulerDiscreteScheduler)
    return model.make_scheduler(DPMSolverMultistepScheduler) if hasattr(model.path, "betas") else None


def save_pretrained(model, directory: str | Path, metrics: dict | None = None, grid: int = 64,
                    repo_id: str | None = None) -> Path:
    """Write `model` (see the module docstring) to `directory`, replacing an earlier export there;
    `metrics` is a report of `genkit eval` (its metrics and real-data floor go into the card);
    `grid` samples (0: none) are drawn with seed 0 for the card, whose examples load `repo_id`
    (default: the directory). Written beside and renamed into place: whenever the process dies,
    a whole export survives (the new one, or the old one under `.old-<name>` beside it)."""
    if metrics is not None:
        check_report(metrics)
    if model.family == "autoencoder" or getattr(model, "codec", None) is not None:
        raise ArgumentError("model", "exports hold pixel-space denoisers and autoregressive models; share an autoencoder "
                                     "or a latent model as its run or checkpoint directory")
    out = Path(directory).expanduser()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_pretrained(out))):
        raise ArgumentError("directory", f"{out} exists and is not a genkit export; name a new directory")
    from genkit.export.diffusers_pipeline import GenkitNet, GenkitPipeline  # imports diffusers: seconds

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        grids = getattr(model, "grids", None)
        net = GenkitNet(to_dict(model.cfg), grids.to_dict() if grids else None)
        net.net.load_state_dict(model.net.state_dict())
        GenkitPipeline(model=net, scheduler=default_scheduler(model)).save_pretrained(tmp, safe_serialization=True)
        (tmp / SHIM_FILE).write_text(SHIM)
        card = {"training": model.training, "metrics": metrics or model.metrics}
        write_json(tmp / CARD_DATA_FILE, card)
        if grid:
            save_grid(model.sample(grid, seed=0, progress=False).images, tmp / GRID_FILE)
        (tmp / "README.md").write_text(model_card(model, card, grid, repo_id or str(out)))
        aside = out.with_name(f".old-{out.name}")
        shutil.rmtree(aside, ignore_errors=True)
        if out.exists():  # the old export stays whole, aside, until the new one is in place
            out.rename(aside)
        tmp.rename(out)
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_pretrained(directory: Path, device="cpu"):
    """The genkit model in an export written by `save_pretrained`."""
    from genkit.export.diffusers_pipeline import GenkitNet  # imports diffusers: seconds

    try:
        net = GenkitNet.from_pretrained(str(directory / "model"))
    except (OSError, ValueError, RuntimeError) as err:
        raise ArgumentError("path", f"{directory} holds no readable genkit model ({str(err).splitlines()[0]})") from None
    model = net.genkit_model(torch.device("cpu")).to(device)
    card = _read_card(directory / CARD_DATA_FILE) if (directory / CARD_DATA_FILE).is_file() else {}
    model.training, model.metrics = card.get("training") or {}, card.get("metrics")
    model.directory = directory
    if isinstance(model, GenerativeModel):  # grids fitted since the export (`genkit fit-grid EXPORT`)
        for grid in read_grids(directory).grids.values():
            model.grids.add(grid)
    return model


def _read_card(path: Path) -> dict:
    """An export's card data ({training, metrics}), checked: `ArgumentError` naming the file if it is damaged."""
    try:
        card = json.loads(path.read_text())
        if not isinstance(card, dict):
            raise ValueError("not a mapping")
        training = card.get("training") or {}
        if not isinstance(training, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in training.values()):
            raise ValueError("'training' is not a mapping of names to numbers")
        if card.get("metrics") is not None:
            check_report(card["metrics"])
    except (OSError, ValueError) as err:  # JSON's and UTF-8's errors, ArgumentError: all ValueErrors
        raise ArgumentError("path", f"{path} is damaged ({str(err).splitlines()[0][:200]}); export the model "
                                    f"again") from None
    return card


def resolve(path: str | Path, revision: str | None = None) -> Path:
    """A local directory as given, else the snapshot of Hub repository `owner/name` (downloaded
    once into the Hugging Face cache; with HF_HUB_OFFLINE=1, the cached copy or an error)."""
    local = Path(path).expanduser()
    if local.exists() or not REPO_ID.match(str(path)):
        return local
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return Path(snapshot_download(str(path), revision=revision))
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise ArgumentError("path", f"{path} is neither a local path nor a Hub repository you can read") from None
    except LocalEntryNotFoundError:
        raise ArgumentError("path", f"{path} is not a local path, and the Hub cannot be reached (offline, or "
                                    f"HF_HUB_OFFLINE=1) with no copy in the Hugging Face cache") from None


def push_to_hub(model, repo_id: str, private: bool = False, token: str | None = None,
                commit_message: str = "Upload genkit model", metrics: dict | None = None, grid: int = 64) -> str:
    """Export `model` (see `save_pretrained`) and upload it to Hub repository `repo_id`, created if
    needed; returns the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if not REPO_ID.match(repo_id):
        raise ArgumentError("repo_id", f"expected owner/name, got {repo_id!r}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_pretrained(model, Path(tmp) / "export", metrics, grid, repo_id)
        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
        except OfflineModeIsEnabled:
            raise ArgumentError("repo_id", "cannot push: HF_HUB_OFFLINE is set") from None
        except HfHubHTTPError as err:
            raise ArgumentError("repo_id", f"the Hub refused the upload ({str(err).splitlines()[0]})") from None
        except Exception as err:  # the network's own errors (no route, timeouts) are not the Hub's
            raise ArgumentError("repo_id", f"cannot reach the Hub ({type(err).__name__}: "
                                           f"{str(err).splitlines()[0] if str(err) else ''})") from None
    return str(getattr(commit, "commit_url", commit))
