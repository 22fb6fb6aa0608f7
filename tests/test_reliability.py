"""Reliability: random command lines fail in one line or run; SIGKILL at random moments never
breaks a checkpoint and resuming reaches the uninterrupted weights; two processes train as one."""
import json
import random
import subprocess
import sys
import time
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from genkit.checkpoint import list_checkpoints, load_export, read_trainer_state
from genkit.cli import sample_main, train_main
from genkit.config import key_types, load_config
from genkit.samplers import SAMPLERS, SCHEDULE_NAMES
from genkit.training import train
from tests.conftest import ROOT, assert_ran_or_one_line, call, digit_overrides, reset_accelerate_state, tiny_overrides

@pytest.fixture(scope="module")
def tiny_run(imagefolder, tmp_path_factory):
    out = tmp_path_factory.mktemp("reliability") / "run"
    train(load_config(None, tiny_overrides(imagefolder, out) + ["train.max_steps=2"]))
    return out


SAMPLE_FLAGS = st.one_of(
    st.tuples(st.just("--num"), st.integers(-2, 4).map(str)),
    st.tuples(st.just("--steps"), st.integers(-2, 4).map(str)),
    st.tuples(st.just("--sampler"), st.sampled_from([*SAMPLERS, "magic", ""])),
    st.tuples(st.just("--schedule"), st.sampled_from([*SCHEDULE_NAMES, "x"])),
    st.tuples(st.just("--guidance"), st.sampled_from(["-1", "0", "1", "2.5", "nan", "inf", "abc"])),
    st.tuples(st.just("--class-label"), st.integers(-2, 12).map(str)),
    st.tuples(st.just("--batch-size"), st.integers(-1, 3).map(str)),
    st.tuples(st.just("--seed"), st.sampled_from(["0", "7", "-1", "x"])),
    st.tuples(st.just("--option"), st.sampled_from(["eta=0.5", "eta=abc", "snr=0.1", "method=rk4", "method=magic",
                                                    "denoise=false", "n_corrector=-1", "x", "=1"])),
    st.tuples(st.just("--checkpoint"), st.sampled_from(["/no/such/run", "."])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(SAMPLE_FLAGS, max_size=4))
def test_sample_cli_with_random_flags_runs_or_fails_in_one_line(tiny_run, tmp_path, small_pilot, flags):
    """(`--schedule adaptive` fits a grid at every call: on pilots of 8 draws, since their quality is not
    what this tests.)"""
    argv = ["--checkpoint", str(tiny_run), "--out", str(tmp_path / "grid.png"), "--num", "2", "--steps", "2"]
    for flag, value in flags:
        argv += [flag, value]
    code, stderr = call(sample_main, argv)
    assert_ran_or_one_line(code, stderr)


# Training under random overrides, each value of its key's type (so that most runs train):
# a run either trains or fails in one line.
NAMES = ["unet", "dit", "made", "pixelcnn", "fvsbn", "vae", "flow", "ddpm", "sde", "meanflow", "consistency",
         "autoregressive", "eps", "v", "x0", "velocity", "cosine", "linear", "logit_normal", "uniform", "mode",
         "log_snr", "ve", "subvp", "bf16", "no", "auto", "ddim", "fitted", "unipc", "pad", "resize", "exact", "x"]
UNTOUCHED = ("output_dir", "data.path", "data.autoencoder", "train.max_steps", "train.max_minutes",
             "train.init_from", "train.resume", "train.report_to", "train.cpu_threads",
             "sample.fit_grid")  # a pilot per example: the fit at the end of training has tests of its own


def values_of(kind) -> st.SearchStrategy:
    if kind is bool:
        return st.sampled_from(["true", "false"])
    if kind is int:
        return st.sampled_from(["-1", "0", "1", "2", "3", "8", "16", str(2**32)])
    if kind is float:
        return st.sampled_from(["-0.5", "0", "1e-6", "0.1", "0.5", "0.999", "1", "2", "10"])
    if typing.get_origin(kind) in (tuple, list):
        # small entries: as a channel_mult, [32, 64] drew a 200M-parameter UNet (229 s for one example);
        # sizes beyond memory are drawn by the int values above
        return st.sampled_from(["[]", "[0]", "[1]", "[4]", "[1, 2]", "[2, 1]", "[1, 2, 2]", "[3, 7]"])
    return st.sampled_from(NAMES)


TYPED_OVERRIDES = st.sampled_from([(key, kind) for key, kind in key_types().items()
                                    if not key.startswith(UNTOUCHED)]).flatmap(
    lambda key_kind: values_of(key_kind[1]).map(lambda value: f"{key_kind[0]}={value}"))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(TYPED_OVERRIDES, min_size=1, max_size=3))
