"""Training across processes beyond one machine's data parallel: sharded (FSDP) training against
data-parallel training of the same run, its exact resume and export, and a run split over two
"nodes" on this machine against the same run on one."""
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import genkit
from genkit.checkpoint import list_checkpoints
from genkit.cli import train_main
from tests.conftest import ROOT, call, tiny_overrides

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]


def launch(args: list[str]) -> subprocess.Popen:
    """`train.py` on two processes of one node."""
    return subprocess.Popen([*LAUNCH, "--num_processes", "2", str(ROOT / "train.py"), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]


def weights(run, step: int = 4, name: str = "net") -> dict:
    return load_file(str(run / "checkpoints" / f"step-{step:06d}" / f"{name}.safetensors"))


def overrides(imagefolder, out, net: str) -> list[str]:
    return tiny_overrides(imagefolder, out) + [f"model.name={net}", "train.report_to=none", "train.cpu_threads=1"]


def recipe(name: str, imagefolder, out) -> list[str]:
    """A recipe's net and method for four steps of eight images from `imagefolder` (four classes)."""
    return ["--config", str(ROOT / "configs" / f"{name}.yaml"), f"data.path={imagefolder}", "data.fit=resize",
            f"output_dir={out}", "model.num_classes=4", "train.batch_size=8", "train.max_steps=4",
            "train.warmup_steps=1", "train.log_every=1", "train.sample_every=0", "train.checkpoint_every=2",
            "train.mixed_precision=no", "train.report_to=none", "train.cpu_threads=1", "sample.fit_grid=false"]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["rf_unet_mnist", "rf_dit_mnist"])
