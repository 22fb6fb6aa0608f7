"""VP against sub-VP on MNIST at the same training budget: test bits/dim and FID.

Song et al. (2021, table 2) found sub-VP's likelihood better than VP's (3.05 against 3.21
bits/dim on CIFAR-10). Each SDE trains its default recipe (configs/sde_*_unet_mnist.yaml) for
`--steps` steps with the same seed; then bits/dim of the first `--bpd-images` test digits
through the probability-flow ODE (dopri5, rtol = atol = 1e-5, Hutchinson, uniform
dequantization) and FID of 1000 samples (DPM-Solver++ 2M + corrector, 20 steps).

    python benchmarks/sde_bpd.py --steps 900 --bpd-images 500
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from harness import benchmark_parser, device, fit_grid, train, write_results

import genkit
from genkit.config import load_config
from genkit.data import load_images
from genkit.evaluation import Evaluator



def main() -> None:
    p = benchmark_parser("sde_bpd", __doc__, workdir=True)
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--bpd-images", type=int, default=500)
    p.add_argument("--kinds", nargs="+", default=["vp", "subvp"])
    args = p.parse_args()
    evaluator = Evaluator(progress=False)
    test = load_images(load_config().data, split="test", limit=args.bpd_images, progress=False)
    rows = []
    for kind in args.kinds:
        started = time.perf_counter()
        out = train(f"sde_{kind}_unet_mnist", Path(args.workdir) / kind, f"train.max_steps={args.steps}")
        train_s = time.perf_counter() - started
        model = genkit.load(out, device=device())
        started = time.perf_counter()
        bpd, err, nfe = model.bits_per_dim(test.images, batch_size=250, progress=True)
        bpd_s = time.perf_counter() - started
        labels = model.default_labels(1000)
        fit_grid(model, "dpmpp_2m_pc", 20)
        fid = evaluator.score(model.sample(1000, sampler="dpmpp_2m_pc", steps=20, labels=labels).images, labels)["fid"]
        rows.append({"sde": kind, "steps": args.steps, "bpd": bpd, "bpd_stderr": err, "nfe_per_batch": nfe,
                     "fid_dpmpp_2m_pc_20": fid, "train_seconds": train_s, "bpd_seconds": bpd_s})
        print(json.dumps(rows[-1]))
    write_results("sde_bpd", {"bpd_images": len(test), "rows": rows}, args.json)


if __name__ == "__main__":
    main()
