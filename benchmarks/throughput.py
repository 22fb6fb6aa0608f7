"""Training throughput on this machine: genkit's UNet and DiT against diffusers' UNet2DModel.

One process, one step = forward + backward + AdamW on a batch of 64 32x32x1 images, in fp32 and
in bf16 autocast. Every diffusers UNet2DModel layout tried that lies within 10% of the genkit
UNet's parameters is timed, and the ratio is taken against the fastest. Every net and precision
is timed in turn, block by block, so that the machine's slow spells fall on all of them alike.
Also reports achieved GFLOP/s (FLOPs counted by torch's FlopCounterMode) against a plain bf16
matmul timed in the same run.

    python benchmarks/throughput.py --json throughput.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from genkit.config import load_config
from genkit.nets import build_net

ROOT = Path(__file__).resolve().parent.parent
BATCH, SIZE = 64, 32


class DiffusersUNet(torch.nn.Module):
    """diffusers' UNet2DModel behind genkit's `net(x, t, y)` call (t scaled to its 0..1000)."""

    def __init__(self, **kwargs):
        super().__init__()
        from diffusers import UNet2DModel

        self.unet = UNet2DModel(**kwargs)

    def forward(self, x, t, y=None):
        return self.unet(x, t * 1000, class_labels=y).sample


def diffusers_unets(target_params: int) -> dict[str, torch.nn.Module]:
    """Every UNet2DModel layout, among a few natural ones, within 10% of `target_params`."""
    found = {}
    for widths in [(32, 64, 64), (32, 64, 96), (32, 64, 128), (64, 64, 64)]:
        for layers in (1, 2):
            net = DiffusersUNet(sample_size=SIZE, in_channels=1, out_channels=1, block_out_channels=widths,
                                layers_per_block=layers, norm_num_groups=32, num_class_embeds=11,
                                down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                                up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))
            if abs(n_params(net) / target_params - 1) <= 0.10:
                found["diffusers-unet2d" + "x".join(map(str, widths)) + f"-l{layers}"] = net
    if not found:
        raise SystemExit(f"no UNet2DModel layout within 10% of {target_params} parameters")
    return found


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def make_step(net: torch.nn.Module, bf16: bool):
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


def time_round_robin(steps: dict, seconds: float, repeats: int = 5) -> dict:
    """Median seconds per step of each entry, over `repeats` blocks of about `seconds` / repeats.

    The blocks are taken in turn (one block of every entry per round), so that a slow spell of a
    shared machine falls on all entries alike instead of on whichever ran then.
    """
    per_block = {}
    for name, step in steps.items():
        for _ in range(3):  # warm-up: oneDNN builds its kernels on first use
            step()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per net and precision")
    parser.add_argument("--compile", action="store_true",
                        help="also time genkit's UNet under torch.compile (not counted in the ratio)")
    args = parser.parse_args()

    torch.manual_seed(0)
    nets = {
        "genkit-unet": build_net(load_config(ROOT / "configs/ddpm_unet_mnist.yaml")),
        "genkit-dit": build_net(load_config(ROOT / "configs/ddpm_dit_mnist.yaml")),
    }
    nets.update(diffusers_unets(n_params(nets["genkit-unet"])))

    peak = {"fp32": matmul_gflops(False), "bf16": matmul_gflops(True)}
    flops = {name: flops_per_step(net) for name, net in nets.items()}
    if args.compile:
        nets["genkit-unet+compile"] = torch.compile(nets["genkit-unet"])
        flops["genkit-unet+compile"] = flops["genkit-unet"]
    steps = {(name, precision): make_step(net, precision == "bf16")
             for name, net in nets.items() for precision in ("fp32", "bf16")}
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

    result = {
        "rows": rows,
        # against the fastest diffusers layout of about the same size, each at its best precision
        "ratio_unet_vs_diffusers": round(best("genkit-unet") / best("diffusers-unet2d"), 3),
        "batch": BATCH, "image": [1, SIZE, SIZE], "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
