"""Models that travel: `save_pretrained` exports read back by `genkit.load` and by diffusers,
the diffusers pipeline against `model.sample`, Hub ids through the local cache with the offline
variables, `push_to_hub` against a stand-in for the Hub, and the model card."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import genkit
from genkit.config import load_config
from genkit.export.diffusers_pipeline import GenkitPipeline
from genkit.registry import ArgumentError
from genkit.training import train
from tests.conftest import ROOT, call, tiny_overrides

METHODS = {"flow": ["method.name=flow", "method.prediction=velocity"], "ddpm": [], "sde": ["method.name=sde"],
           "flow-patch": ["method.name=flow", "method.prediction=velocity", "model.unet.patch_size=2"],
           "pixelcnn": ["method.name=autoregressive", "model.name=pixelcnn", "sample.sampler=cached",
                        "model.pixelcnn.channels=16", "model.pixelcnn.num_layers=2", "model.pixelcnn.head_channels=16"]}


@pytest.fixture(scope="module")
def runs(imagefolder, tmp_path_factory):
    """A tiny trained run of each kind: name -> run directory."""
    root = tmp_path_factory.mktemp("hub")
    out = {}
    for name, extra in METHODS.items():
        train(load_config(None, tiny_overrides(imagefolder, root / name) + ["train.max_steps=2"] + extra))
        out[name] = root / name
    return out


def test_save_pretrained_round_trips_and_its_card_tells_the_truth(runs, tmp_path):
    model = genkit.load(runs["flow"])
    assert model.training["step"] == 2 and model.training["train_seconds"] > 0
    report = {"num": 100, "sampler": "heun", "steps": 10, "nfe": 19, "metrics": {"fid": 7.25, "precision": 0.5},
              "real_data_floor": {"fid": 2.5, "precision": 0.75}}
    out = genkit.save_pretrained(model, tmp_path / "export", metrics=report, grid=4, repo_id="me/tiny-flow")
    assert {p.name for p in out.iterdir()} >= {"model_index.json", "model", "scheduler", "README.md", "samples.png",
                                               "genkit.json", "pipeline.py"}
    again = genkit.load(out)
    assert torch.equal(again.sample(3, seed=5, steps=2, progress=False).images,
                       model.sample(3, seed=5, steps=2, progress=False).images)
    assert again.training == model.training and again.metrics == report
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: genkit\n")
    assert "| fid | 7.25 | 2.5 |" in card and "2 training steps in" in card and 'genkit.load("me/tiny-flow")' in card
    assert "![samples](samples.png)" in card and Image.open(out / "samples.png").size == (2 * 18 + 2, 2 * 18 + 2)
    genkit.save_pretrained(again, out, grid=0)  # re-exporting over an export replaces it, card data kept
    assert "| fid | 7.25 |" in (out / "README.md").read_text() and not (out / "samples.png").exists()
    with pytest.raises(ArgumentError, match="exists and is not a genkit export"):
        genkit.save_pretrained(model, runs["flow"])  # never over a run
    with pytest.raises(ArgumentError, match="ema: .* one set of weights"):
        genkit.load(out, ema=False)


@pytest.mark.parametrize("kind", ["flow", "ddpm", "sde", "pixelcnn", "flow-patch"])
def test_pipeline_draws_what_model_sample_draws(runs, tmp_path, kind):
    model = genkit.load(runs[kind])
    pipe = GenkitPipeline.from_pretrained(genkit.save_pretrained(model, tmp_path / "export", grid=0))
    pipe.set_progress_bar_config(disable=True)
    expected = {"flow": "FlowMatchEulerDiscreteScheduler", "ddpm": "DPMSolverMultistepScheduler"}.get(kind.split("-")[0])
    assert type(pipe.scheduler).__name__ == expected if expected else pipe.scheduler is None
    labels = [3, 0, 2]
    steps = {} if kind == "pixelcnn" else {"num_inference_steps": 3}
    got = pipe(class_labels=labels, seed=7, output_type="pt", **steps).images
    sampler = pipe.scheduler if pipe.scheduler is not None else None
    want = model.sample(3, seed=7, labels=labels, sampler=sampler, progress=False,
                        **({} if kind == "pixelcnn" else {"steps": 3})).images
    assert torch.equal(got, want)
    # a generator gives the seed: the same generator state, the same images; diffusers' output types
    pil = pipe(class_labels=labels, generator=torch.Generator().manual_seed(1), **steps).images
    arr = pipe(class_labels=labels, generator=torch.Generator().manual_seed(1), output_type="np", **steps).images
    assert len(pil) == 3 and pil[0].mode == "L" and arr.shape == (3, 16, 16, 1)
    assert np.array_equal(np.asarray(pil[1]), (arr[1, ..., 0] * 255).round().astype(np.uint8))
    assert pipe(batch_size=2, seed=0, return_dict=False, output_type="pt", **steps)[0].shape == (2, 1, 16, 16)


def test_pipeline_step_callback_and_bad_arguments(runs, tmp_path):
    pipe = GenkitPipeline.from_pretrained(genkit.save_pretrained(genkit.load(runs["flow"]), tmp_path / "e", grid=0))
    pipe.set_progress_bar_config(disable=True)
    seen = []

    def on_step(p, step, t, tensors):
        seen.append((step, sorted(tensors), tensors["latents"].shape))
        return tensors
    pipe(class_labels=[1, 2], num_inference_steps=4, callback_on_step_end=on_step,
         callback_on_step_end_tensor_inputs=["latents", "x0"])
    assert [s[0] for s in seen] == [0, 1, 2, 3] and seen[0][1:] == (["latents", "x0"], (2, 1, 16, 16))
    with pytest.raises(ArgumentError, match="take no tensors back"):
        pipe(num_inference_steps=2, callback_on_step_end=lambda p, i, t, k: {"latents": k["latents"] * 0})
    with pytest.raises(ArgumentError, match="output_type"):
        pipe(output_type="latent")
    with pytest.raises(ArgumentError, match="labels: must lie in 0..3"):
        pipe(class_labels=[9])


def test_diffusion_pipeline_loads_an_export_by_its_pipeline_file(runs, tmp_path, monkeypatch):
    from diffusers import DiffusionPipeline
    from diffusers.utils import dynamic_modules_utils

    monkeypatch.setattr(dynamic_modules_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    out = genkit.save_pretrained(genkit.load(runs["ddpm"]), tmp_path / "export", grid=0)
    pipe = DiffusionPipeline.from_pretrained(out, custom_pipeline="pipeline", trust_remote_code=True)
    assert isinstance(pipe, GenkitPipeline)
    pipe.set_progress_bar_config(disable=True)
    assert len(pipe(num_inference_steps=2, batch_size=2).images) == 2


def fake_hub_cache(export, cache, repo_id="someone/tiny", commit="0" * 40):
    """The Hugging Face cache layout that `snapshot_download` resolves offline."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(export, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
