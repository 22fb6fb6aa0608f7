"""Command line: `genkit train|sample`, also reachable as train.py and sample.py."""
from __future__ import annotations

import argparse
import sys

from genkit.config import ConfigError


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _run(fn, args) -> int:
    try:
        fn(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def train_parser(prog: str = "train.py") -> Parser:
    p = Parser(prog=prog, description="Train a generative model from a YAML recipe.",
               epilog="Overrides are dotted key=value pairs after the flags, e.g. "
                      "train.max_steps=200 train.batch_size=64 output_dir=runs/x data.path=DIR "
                      "train.resume=latest. Use --print-config to see every key and its value.")
    p.add_argument("--config", help="YAML recipe under configs/ (default: built-in defaults)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p


def sample_parser(prog: str = "sample.py") -> Parser:
    from genkit.samplers import SAMPLERS, SCHEDULES

    p = Parser(prog=prog, description="Sample a trained model into a PNG grid.")
    p.add_argument("--checkpoint", required=True, help="run directory (newest checkpoint) or checkpoint directory")
    p.add_argument("--out", default="grid.png", help="output PNG (default: grid.png)")
    p.add_argument("--num", type=int, default=64, help="number of images (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="seed; sample i depends only on (seed, i)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the run's sample.steps)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), metavar="NAME",
                   help=f"one of: {', '.join(sorted(SAMPLERS))} (default: the run's sample.sampler)")
    p.add_argument("--schedule", choices=sorted(SCHEDULES), metavar="NAME",
                   help=f"time grid, one of: {', '.join(sorted(SCHEDULES))} (default: the sampler's own)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance weight (1 = none)")
    p.add_argument("--class-label", type=int, help="draw only this class (default: classes in turn)")
    p.add_argument("--nrow", type=int, help="images per grid row (default: square)")
    p.add_argument("--batch-size", type=int, default=256, help="images per network call (default: 256)")
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on CPUs with AMX)")
    return p


def _train(args) -> None:
    from genkit.config import load_config, to_dict

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        import yaml
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return
    from genkit.training import TrainingDiverged, train

    try:
        final = train(cfg)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1)
    print(f"done: final checkpoint {final}")


def _sample(args) -> None:
    for flag in ("num", "batch_size"):
        if getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag.replace('_', '-')}: must be positive, got {getattr(args, flag)}")
    if args.steps is not None and args.steps <= 0:
        raise ConfigError(f"--steps: must be positive, got {args.steps}")
    if args.guidance is not None and args.guidance < 0:
        raise ConfigError(f"--guidance: must not be negative, got {args.guidance}")
    import genkit
    from genkit.images import save_grid

    model = genkit.load(args.checkpoint, ema=not args.raw_weights)
    images = model.sample(args.num, seed=args.seed, sampler=args.sampler, steps=args.steps,
                          guidance=args.guidance, labels=args.class_label, schedule=args.schedule,
                          batch_size=args.batch_size,
                          bf16=args.bf16)
    path = save_grid(images, args.out, nrow=args.nrow)
    print(f"wrote {path} ({args.num} images, {model.last_nfe} network evaluations each)")


def train_main(argv=None) -> int:
    return _run(_train, train_parser().parse_args(argv))


def sample_main(argv=None) -> int:
    return _run(_sample, sample_parser().parse_args(argv))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"train": (train_parser, _train), "sample": (sample_parser, _sample)}
    if not argv or argv[0] not in commands:
        if argv and argv[0] in ("-h", "--help"):
            print("usage: genkit {train,sample} ...\n\n  train   train a model from a YAML recipe\n"
                  "  sample  sample a trained model into a PNG grid\n\nRun genkit COMMAND --help for details.")
            return 0
        print(f"error: expected a command: {', '.join(commands)} (see genkit --help)", file=sys.stderr)
        return 2
    make, fn = commands[argv[0]]
    return _run(fn, make(f"genkit {argv[0]}").parse_args(argv[1:]))