def test_sharded_training_matches_data_parallel_resumes_bitwise_and_exports(imagefolder, tmp_path, config):
    """Two processes with `train.fsdp=true` train the UNet and DiT recipes as two data-parallel
    processes do (weights and EMA to float rounding, which Adam's normalised steps magnify where a
    gradient is near 0: the gradients are reduce-scattered instead of all-reduced); a resume from the middle of the sharded run reaches its weights bit for bit; its
    export samples; its checkpoint continues on one process."""
    sharded, plain = tmp_path / "sharded", tmp_path / "plain"
    finish(launch(recipe(config, imagefolder, sharded) + ["train.fsdp=true"]))
    finish(launch(recipe(config, imagefolder, plain)))
    for name in ("net", "net_ema"):
        a, b = weights(sharded, name=name), weights(plain, name=name)
        start = weights(plain, 2, name)
        assert a.keys() == b.keys()
        apart = max((a[k] - b[k]).abs().max().item() for k in a)
        moved = max((start[k] - b[k]).abs().max().item() for k in a)  # by the last two steps
        assert apart < 0.05 * moved and moved > 1e-4  # 1.3% for the UNet, 0 for the DiT, here
    resumed = tmp_path / "resumed"
    shutil.copytree(sharded, resumed)
    finish(launch(recipe(config, imagefolder, resumed) +
                  ["train.fsdp=true", f"train.resume={resumed / 'checkpoints' / 'step-000002'}"]))
    for name in ("net", "net_ema"):
        a, b = weights(sharded, name=name), weights(resumed, name=name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    model = genkit.load(list_checkpoints(sharded)[-1])
    assert model.sample(2, steps=2, seed=0).images.isfinite().all()
    # the checkpoint holds the whole state: the run continues on one process
    code, stderr = call(train_main, recipe(config, imagefolder, resumed) +
                        ["train.fsdp=true", f"train.resume={resumed / 'checkpoints' / 'step-000002'}"])
    assert code == 0, stderr
    assert (resumed / "checkpoints" / "step-000004" / "net.safetensors").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NODE_LAUNCHERS = {  # launching node `rank` of two, rendezvous at 127.0.0.1:port
    "accelerate": lambda rank, port: [*LAUNCH, "--num_processes", "2", "--num_machines", "2", "--machine_rank", str(rank),
                                      "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)],
    "torchrun": lambda rank, port: [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node",
                                    "1", "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", str(port)],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", list(NODE_LAUNCHERS))
def test_two_nodes_on_localhost_train_what_one_node_trains(imagefolder, tmp_path, launcher):
    """Two "nodes" (one process each, each in its own working directory, one shared `output_dir`),
    launched as on two machines, train the weights, bit for bit, that two processes on one node
    train, and checkpoint once."""
    two_nodes, one_node = tmp_path / "shared" / "run", tmp_path / "one"
    port = free_port()
    nodes = []
    for rank in (0, 1):
        workdir = tmp_path / f"node{rank}"
        workdir.mkdir()
        nodes.append(subprocess.Popen([*NODE_LAUNCHERS[launcher](rank, port), str(ROOT / "train.py"),
                                       *overrides(imagefolder, two_nodes, "unet")],
                                      cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for node in nodes:
        finish(node)
    finish(launch(overrides(imagefolder, one_node, "unet")))
    assert [p.name for p in list_checkpoints(two_nodes)] == ["step-000002", "step-000004"]
    a, b = weights(two_nodes), weights(one_node)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [list((tmp_path / f"node{rank}").iterdir()) for rank in (0, 1)] == [[], []]  # nothing beside the nodes


def test_accelerates_own_sharding_is_refused_in_one_line(imagefolder, tmp_path, monkeypatch):
    for variable in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        with monkeypatch.context() as env:
            env.setenv(variable, "true")
            code, stderr = call(train_main, overrides(imagefolder, tmp_path / "run", "unet"))
        assert code == 2 and "train.fsdp=true" in stderr and variable in stderr and stderr.count("\n") == 1, stderr


def test_sharded_training_refuses_fp16_and_compile_in_one_line(imagefolder, tmp_path):
    for extra in ("train.mixed_precision=fp16", "train.compile=true"):
        code, stderr = call(train_main, overrides(imagefolder, tmp_path / "run", "unet") + ["train.fsdp=true", extra])
        assert code == 2 and stderr.startswith("error: train.fsdp") and stderr.count("\n") == 1, stderr


@pytest.mark.slow
def test_reflow_across_two_processes_draws_the_pairs_one_process_draws(imagefolder, tmp_path):
    """`accelerate launch --num_processes 2 -m genkit reflow` shares the shards between the processes:
    every shard holds the noise and labels, bit for bit, and the samples, to float rounding (a launched
    process computes with one thread), that a single process writes; a rerun draws nothing more."""
    from genkit.config import load_config
    from genkit.training import train

    flow = train(load_config(None, tiny_overrides(imagefolder, tmp_path / "flow") + ["method.name=flow",
                                                                                    "train.max_steps=1"]))
    common = ["reflow", "--checkpoint", str(flow), "--num", "10", "--steps", "2", "--batch-size", "3", "--shard-size", "4"]
    one = subprocess.run([sys.executable, "-m", "genkit", *common, "--out", str(tmp_path / "one")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    written = []
    for _ in range(2):  # the second launch finds every shard written
        two = subprocess.run([*LAUNCH, "--num_processes", "2", "-m", "genkit", *common, "--out", str(tmp_path / "two")],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert two.returncode == 0, two.stderr[-3000:]
        assert two.stdout.count("wrote 10 pairs") == 1, two.stdout
        written.append({p.name: p.stat().st_mtime_ns for p in (tmp_path / "two").glob("pairs-*.safetensors")})
    assert written[0] == written[1] and len(written[0]) == 3
    shards = sorted(p.name for p in (tmp_path / "one").glob("pairs-*.safetensors"))
    assert shards == sorted(p.name for p in (tmp_path / "two").glob("pairs-*.safetensors"))
    for name in shards:
        a, b = load_file(str(tmp_path / "one" / name)), load_file(str(tmp_path / "two" / name))
        assert a.keys() == b.keys() and torch.equal(a["noise"], b["noise"]) and torch.equal(a["labels"], b["labels"])
        assert (a["x0"] - b["x0"]).abs().max() < 1e-5
