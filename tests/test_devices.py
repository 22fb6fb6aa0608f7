"""Devices: `--device` and `model.to()` pick what the machine has, refuse what it lacks in one
line, and draw the same samples for the same (seed, i) wherever they run."""
import os
import platform
import subprocess
import sys

import pytest
import torch

import genkit
from genkit.cli import sample_main
from genkit.inference import pick_device
from genkit.registry import ArgumentError
from genkit.training import train
from tests.conftest import call

HAS_CUDA = torch.cuda.is_available()


def test_auto_picks_an_accelerator_when_there_is_one():
    expected = "cuda" if HAS_CUDA else "mps" if torch.backends.mps.is_available() else "cpu"
    assert pick_device("auto").type == expected and pick_device("cpu").type == "cpu"


@pytest.mark.parametrize("name, needle", [
    ("xla", "unsupported device"), ("gpu", "unknown device"), ("cuda:99", "CUDA device"),
    pytest.param("cuda", "no CUDA device", marks=pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")),
])
def test_devices_the_machine_lacks_are_refused(name, needle):
    with pytest.raises(ArgumentError, match=needle):
        pick_device(name)


@pytest.fixture(scope="module")
def tiny_run(imagefolder, tmp_path_factory):
    from genkit.config import load_config
    from tests.conftest import tiny_overrides

    return train(load_config(None, tiny_overrides(imagefolder, tmp_path_factory.mktemp("devices") / "run")
                             + ["train.max_steps=1"]))


def test_the_cli_refuses_a_missing_device_in_one_line(tiny_run, tmp_path):
    code, stderr = call(sample_main, ["--checkpoint", str(tiny_run), "--device", "cuda:99", "--num", "2",
                                      "--out", str(tmp_path / "g.png")])
    assert code == 2 and stderr.strip().splitlines()[-1].startswith("error: --device: cuda:99")


def test_a_model_moves_and_samples_alike_wherever_it_runs(tiny_run):
    model = genkit.load(tiny_run)
    here = model.sample(3, steps=2, progress=False)
    other = pick_device("auto")
    assert model.to(other) is model and next(model.net.parameters()).device.type == other.type
    there = model.sample(3, steps=2, progress=False)
    assert torch.equal(here.noise, there.noise)  # the starting noise is a function of (seed, i) alone
    assert (here.images - there.images).abs().max() < 1e-3


FAULTS_OF_REPEATED_TENSORS = """
import resource, sys, torch
from genkit.inference.devices import keep_freed_memory
print(keep_freed_memory())
for _ in range(3):  # 32 MiB, allocated, touched and freed: the heap grows to hold it
    torch.ones(8 << 20).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(8 << 20).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
@pytest.mark.parametrize("env, kept", [({}, True), ({"GENKIT_KEEP_FREED_MEMORY": "0"}, False),
                                       ({"MALLOC_TRIM_THRESHOLD_": "131072"}, False)])
def test_kept_freed_memory_spares_the_page_faults_of_each_large_tensor(env, kept):
    """32 MiB tensors, allocated twenty times: by default glibc maps each afresh (8,192 pages, each
    faulted in on first touch); kept, the heap's block is reused (at most one more growth of the
    heap allowed for). The environment's choice wins."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD")
           and not k.startswith("MALLOC_")} | env
    out = subprocess.run([sys.executable, "-c", FAULTS_OF_REPEATED_TENSORS], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == str(kept)
    faults = int(out[1])
    assert faults < 8192 + 1000 if kept else faults > 20 * 8192 * 0.9, out
