"""Throughput on this machine: genkit against diffusers at equal parameters, training and sampling.

Training: one step = forward + backward + AdamW on a batch of 64 32x32x1 images, in fp32 and in
bf16 autocast; in bf16 every UNet is also timed in channels-last (rows `+channels_last`: how
genkit's trainer runs its UNet in half precision on a CPU). Every diffusers UNet2DModel layout
tried that lies within 10% of the genkit UNet's parameters is timed, and the ratio is taken
against the fastest, in whichever precision and layout. Also reports achieved GFLOP/s
(FLOPs counted by torch's FlopCounterMode) against a plain matmul timed in the same run.

Sampling: `model.sample(B, steps)` of the RF-UNet recipe (DPM-Solver++(2M) with its corrector,
one network evaluation per step) in images x NFE per second, against the bare forward passes of
its net at the same batch and precision (the sampling loop's overhead), and against diffusers'
DDIMPipeline on the fastest UNet2DModel layout of about equal size, in fp32 (also channels-last)
and bf16 (autocast, and the pipeline cast to bf16), the fastest of its settings counting; the
same for a UNet on 2x2 patches at about equal parameters (`harness.PATCH_2_UNET`, 1.75M; rows
"genkit patch-2"). With `--compile`, both sides also sample through torch.compile (`model.sample(compile=True)`; diffusers'
UNet replaced by `torch.compile(unet)` as its docs advise), compilation left out of the timing,
and a second ratio compares genkit compiled with the fastest diffusers setting, compiled or not.

Defaults (`--part defaults`): what `python sample.py --checkpoint RUN --num 64` costs on a run of the
quick-start recipe (trained for two steps: the net, the config and the sampling path are the quick
start's, with the grid fitted at the end of training and stored), beyond process start and loading,
against the time of its own network evaluations (the same net on the same batch, as many calls as
the command reports): `ratio` (goal <= 1.3). `ratio_fitting_at_the_call` is the same command with
`--schedule adaptive`, which fits the grid at every call as the default did before grids were stored.

Allocator (`--part allocator`): what `keep_freed_memory` (glibc's malloc keeping freed blocks for
the next tensors, which genkit's trainer and models set on a CPU) buys, against glibc's defaults
(`GENKIT_KEEP_FREED_MEMORY=0`), each in processes of its own, in turn: the RF-UNet recipe's
training steps per second (batch 128, from its log), and its `model.sample(256)` with the recipe's
sampler, steps and guidance, in images per second; `ratio_*` is kept over defaults.

Every entry is timed in turn, block by block, so that the machine's slow spells fall on all alike.

    python benchmarks/throughput.py [--part training|sampling|defaults|allocator]
"""
from __future__ import annotations

import copy
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import PATCH_2_UNET, ROOT, benchmark_parser, recipe_path, steps_per_second, train, write_results
from torch.utils.flop_counter import FlopCounterMode

from genkit.config import load_config
from genkit.nets import build_net
from genkit.inference import build_model

BATCH, SIZE = 64, 32
PARTS = ("training", "sampling", "defaults", "allocator")


class DiffusersUNet(torch.nn.Module):
    """diffusers' UNet2DModel behind genkit's `net(x, t, y)` call (t scaled to its 0..1000)."""

    def __init__(self, **kwargs):
        super().__init__()
        from diffusers import UNet2DModel

        self.unet = UNet2DModel(**kwargs)

    def forward(self, x, t, y=None):
        return self.unet(x, t * 1000, class_labels=y).sample