def test_training_under_random_typed_overrides_trains_or_fails_in_one_line(imagefolder, tmp_path_factory, overrides):
    """(A wider run of this found `train.seed=-1` raising from numpy mid-setup.)"""
    out = tmp_path_factory.mktemp("typed") / "run"
    reset_accelerate_state()  # each example is a process of its own (the examples share one test)
    code, stderr = call(train_main, tiny_overrides(imagefolder, out) + ["train.max_steps=2", "train.sample_every=2",
                                                                       "train.report_to=none", *overrides])
    if code == 1:  # a size beyond memory (values up to 2**32): one line, status 1
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith("error: out of memory") and "Traceback" not in stderr
        return
    assert_ran_or_one_line(code, stderr)


def weights(path: Path) -> dict:
    return load_file(str(path / "net.safetensors"))


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_loadable_checkpoints_and_exact_resume(imagefolder, tmp_path):
    out = tmp_path / "killed"
    args = tiny_overrides(imagefolder, out) + ["train.max_steps=60", "train.checkpoint_every=1",
                                               "train.checkpoints_keep=0", "model.unet.dropout=0.1"]
    rng = random.Random(0)
    kills = 0
    for _ in range(4):
        before = len(list_checkpoints(out))
        proc = subprocess.Popen([sys.executable, "train.py", *args, "train.resume=latest"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while len(list_checkpoints(out)) == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # wait until this run is training and saving
        time.sleep(rng.uniform(0.0, 0.3))  # then kill it at a random moment of a step or a save
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait()
        for checkpoint in list_checkpoints(out):  # every published checkpoint is complete
            load_export(checkpoint)
            assert read_trainer_state(checkpoint)["step"] == int(checkpoint.name.split("-")[1])
            assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "optimizer.bin").is_file()
    assert kills >= 2
    done = subprocess.run([sys.executable, "train.py", *args, "train.resume=latest"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    uninterrupted = train(load_config(None, tiny_overrides(imagefolder, tmp_path / "whole") + args[-4:]))
    resumed, reference = weights(list_checkpoints(out)[-1]), weights(uninterrupted)
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


@pytest.mark.slow
def test_two_processes_train_log_and_checkpoint_once_and_resume_in_one(imagefolder, tmp_path):
    out = tmp_path / "ddp"
    args = tiny_overrides(imagefolder, out) + ["train.max_steps=4", "train.log_every=1"]
    two = subprocess.run(["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "train.py", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("done: final checkpoint") == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4  # logged by one process only
    assert [p.name for p in list_checkpoints(out)] == ["step-000002", "step-000004"]
    one = subprocess.run([sys.executable, "train.py", *args[:-2], "train.max_steps=6", "train.resume=latest"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    assert read_trainer_state(list_checkpoints(out)[-1])["step"] == 6


@pytest.mark.parametrize("extra, needle", [
    (["train.lr=-1"], "train.lr: must be positive"),
    (["model.name=dit", "model.dit.patch_size=5"], "does not divide data.image_size"),
    (["model.name=dit", "model.dit.num_heads=3"], "does not divide model.dit.hidden_size"),
    (["train.batch_size=1000"], "larger than the data set"),
    (["train.resume=/no/such/step"], "not a checkpoint directory"),
    (["train.init_from=/no/such/run"], "does not exist"),
])
def test_train_cli_bad_inputs_fail_before_work_in_one_line(imagefolder, tmp_path, extra, needle):
    code, stderr = call(train_main, tiny_overrides(imagefolder, tmp_path / "run") + extra)
    assert_ran_or_one_line(code, stderr)
    assert code == 2 and needle in stderr, stderr


def test_empty_data_directory_fails_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    code, stderr = call(train_main, [f"data.path={tmp_path / 'empty'}", f"output_dir={tmp_path / 'run'}"])
    assert code == 2 and stderr.startswith("error: data.path") and stderr.count("\n") == 1, stderr


def test_checkpoint_of_another_architecture_is_refused(tiny_run, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(list_checkpoints(tiny_run)[-1], other)
    config = other / "config.yaml"
    config.write_text(config.read_text().replace("channels: 32", "channels: 64"))
    code, stderr = call(sample_main, ["--checkpoint", str(other), "--out", str(tmp_path / "x.png")])
    assert code == 2 and "is damaged" in stderr and "checksum" in stderr and stderr.count("\n") == 1, stderr
    state = other / "trainer_state.json"  # as a checkpoint of a version that saved no checksum
    state.write_text(state.read_text().replace('"config_sha256"', '"unchecked"'))
    code, stderr = call(sample_main, ["--checkpoint", str(other), "--out", str(tmp_path / "x.png")])
    assert code == 2 and "is damaged (net.safetensors: " in stderr and "has shape" in stderr, stderr
    assert stderr.count("\n") == 1


@pytest.mark.slow
def test_two_processes_sample_and_evaluate_what_one_draws(digits, tmp_path):
    """`accelerate launch --num_processes 2 eval.py` (and sample.py) split the draws between the processes
    and gather them: the same images as one process (to float rounding: the batches differ), the same
    metrics, one report and one grid written."""
    from genkit.training import train

    cfg = load_config(None, digit_overrides(digits, tmp_path / "run") + ["train.max_steps=2"])
    train(cfg)
    common = ["--checkpoint", cfg.output_dir, "--num", "9", "--steps", "2", "--sampler", "ddim"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    for script, flag, suffix in (("eval.py", "--json", "json"), ("sample.py", "--npz", "npz")):
        one = subprocess.run([sys.executable, script, *common, flag, str(tmp_path / f"one.{suffix}")],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
        two = subprocess.run([*launch, script, *common, flag, str(tmp_path / f"two.{suffix}")],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
        assert two.stdout.count("wrote") == 1, two.stdout
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one["nfe"] == two["nfe"] and one["metrics"]["fid"] == pytest.approx(two["metrics"]["fid"], rel=1e-3)
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "two.npz") as b:
        assert np.abs(a["arr_0"].astype(int) - b["arr_0"].astype(int)).max() <= 1  # uint8: rounding at most
        assert (a["labels"] == b["labels"]).all()


@pytest.mark.slow
def test_gpu_benchmark_runs_end_to_end_as_a_dry_run(tmp_path):
    """`benchmarks/gpu.py --dry-run` (tiny sizes, two training steps) runs on whatever device there is
    and writes its results with every part, so that the day a GPU is lent the script is known to run."""
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, "gpu.py", "--dry-run", "--json", str(out), "--workdir", str(tmp_path / "runs")],
                          cwd=ROOT / "benchmarks", capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] and {r["net"] for r in result["training"]} == {"unet", "dit"}
    assert all(r["genkit_img_per_s"] > 0 and r["diffusers_img_per_s"] > 0 for r in result["training"] + result["sampling"])
    assert result["quality"]["fid"] > 0 and set(result["precision_max_abs_diff"]) >= {"bf16", "fp16"}


@pytest.mark.slow
def test_diffusers_baseline_benchmark_runs_end_to_end_as_a_dry_run(tmp_path):
    """`benchmarks/diffusers_models.py --dry-run` trains diffusers' UNet2DModel for two steps, scores
    its schedulers and genkit's default on it, and writes every part of its results: the ratio per
    NFE, each draw's distance from the ODE's images, and the ODE limit both libraries solve."""
    out = tmp_path / "diffusers_models.json"
    done = subprocess.run([sys.executable, "benchmarks/diffusers_models.py", "--dry-run", "--json", str(out),
                           "--workdir", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] and result["training"]["steps"] == 2
    assert [r["library"] for r in result["rows"]] == ["diffusers", "genkit"]
    assert set(result["ratio_default_vs_diffusers_best"]) == {"2"}
    limit = result["ode_limit"]
    assert limit["steps"] == 2 and limit["diffusers dpmpp_2m trailing"] > 0 and limit["genkit dpmpp_2m log_snr"] > 0
    assert all(0 < row["ode_error"] < 1 for row in result["rows"])
    assert set(result["ode_error_ratio_default"]["2"]) == {"vs_diffusers_best", "vs_diffusers_most_accurate"}