def test_hub_ids_load_from_the_cache_offline_and_fail_in_one_line(runs, tmp_path):
    export = genkit.save_pretrained(genkit.load(runs["flow"]), tmp_path / "export", grid=0)
    fake_hub_cache(export, tmp_path / "cache")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}

    def genkit_cli(*args):
        return subprocess.run([sys.executable, "-m", "genkit", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
    result = genkit_cli("sample", "--checkpoint", "someone/tiny", "--num", "2", "--steps", "2", "--out", "g.png")
    assert result.returncode == 0 and (tmp_path / "g.png").is_file(), result.stderr[-2000:]
    result = genkit_cli("sample", "--checkpoint", "someone/missing", "--num", "2", "--out", "h.png")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        "error: --checkpoint: someone/missing is not a local path, and the Hub cannot be reached"), result.stderr


def test_push_to_hub_uploads_the_export(runs, monkeypatch):
    from huggingface_hub import HfApi

    calls = {}

    def create_repo(self, repo_id, private=False, exist_ok=False, **kwargs):
        calls["create"] = (repo_id, private, exist_ok)

    def upload_folder(self, repo_id, folder_path, commit_message, **kwargs):
        from pathlib import Path

        calls["files"] = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        calls["card"] = (Path(folder_path) / "README.md").read_text()
        return "https://huggingface.co/me/tiny/commit/abc"
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    url = genkit.push_to_hub(genkit.load(runs["ddpm"]), "me/tiny", private=True, grid=0)
    assert url.endswith("/commit/abc") and calls["create"] == ("me/tiny", True, True)
    assert {"model_index.json", "model/config.json", "model/diffusion_pytorch_model.safetensors",
            "scheduler/scheduler_config.json", "README.md", "genkit.json"} <= set(calls["files"])
    assert 'genkit.load("me/tiny")' in calls["card"]
    with pytest.raises(ArgumentError, match="repo_id: expected owner/name"):
        genkit.push_to_hub(genkit.load(runs["ddpm"]), "no-owner")


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
def test_export_cli_writes_and_refuses_offline_pushes(runs, tmp_path):
    report = tmp_path / "eval.json"
    report.write_text(json.dumps({"metrics": {"fid": 3.0}, "real_data_floor": {"fid": 1.5}}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def export(*args):
        return subprocess.run([sys.executable, "-m", "genkit", "export", "--checkpoint", str(runs["ddpm"]), *args],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    result = export("--out", str(tmp_path / "e"), "--metrics", str(report), "--grid", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| fid | 3 | 1.5 |" in (tmp_path / "e" / "README.md").read_text()
    result = export("--push", "me/tiny", "--grid", "0")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == \
        "error: --push: cannot push: HF_HUB_OFFLINE is set", result.stderr
    from genkit.cli import main

    code, stderr = call(main, ["export", "--checkpoint", str(runs["ddpm"])])
    assert code == 2 and "--out or --push" in stderr
    code, stderr = call(main, ["export", "--checkpoint", str(runs["ddpm"]), "--out", str(tmp_path / "x"),
                               "--metrics", str(runs["ddpm"] / "metrics.jsonl")])
    assert code == 2 and "is not a JSON report of genkit eval" in stderr


def test_fitted_grids_travel_in_the_export_to_genkit_load_and_to_diffusers(runs, tmp_path, small_pilot):
    """The grids fitted to a model go into the export (the net's config.json), so that `genkit.load` and
    diffusers' `GenkitPipeline` sample on them without a warning or a pilot; grids fitted to an export
    later (`genkit fit-grid EXPORT`) are read by `genkit.load` too."""
    import warnings

    from genkit.samplers import UnfittedGrid

    model = genkit.load(runs["sde"])
    model.fit_grid(steps=2, sampler="fitted", progress=False)
    out = genkit.save_pretrained(model, tmp_path / "export", grid=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnfittedGrid)
        loaded = genkit.load(out)
        assert torch.equal(loaded.sample(2, steps=2, sampler="fitted", progress=False).images,
                           model.sample(2, steps=2, sampler="fitted", progress=False).images)
        pipe = GenkitPipeline.from_pretrained(out)
        assert len(pipe.model.genkit_model().grids) == 1
    model.fit_grid(steps=3, sampler="fitted", progress=False)  # the same pilot, a second grid
    model.save_grids(out)
    assert len(genkit.load(out).grids) == 2