def diffusers_unets(target_params: int, conditional: bool = True) -> dict[str, torch.nn.Module]:
    """Every UNet2DModel layout, among a few natural ones, within 10% of `target_params` (wrapped
    in genkit's call signature when `conditional`, bare for diffusers' own pipelines)."""
    from diffusers import UNet2DModel

    found = {}
    for widths in [(32, 64, 64), (32, 64, 96), (32, 64, 128), (64, 64, 64)]:
        for layers in (1, 2):
            kwargs = dict(sample_size=SIZE, in_channels=1, out_channels=1, block_out_channels=widths,
                          layers_per_block=layers, norm_num_groups=32,
                          down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                          up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))
            net = DiffusersUNet(num_class_embeds=11, **kwargs) if conditional else UNet2DModel(**kwargs)
            if abs(n_params(net) / target_params - 1) <= 0.10:
                found["diffusers-unet2d" + "x".join(map(str, widths)) + f"-l{layers}"] = net
    if not found:
        raise SystemExit(f"no UNet2DModel layout within 10% of {target_params} parameters")
    return found


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def make_step(net: torch.nn.Module, bf16: bool):
    """One training step of `net` (in the memory format its weights are in; the batch as a data
    loader gives it, contiguous)."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(BATCH, 1, SIZE, SIZE, generator=g), torch.rand(BATCH, generator=g), torch.randint(0, 10, (BATCH,), generator=g)
    target = torch.randn(BATCH, 1, SIZE, SIZE, generator=g)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x, t, y)
        loss = torch.nn.functional.mse_loss(out.float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def flops_per_step(net: torch.nn.Module) -> int:
    """Forward + backward FLOPs of one training step (the optimiser's are negligible)."""
    step = make_step(net, bf16=False)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def time_round_robin(steps: dict, seconds: float, repeats: int = 5, warmup: int = 3) -> dict:
    """Median seconds per step of each entry, over `repeats` blocks of about `seconds` / repeats
    (of one step each if `seconds` is 0).

    The blocks are taken in turn (one block of every entry per round), so that a slow spell of a
    shared machine falls on all entries alike instead of on whichever ran then.
    """
    per_block = {}
    for name, step in steps.items():
        for _ in range(warmup):  # oneDNN builds its kernels on first use
            step()
        if seconds <= 0:
            per_block[name] = 1
            continue
        start = time.perf_counter()
        step()
        per_block[name] = max(1, int(seconds / repeats / (time.perf_counter() - start)))
    blocks = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(per_block[name]):
                step()
            blocks[name].append((time.perf_counter() - start) / per_block[name])
    return {name: statistics.median(b) for name, b in blocks.items()}


def matmul_gflops(bf16: bool, n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        seconds = time_round_robin({"matmul": lambda: a @ b}, 2.0)["matmul"]
    return 2 * n**3 / seconds / 1e9


def sampling(batch: int, steps: int, repeats: int, compiled: bool = False) -> dict:
    """img x NFE per second of `model.sample`, of its net's bare forward passes, and of diffusers'
    DDIMPipeline at equal parameters, in fp32 and in bf16; ratios within each precision. In bf16
    genkit samples with bf16 weights under autocast (what `precision="bf16"` does), and diffusers runs
    both ways it offers, autocast over fp32 weights and the pipeline cast to bf16 (its
    `torch_dtype`), the faster counting."""
    from diffusers import DDIMPipeline, DDIMScheduler

    torch.manual_seed(0)
    models = {}
    for label, overrides in (("genkit", ()), ("genkit patch-2", PATCH_2_UNET)):
        cfg = load_config(recipe_path("rf_unet_mnist"), overrides)
        models[label] = build_model(cfg, build_net(cfg))
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(batch, 1, SIZE, SIZE, generator=g), torch.rand(batch, generator=g)
    y = torch.arange(batch) % cfg.model.num_classes
    peers = diffusers_unets(n_params(models["genkit"].net), conditional=False)

    def autocast(bf16: bool):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def fastest_peer(bf16: bool) -> str:  # diffusers' fastest layout at this batch and precision
        def seconds(name):
            with torch.no_grad(), autocast(bf16):
                return time_round_robin({name: lambda: peers[name](x, 500)}, 0.0, 1, 1)[name]
        return min(peers, key=seconds)

    def pipeline_call(unet, bf16_autocast: bool):
        pipeline = DDIMPipeline(unet=unet.eval(), scheduler=DDIMScheduler())
        pipeline.set_progress_bar_config(disable=True)

        def call():
            with autocast(bf16_autocast):
                pipeline(batch_size=batch, num_inference_steps=steps, output_type="pt")
        return call

    def genkit_calls(label: str, bf16: bool) -> dict:
        model = models[label]
        net = model.inference_net(torch.bfloat16 if bf16 else None)
        precision = "bf16" if bf16 else "no"

        @torch.no_grad()
        def bare_forward():
            with autocast(bf16):
                for _ in range(steps):
                    net(x, t, y)
        entries = {f"{label} model.sample": lambda: model.sample(batch, steps=steps, sampler="dpmpp_2m_pc",
                                                                 batch_size=batch, progress=False, precision=precision),
                   f"{label} bare forward": bare_forward}
        if compiled:
            entries[f"{label} model.sample (compile)"] = lambda: model.sample(
                batch, steps=steps, sampler="dpmpp_2m_pc", batch_size=batch, progress=False,
                precision=precision, compile=True)
        return entries

    def calls(bf16: bool) -> dict:
        peer = fastest_peer(bf16)
        best_peer = peers[peer] if bf16 else copy.deepcopy(peers[peer]).to(memory_format=torch.channels_last)
        entries = {f"diffusers DDIMPipeline ({peer}{', autocast' if bf16 else ''})": pipeline_call(peers[peer], bf16)}
        if bf16:
            cast = copy.deepcopy(peers[peer]).to(torch.bfloat16)
            entries[f"diffusers DDIMPipeline ({peer}, torch_dtype=bf16)"] = pipeline_call(cast, False)
        else:  # diffusers' documented speed-up for convolutional UNets
            entries[f"diffusers DDIMPipeline ({peer}, channels_last)"] = pipeline_call(best_peer, False)
        if compiled:
            if bf16:
                entries[f"diffusers DDIMPipeline ({peer}, torch_dtype=bf16, compile)"] = pipeline_call(
                    torch.compile(cast), False)
            else:
                entries[f"diffusers DDIMPipeline ({peer}, channels_last, compile)"] = pipeline_call(
                    torch.compile(best_peer), False)
        for label in models:
            entries.update(genkit_calls(label, bf16))
        return entries

    rows, ratios = [], {}
    for precision in ("fp32", "bf16"):
        seconds = time_round_robin(calls(precision == "bf16"), 0.0, repeats, warmup=1)
        for name, sec in seconds.items():
            rows.append({"what": name, "precision": precision, "batch": batch, "nfe": steps,
                         "img_nfe_per_s": round(batch * steps / sec, 1), "seconds": round(sec, 2)})
            print(json.dumps(rows[-1]), flush=True)
        peer_eager = min(sec for name, sec in seconds.items() if name.startswith("diffusers") and "compile" not in name)
        peer_best = min(sec for name, sec in seconds.items() if name.startswith("diffusers"))
        ratios[precision] = {}
        for label in models:
            sample = seconds[f"{label} model.sample"]
            ratios[precision][label] = {"overhead_vs_bare_forward": round(sample / seconds[f"{label} bare forward"], 3),
                                        "speedup_vs_diffusers_pipeline": round(peer_eager / sample, 3)}
            if compiled:  # against diffusers' fastest setting of all, compiled or not
                ratios[precision][label]["compiled_speedup_vs_diffusers_pipeline"] = round(
                    peer_best / seconds[f"{label} model.sample (compile)"], 3)
    return {"rows": rows, "ratios": ratios,
            "params": {**{label: n_params(model.net) for label, model in models.items()},
                       **{name: n_params(net) for name, net in peers.items()}}}


def main() -> None:
    parser = benchmark_parser("throughput", __doc__)
    parser.add_argument("--part", choices=["all", *PARTS], default="all",
                        help="measure one part only; the other stays in the JSON, stamped with the commit it was measured at")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed training seconds per net and precision")
    parser.add_argument("--compile", action="store_true",
                        help="also time genkit's UNet under torch.compile in training (not counted in the ratio), "
                             "and sampling compiled on both sides")
    parser.add_argument("--sampling-batch", type=int, default=256)
    parser.add_argument("--sampling-steps", type=int, default=20)
    parser.add_argument("--sampling-repeats", type=int, default=2, help="timed sampling calls per entry")
    args = parser.parse_args()

    result = {}
    path = Path(args.json)
    measured = list(PARTS) if args.part == "all" else [args.part]
    if args.part != "all" and path.exists():  # the parts not re-measured stay, stamped with their own commit
        kept = json.loads(path.read_text())
        for other in set(PARTS) - set(measured):
            if other in kept:
                result[other] = {**kept[other], "commit": kept[other].get("commit", kept["commit"]),
                                 "machine": kept[other].get("machine", kept["machine"])}
    if "training" in measured:
        result["training"] = training(args)
    if "sampling" in measured:
        result["sampling"] = sampling(args.sampling_batch, args.sampling_steps, args.sampling_repeats, args.compile)
    if "defaults" in measured:
        result["defaults"] = defaults(args.sampling_repeats + 1)
    if "allocator" in measured:
        result["allocator"] = allocator(args.sampling_repeats + 1)
    print(json.dumps({part: {k: v for k, v in result[part].items() if k != "rows"} for part in measured}, indent=2))
    write_results("throughput", result, path)


def training(args) -> dict:
    """Training steps per second of genkit's UNet and DiT and of diffusers' UNet2DModel layouts."""
    torch.manual_seed(0)
    nets = {
        "genkit-unet": build_net(load_config(recipe_path("ddpm_unet_mnist"))),
        "genkit-dit": build_net(load_config(recipe_path("ddpm_dit_mnist"))),
    }
    nets.update(diffusers_unets(n_params(nets["genkit-unet"])))

    peak = {"fp32": matmul_gflops(False), "bf16": matmul_gflops(True)}
    flops = {name: flops_per_step(net) for name, net in nets.items()}
    if args.compile:
        nets["genkit-unet+compile"] = torch.compile(nets["genkit-unet"])
        flops["genkit-unet+compile"] = flops["genkit-unet"]
    steps = {(name, precision): make_step(net, precision == "bf16")
             for name, net in nets.items() for precision in ("fp32", "bf16")}
    for name in [n for n in nets if "unet" in n and not n.endswith("+compile")]:
        nets[f"{name}+channels_last"] = copy.deepcopy(nets[name]).to(memory_format=torch.channels_last)
        flops[f"{name}+channels_last"] = flops[name]
        steps[(f"{name}+channels_last", "bf16")] = make_step(nets[f"{name}+channels_last"], True)
    seconds = time_round_robin(steps, args.seconds)
    rows = []
    for (name, precision), sec in seconds.items():
        row = {"net": name, "params": n_params(nets[name]), "precision": precision,
               "img_per_s": round(BATCH / sec, 1), "gflop_per_s": round(flops[name] / sec / 1e9, 1),
               "matmul_gflop_per_s": round(peak[precision], 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    def best(prefix):
        return max(r["img_per_s"] for r in rows if r["net"].startswith(prefix) and not r["net"].endswith("+compile"))

    return {
        "rows": rows,
        # against the fastest diffusers layout of about the same size, each at its best precision
        "ratio_unet_vs_diffusers": round(best("genkit-unet") / best("diffusers-unet2d"), 3),
        "batch": BATCH, "image": [1, SIZE, SIZE],
    }



def defaults(repeats: int, num: int = 64) -> dict:
    """`sample.py --num 64` on a quick-start run: seconds beyond process start and loading, against
    its own network evaluations (see the module). The evaluations are timed cold, in a process of
    their own that starts and loads as sample.py does, as the command meets them."""
    with tempfile.TemporaryDirectory() as tmp:
        run = train("rf_unet_mnist", Path(tmp) / "run", "train.max_steps=2", "train.sample_every=0")
        assert (next((run / "checkpoints").glob("step-*")) / "grids.json").is_file(), "no grid stored by training"

        def wall(*command) -> tuple[float, str]:
            started = time.perf_counter()
            done = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, check=True)
            return time.perf_counter() - started, done.stdout + done.stderr

        sample = ("sample.py", "--checkpoint", str(run), "--num", str(num), "--out", str(Path(tmp) / "grid.png"))
        _, said = wall(*sample)
        assert "no grid fitted" not in said, said
        nfe = int(re.search(r"(\d+) network evaluations each", said).group(1))
        evaluations = NETWORK_ONLY.format(run=str(run), num=num, nfe=nfe)
        times = {"sample": [], "adaptive": [], "start_and_load": [], "network": []}
        for _ in range(repeats):  # in turn, so that slow spells fall on all alike
            times["sample"].append(wall(*sample)[0])
            times["adaptive"].append(wall(*sample, "--schedule", "adaptive")[0])
            seconds, said = wall("-c", evaluations)
            network = float(said.strip().splitlines()[-1])
            times["network"].append(network)
            times["start_and_load"].append(seconds - network)
    median = {k: statistics.median(v) for k, v in times.items()}
    return {"num": num, "nfe": nfe, "repeats": repeats, "seconds": {k: round(v, 3) for k, v in median.items()},
            "ratio": round((median["sample"] - median["start_and_load"]) / median["network"], 3),
            "ratio_fitting_at_the_call": round((median["adaptive"] - median["start_and_load"]) / median["network"], 3)}


def allocator(repeats: int, train_steps: int = 40, num: int = 256) -> dict:
    """Training and sampling throughput with malloc's freed memory kept and with glibc's defaults
    (see the module), each measurement a process of its own."""
    settings = {"kept": "1", "defaults": "0"}  # GENKIT_KEEP_FREED_MEMORY
    figures = {(name, part): [] for name in settings for part in ("train_steps_per_s", "sample_img_per_s")}
    with tempfile.TemporaryDirectory() as tmp:
        run = train("rf_unet_mnist", Path(tmp) / "run", "train.max_steps=2", "train.sample_every=0")
        for _ in range(repeats):  # in turn, so that slow spells fall on both alike
            for name, value in settings.items():
                os.environ["GENKIT_KEEP_FREED_MEMORY"] = value
                figures[name, "train_steps_per_s"].append(
                    steps_per_second("rf_unet_mnist", Path(tmp) / name, "train.overwrite=true", steps=train_steps))
                done = subprocess.run([sys.executable, "-c", SAMPLING_ONLY.format(run=str(run), num=num)],
                                      cwd=ROOT, capture_output=True, text=True, check=True)
                figures[name, "sample_img_per_s"].append(num / float(done.stdout.strip().splitlines()[-1]))
        os.environ.pop("GENKIT_KEEP_FREED_MEMORY", None)
    median = {f"{part}_{name}": round(statistics.median(v), 3) for (name, part), v in figures.items()}
    return {"repeats": repeats, "train_steps": train_steps, "sampling_num": num, **median,
            "ratio_training": round(median["train_steps_per_s_kept"] / median["train_steps_per_s_defaults"], 3),
            "ratio_sampling": round(median["sample_img_per_s_kept"] / median["sample_img_per_s_defaults"], 3)}


# A process that loads a run and times one `model.sample` call of `num` images with the recipe's
# settings (after a warm-up call), printing its seconds.
SAMPLING_ONLY = """
import time
import genkit
model = genkit.load({run!r})
model.sample({num}, progress=False)
started = time.perf_counter()
model.sample({num}, progress=False)
print(time.perf_counter() - started)
"""


# A process that starts and loads as sample.py does, then makes the command's network evaluations
# (the same net, batch and precision) and prints their seconds.
NETWORK_ONLY = """
import time
import torch
import genkit, genkit.cli
from genkit.nets import input_shape
model = genkit.load({run!r})
channels, size = input_shape(model.cfg)
x, t = torch.randn({num}, channels, size, size), torch.full(({num},), 0.5)
y = torch.arange({num}) % model.num_classes if model.num_classes else None
net = model.inference_net()
with torch.no_grad():
    started = time.perf_counter()
    for _ in range({nfe}):
        net(x, t, y)
print(time.perf_counter() - started)
"""

if __name__ == "__main__":
    main()
