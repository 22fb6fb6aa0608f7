"""Command line: `genkit train|sample`, also reachable as train.py and sample.py."""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from genkit import __version__
import genkit
from genkit.arguments import MAX_NUM, check_draw, check_guidance_interval
from genkit.assets import RECIPES, recipe_names
from genkit.checkpoint import EMA_FILE, STATE_FILE, intact_checkpoints
from genkit.config import load_config, parse_scalar, to_dict
from genkit.config import DataConfig
from genkit.evaluation.classifier import detect_channels, fit_feature_net
from genkit.evaluation.report import evaluation_report
from genkit.export.model_card import check_report
from genkit.files import write_json
from genkit.images import check_new_dir, check_npz_name, image_format, save_grid, save_images, save_npz
from genkit.inference import PRECISIONS
from genkit.inference.distributed import launch, sample_across_processes
from genkit.plots import plot_loss
from genkit.reflow import generate_pairs
from genkit.registry import ArgumentError, ConfigError
from genkit.samplers import DEFAULT_SAMPLER, SAMPLERS, SCHEDULE_NAMES, UnfittedGrid
from genkit.training import CheckpointNotWritten, TrainingDiverged, TrainingInterrupted, train

# The library names a bad argument by its parameter (`genkit.registry.ArgumentError`); here is the
# flag each parameter comes from. Any other name is a sampler option, given with --option.
FLAGS = {"n": "--num", "labels": "--class-label", "steps": "--steps", "seed": "--seed", "device": "--device",
         "metrics": "--metrics", "sampler": "--sampler", "schedule": "--schedule", "guidance": "--guidance",
         "guidance_interval": "--guidance-interval",
         "batch_size": "--batch-size", "shard_size": "--shard-size",
         "path": "--checkpoint", "model": "--checkpoint", "out": "--out", "out_dir": "--out", "runs": "RUN",
         "ema": "--raw-weights", "directory": "--out", "repo_id": "--push", "npz": "--npz",
         "outdir": "--outdir", "compile": "--compile", "bpd": "--bpd", "bpd_probes": "--bpd-probes",
         "bpd_tol": "--bpd-tol", "bpd_estimator": "--bpd-estimator", "feature_net": "--feature-net",
         "inception_weights": "--inception-weights", "data_path": "--data", "embeddings": "--checkpoint"}


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters escaped (a key may hold any)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in str(text))


TOO_LARGE = ("allocate", "Storage size calculation overflowed")  # torch's errors for a tensor beyond memory


def _run(fn, args) -> int:
    """Run a command: its errors in one line each (`_run_quietly`), and the library's notes for the
    user (a sampler on its fixed grid: `genkit.samplers.UnfittedGrid`) once each, after a command
    that succeeded (a failing one says only why it failed)."""
    notes = []
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, *rest):
            if issubclass(category, UnfittedGrid):
                notes.append(f"note: {one_line(message)}")
            else:
                shown(message, category, *rest)
        warnings.showwarning = show
        warnings.simplefilter("always", UnfittedGrid)
        code = _run_quietly(fn, args)
    if code == 0:
        for note in dict.fromkeys(notes):
            print(note, file=sys.stderr)
    return code


def _run_quietly(fn, args) -> int:
    try:
        fn(args)
    except RuntimeError as err:
        if not any(sign in str(err) for sign in TOO_LARGE):
            raise
        print(f"error: out of memory ({one_line(str(err).splitlines()[0])}); use a smaller model, batch or "
              f"image size", file=sys.stderr)
        return 1
    except MemoryError:
        print("error: out of memory; use a smaller model, batch or image size", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: interrupted{RESUMABLE.get(fn, '')}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): nothing is wrong
        sys.stderr.close()
        return 0
    except OSError as err:  # a path given that cannot be read or written
        print(f"error: {one_line(err.filename or '')}: {one_line(err.strerror or err)}", file=sys.stderr)
        return 2
    except ConfigError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except ArgumentError as err:
        flag = FLAGS.get(err.argument, f"--option {err.argument}")
        print(f"error: {flag}: {one_line(err.problem)}", file=sys.stderr)
        return 2
    return 0


def train_parser(prog: str = "train.py") -> Parser:
    p = Parser(prog=prog, description="Train a generative model from a YAML recipe.",
               epilog="Overrides are dotted key=value pairs after the flags, e.g. "
                      "train.max_steps=200 train.batch_size=64 output_dir=runs/x data.path=DIR "
                      "train.resume=latest. Use --print-config to see the run's keys and their values.")
    p.add_argument("--config", help="a YAML recipe: a file, or the name of one shipped with genkit (e.g. rf_unet_mnist; see --list-recipes)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--list-recipes", action="store_true", help="list the recipes shipped with genkit and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p


def _precision_flags(p: Parser) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default="no",
                   help="the net's precision: no (fp32), bf16, fp16, or auto (bf16 where the device has it: recent "
                        "GPUs, CPUs with AMX; else fp16 on a GPU) (default: no)")
    p.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="same as --precision bf16")


def _guidance_interval_flag(p: Parser) -> None:
    p.add_argument("--guidance-interval", type=float, nargs="+", metavar="SIGMA",
                   help="LO [HI]: guide only where the noise-to-signal ratio sigma/alpha lies in [LO, HI] (from LO up "
                        "without HI; 0 for every level) (default: the run's sample.guidance_interval)")


def _sampling_flags(p: Parser) -> None:
    """Flags shared by `sample` and `eval`: which checkpoint, and how to draw from it."""
    p.add_argument("--checkpoint", required=True, help="run directory (newest checkpoint), checkpoint directory, "
                                                      "export, or Hub repository owner/name")
    p.add_argument("--seed", type=int, default=0, help="seed; sample i depends only on (seed, i)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the run's sample.steps)")
    denoising, autoregressive = SAMPLERS.names("denoiser"), SAMPLERS.names("autoregressive")
    p.add_argument("--sampler", choices=list(SAMPLERS), metavar="NAME",
                   help=f"one of: {', '.join(denoising)}; autoregressive models: {' or '.join(autoregressive)} "
                        f"(default: the run's sample.sampler; {DEFAULT_SAMPLER} unless the recipe names one)")
    p.add_argument("--schedule", choices=sorted(SCHEDULE_NAMES), metavar="NAME",
                   help=f"time grid, one of: {', '.join(sorted(SCHEDULE_NAMES))} (default: the grid stored by "
                        f"genkit fit-grid, else the sampler's own; adaptive: fitted now, by a pilot solve)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance weight (1 = none)")
    _guidance_interval_flag(p)
    p.add_argument("--class-label", type=int, help="draw only this class (default: classes in turn)")
    p.add_argument("--batch-size", type=int, default=256, help="images per network call (default: 256)")
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    _precision_flags(p)
    p.add_argument("--compile", action="store_true",
                   help="sample through torch.compile: compilation first (per precision and batch shape), then "
                        "faster sampling; worth it for long runs (figures: the docs' throughput results)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:N or mps "
                                                  "(default: auto); samples do not depend on it beyond rounding")
    p.add_argument("--option", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="sampler options, one or more, flag repeatable: snr=0.1 n_corrector=2 predictor=ancestral (pc); "
                        "method=rk4, rtol=1e-4 (ode); eta=0.5 (ddim); denoise=false (em, pc)")


def sample_parser(prog: str = "sample.py") -> Parser:
    p = Parser(prog=prog, description="Sample a trained model into a PNG grid, one PNG per image, or an array.")
    _sampling_flags(p)
    p.add_argument("--out", help="grid image (default: grid.png, unless --outdir or --npz is given)")
    p.add_argument("--outdir", help="also write each image as DIR/000000.png, ... (a new or empty directory), "
                                    "the input of clean-fid and torch-fidelity")
    p.add_argument("--npz", help="also write the images as uint8 [N, H, W, C] in FILE.npz (key arr_0, labels "
                                 "under 'labels'), as the ADM evaluation suite reads them")
    p.add_argument("--num", type=int, default=64, help="number of images (default: 64)")
    p.add_argument("--nrow", type=int, help="images per grid row (default: square)")
    return p


def eval_parser(prog: str = "eval.py") -> Parser:
    p = Parser(prog=prog, description="Score a trained model: FID, precision/recall and class coverage against "
                                      "the test split of its data, in the feature space of a feature net that "
                                      "reads that data (its own, from genkit train-classifier, or genkit's for "
                                      "MNIST and Fashion-MNIST), beside the same metrics for as many real "
                                      "training images (the floor). For an autoregressive model: the exact test "
                                      "NLL of the first --num test images (binarized with --seed), and, if it is "
                                      "class-conditional, generative classification by argmax_y log p(x | y) + "
                                      "log p(y). For an autoencoder: PSNR, SSIM and reconstruction FID of the "
                                      "first --num test images.")
    _sampling_flags(p)
    p.add_argument("--feature-net", metavar="DIR", help="the feature net to score in (default: the data set's own, "
                                                        "DATA/feature_net, else genkit's that reads the data)")
    p.add_argument("--inception-weights", metavar="PTH",
                   help="also report FID, KID and precision/recall in the FID Inception's features (the weights file "
                        "pytorch-fid and torch-fidelity use, pt_inception-2015-12-05-6726825d.pth; nothing is "
                        "downloaded), against the whole training split, and the same for as many test images; the "
                        "field reports 50,000 samples (--num 50000)")
    p.add_argument("--data", metavar="PATH", help="score against this data set, seen at the model's image size and "
                                                  "channels (default: the run's data.path)")
    p.add_argument("--inception-reference", metavar="NPZ",
                   help="where the training split's Inception features are cached (mu, sigma, features; default: "
                        "DATA/inception_train.npz for a local data set)")
    p.add_argument("--num", type=int, default=10000, help="number of samples (default: 10000)")
    p.add_argument("--json", default="eval.json", help="where to write the results (default: eval.json)")
    p.add_argument("--bpd", type=int, default=0, metavar="N",
                   help="also report bits/dim of the first N test images through the probability-flow ODE "
                        "(dopri5; slow: minutes per 100 images on a CPU)")
    p.add_argument("--bpd-estimator", choices=["auto", "hutchinson", "exact"], default="auto",
                   help="divergence estimator for --bpd: exact (one backward pass per pixel), hutchinson, or auto "
                        "(exact up to 64 dimensions, else hutchinson) (default: auto)")
    p.add_argument("--bpd-probes", type=int, default=4, metavar="K",
                   help="Hutchinson probes per image, along one solve (default: 4)")
    p.add_argument("--bpd-tol", type=float, default=1e-5, help="dopri5's rtol = atol for --bpd (default: 1e-5)")
    return p


def reflow_parser(prog: str = "genkit reflow") -> Parser:
    p = Parser(prog=prog, description="Draw (noise, sample) pairs from a trained flow for reflow (Liu et al. 2022); "
                                      "resumable. Train a 2-rectified flow on them with data.path=OUT "
                                      "train.init_from=CHECKPOINT.")
    p.add_argument("--checkpoint", required=True, help="a trained flow: run directory or checkpoint directory")
    p.add_argument("--out", required=True, help="directory for the pair shards")
    p.add_argument("--num", type=int, default=50000, help="number of pairs (default: 50000)")
    p.add_argument("--steps", type=int, default=20, help="sampling steps per pair (default: 20)")
    p.add_argument("--sampler", help="sampler (default: the run's sample.sampler, on its stored grid)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=1000,
                   help="pairs per file: what a rerun resumes from and the processes of a launch share (default: 1000)")
    _precision_flags(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps; under a launch of several "
                                                  "processes, auto is each one's own device (default: auto)")
    return p


def export_parser(prog: str = "genkit export") -> Parser:
    p = Parser(prog=prog, description="Export a trained model for genkit.load and diffusers (GenkitPipeline), with a "
                                      "model card and a sample grid; optionally upload it to the Hugging Face Hub.")
    p.add_argument("--checkpoint", required=True, help="run directory, checkpoint directory or Hub id owner/name")
    p.add_argument("--out", help="directory to write (replaces an earlier export there)")
    p.add_argument("--push", metavar="OWNER/NAME", help="upload to this Hub repository (created if needed; needs a "
                                                        "token: huggingface-cli login or HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="create the Hub repository private")
    p.add_argument("--metrics", metavar="REPORT", help="a JSON report written by genkit eval, shown in the card")
    p.add_argument("--grid", type=int, default=64, help="samples in the card's grid (default: 64; 0 for none)")
    p.add_argument("--raw-weights", action="store_true", help="export the raw weights instead of the EMA")
    p.add_argument("--device", default="auto", help="where to draw the grid: auto, cpu, cuda, cuda:N or mps")
    return p


def fit_grid_parser(prog: str = "genkit fit-grid") -> Parser:
    p = Parser(prog=prog, description="Fit, once, the time grid a model samples on by default (a pilot solve, then "
                                      "a choice among candidate grids), and store it with the model (grids.json), "
                                      "where sample, eval, export and genkit.load read it.")
    p.add_argument("checkpoint", metavar="RUN", help="run directory (its newest checkpoint), checkpoint directory "
                                                     "or export")
    p.add_argument("--steps", type=int, nargs="+", help="step counts to fit (default: the run's sample.steps)")
    p.add_argument("--sampler", help="the sampler whose grid to fit (default: the run's sample.sampler)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance weight (default: the run's)")
    _guidance_interval_flag(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    return p


def train_classifier_parser(prog: str = "genkit train-classifier") -> Parser:
    p = Parser(prog=prog, description="Train the feature net that genkit eval scores a labelled data set in (a "
                                      "small classifier: FID, precision/recall and coverage use its features), "
                                      "and store it beside the data (DATA/feature_net), where genkit eval finds "
                                      "it. About 4 minutes for 60,000 images of 32 px on 2 CPU cores.")
    p.add_argument("--data", required=True, metavar="PATH", help="the data set: a local parquet or image-folder "
                                                                 "directory (class subfolders are labels), or a hub id")
    p.add_argument("--image-size", type=int, default=32, help="the size the models see it at (default: 32)")
    p.add_argument("--channels", type=int, choices=[1, 3], help="1 (grey) or 3 (RGB) (default: as the images are)")
    p.add_argument("--fit", choices=["pad", "resize"], default="pad", help="pad (centre, with black) or resize "
                                                                         "(shorter side, then centre crop) (default: pad)")
    p.add_argument("--hflip", action="store_true", help="augment with horizontal flips (images whose mirror is "
                                                        "of the same class)")
    p.add_argument("--image-column", default="image", help="(default: image)")
    p.add_argument("--label-column", default="label", help="(default: label)")
    p.add_argument("--epochs", type=int, default=4, help="(default: 4)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--out", metavar="DIR", help="where to store it (default: DATA/feature_net; required for a hub id)")
    return p


def plot_loss_parser(prog: str = "genkit plot-loss") -> Parser:
    p = Parser(prog=prog, description="Plot the training loss of one or more runs into a PNG.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="training output directories (holding metrics.jsonl)")
    p.add_argument("--out", default="loss.png", help="output PNG (default: loss.png)")
    p.add_argument("--linear", action="store_true", help="linear instead of logarithmic loss axis")
    return p


def _train(args) -> None:
    if args.list_recipes:
        return _list_recipes()
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        import yaml
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return
    main_process = int(os.environ.get("RANK", "0")) == 0  # under a launcher, speak once
    try:
        final = train(cfg)
    except (TrainingDiverged, CheckpointNotWritten) as err:
        if main_process:
            print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1)
    except TrainingInterrupted as err:  # the conventional status of a process ended by that signal
        if main_process:
            print(f"genkit: {err}", file=sys.stderr)
        raise SystemExit(128 + err.signum)
    except KeyboardInterrupt:  # before the loop took over the signals, or a second signal during it
        if main_process:
            saved = intact_checkpoints(cfg.output_dir)
            where = f"the newest checkpoint is {saved[-1]} (continue with train.resume=latest)" if saved else \
                "no checkpoint of this run was saved yet"
            print(f"error: interrupted; {where}", file=sys.stderr)
        raise SystemExit(130)
    if main_process:
        print(f"done: final checkpoint {final}")


def _list_recipes() -> None:
    """Each bundled recipe with the first line of its header comment."""
    for name in recipe_names():
        first = (RECIPES / f"{name}.yaml").read_text().splitlines()[0]
        print(f"{name:<24}{first.lstrip('# ') if first.startswith('#') else ''}")


def _check_sampling_flags(args) -> None:
    check_draw(args.num, args.seed, args.batch_size, args.steps, args.guidance)
    if getattr(args, "guidance_interval", None) is not None:
        check_guidance_interval(args.guidance_interval)
    if getattr(args, "nrow", None) is not None and not 0 < args.nrow <= args.num:
        raise ConfigError(f"--nrow: must lie in 1..--num ({args.num}), got {args.nrow}")


def _sampler_options(items: list[str]) -> dict:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option: {item!r} is not of the form KEY=VALUE")
        try:
            parsed = parse_scalar(value)
        except ConfigError as err:
            raise ConfigError(f"--option {key.strip()}: {err}") from None
        if isinstance(parsed, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        options[key.strip()] = parsed
    return options


def _load(args, ema: bool = True):
    """The checkpoint's model (its EMA weights, or the raw ones), on `--device`, or under a launch of
    several processes (`accelerate launch`, `torchrun`) with `--device auto`, on the device the
    launch gave this process."""
    state = launch()
    device = state.device if state.num_processes > 1 and args.device == "auto" else args.device
    return genkit.load(args.checkpoint, ema=ema, device=device)


def _draw(args):
    """Load the checkpoint and draw `args.num` images, shared among the processes of a launch:
    (model, `Samples`). Flags a model's kind does not take, and sampler options, are refused by
    `sample` itself, before anything is drawn."""
    model = _load(args, ema=not args.raw_weights)
    drawn = sample_across_processes(model, args.num, seed=args.seed, labels=args.class_label,
                                    batch_size=args.batch_size, precision=args.precision, **_sampling_arguments(args))
    return model, drawn


def _sampling_arguments(args) -> dict:
    """The sampling flags given, as `model.sample`'s keyword arguments (sampler options among them)."""
    given = {name: getattr(args, name) for name in ("sampler", "steps", "guidance", "guidance_interval", "schedule")
             if getattr(args, name) is not None}
    return {**given, **({"compile": True} if args.compile else {}), **_sampler_options(args.option)}


def _check_out(path: str) -> None:
    """Refuse, before any work, an output file the run cannot write or must not overwrite."""
    from pathlib import Path

    out = Path(path)
    image_format(out)
    if out.is_dir():
        raise ConfigError(f"--out: {out} is a directory; name an image file")
    if (out.parent / STATE_FILE).is_file() or (out.parent / EMA_FILE).is_file():
        raise ConfigError(f"--out: {out.parent} is a checkpoint; write the grid elsewhere")


def _sample(args) -> None:
    _check_sampling_flags(args)
    if args.out is None and not (args.outdir or args.npz):
        args.out = "grid.png"
    if args.out:
        _check_out(args.out)
    if args.outdir:  # refused before any sampling
        check_new_dir(args.outdir)
    if args.npz:
        check_npz_name(args.npz)
    _, drawn = _draw(args)
    if not launch().is_main_process:  # the main process writes what all drew
        return
    written = [save_grid(drawn.images, args.out, nrow=args.nrow)] if args.out else []
    written += [save_images(drawn.images, args.outdir)] if args.outdir else []
    written += [save_npz(drawn.images, drawn.labels, args.npz)] if args.npz else []
    print(f"wrote {', '.join(map(str, written))} ({args.num} images, {drawn.nfe} network evaluations each)")


def _eval(args) -> None:
    _check_sampling_flags(args)
    model = _load(args, ema=not args.raw_weights)
    report = evaluation_report(model, args.num, seed=args.seed, batch_size=args.batch_size, precision=args.precision,
                               labels=args.class_label, bpd=args.bpd, bpd_estimator=args.bpd_estimator,
                               bpd_probes=args.bpd_probes, bpd_tol=args.bpd_tol, feature_net=args.feature_net,
                               inception_weights=args.inception_weights, inception_reference=args.inception_reference,
                               data_path=args.data,
                               **_sampling_arguments(args))
    if not launch().is_main_process:  # every process drew its share and scored all; the main one reports
        return
    if "metrics" in report:  # a sampled model: its metrics beside the real data's
        scores, floor = report["metrics"], report["real_data_floor"]
        if floor["images"] < args.num:
            print(f"note: the real-data floor scores all {floor['images']} training images the split holds, not "
                  f"{args.num}; FID depends on how many images it compares, so compare with care", file=sys.stderr)
        if "bits_per_dim" in report:
            scores = {**scores, "bits_per_dim": report["bits_per_dim"]["mean"]}
        print(f"{'metric':<20}{'model':>10}{'real data':>12}")
        for key, value in scores.items():
            print(f"{key:<20}{value:>10.4g}" + (f"{floor[key]:>12.4g}" if key in floor else f"{'-':>12}"))
        if "inception" in report:
            inception, inception_floor = report["inception"], report["inception"]["real_data_floor"]
            print(f"in Inception features, against {inception['reference']['images']} training images:")
            for key in ("fid", "kid", "precision", "recall"):
                print(f"{'inception ' + key:<20}{inception[key]:>10.4g}{inception_floor[key]:>12.4g}")
        what = f"{args.num} samples, {report['nfe']} network evaluations each"
    else:  # scored on the test split: NLL, or reconstructions
        for key, value in report.items():
            if isinstance(value, float):
                print(f"{key:<26}{value:>12.6g}")
        if "real_data_floor" in report:
            print(f"{'fid floor':<26}{report['real_data_floor']['fid']:>12.6g}  (real training images against the "
                  f"test split)")
        what = f"{report['images']} test images"
    write_json(args.json, report)
    print(f"wrote {args.json} ({what})")


def _reflow(args) -> None:
    args.guidance = None
    _check_sampling_flags(args)
    model = _load(args)
    out = generate_pairs(model, args.out, args.num, steps=args.steps, sampler=args.sampler, seed=args.seed,
                         shard_size=args.shard_size, batch_size=args.batch_size, precision=args.precision)
    if launch().is_main_process:
        print(f"wrote {args.num} pairs to {out}; train on them with data.path={out} train.init_from={args.checkpoint}")


def _export(args) -> None:
    import json

    if not args.out and not args.push:
        raise ConfigError("--out or --push: say where the export goes")
    if not 0 <= args.grid <= MAX_NUM:
        raise ConfigError(f"--grid: must lie in 0..{MAX_NUM}, got {args.grid}")
    metrics = None
    if args.metrics:
        from pathlib import Path

        try:
            metrics = check_report(json.loads(Path(args.metrics).read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError(f"--metrics: {args.metrics} is not a JSON report of genkit eval") from None
        except ArgumentError as err:
            raise ConfigError(f"--metrics: {args.metrics}: {err.problem}") from None
    model = genkit.load(args.checkpoint, ema=not args.raw_weights, device=args.device)
    if args.out:
        print(f"wrote {genkit.save_pretrained(model, args.out, metrics=metrics, grid=args.grid, repo_id=args.push)}")
    if args.push:
        print(f"pushed {genkit.push_to_hub(model, args.push, private=args.private, metrics=metrics, grid=args.grid)}")


def _fit_grid(args) -> None:
    from pathlib import Path

    if not Path(args.checkpoint).is_dir():
        raise ConfigError(f"RUN: {args.checkpoint} is not a directory here; the grid is stored beside the weights")
    model = genkit.load(args.checkpoint, device=args.device)
    if model.family != "denoiser":
        raise ConfigError(f"RUN: a {model.family} model samples on no time grid")
    for steps in args.steps or [None]:
        grid = model.fit_grid(steps, args.guidance, args.sampler, guidance_interval=args.guidance_interval)
        within = f" within sigma/alpha {list(grid.guidance_interval)}" if grid.guidance_interval else ""
        print(f"{grid.sampler} at {grid.steps} steps, guidance {grid.guidance:g}{within}: {grid.runs} on the "
              f"{grid.grid} grid (sliced W2 {grid.distance:.4g} to the pilot's reference, {grid.pilot_draws} draws)")
    print(f"wrote {model.save_grids()}")


def _train_classifier(args) -> None:
    if args.epochs < 1:
        raise ArgumentError("epochs", f"must be at least 1, got {args.epochs}")
    data = DataConfig(path=args.data, image_column=args.image_column, label_column=args.label_column,
                      image_size=args.image_size, fit=args.fit, hflip=args.hflip)
    data.channels = args.channels or detect_channels(data)
    directory, info = fit_feature_net(data, args.out, epochs=args.epochs, seed=args.seed)
    print(f"test accuracy {info.test_accuracy:.4f} on {info.num_classes} classes ({data.channels}-channel images); "
          f"wrote {directory}")


def _plot_loss(args) -> None:
    print(f"wrote {plot_loss(args.runs, args.out, log_scale=not args.linear)}")


RESUMABLE = {_reflow: "; the pairs drawn so far are kept: run the same command again to go on"}


def train_main(argv=None) -> int:
    return _run(_train, train_parser().parse_args(argv))


def sample_main(argv=None) -> int:
    return _run(_sample, sample_parser().parse_args(argv))


def eval_main(argv=None) -> int:
    return _run(_eval, eval_parser().parse_args(argv))


COMMANDS = {
    "train": (train_parser, _train, "train a model from a YAML recipe"),
    "sample": (sample_parser, _sample, "sample a trained model into a PNG grid"),
    "eval": (eval_parser, _eval, "score a trained model (FID, precision/recall, coverage; NLL)"),
    "reflow": (reflow_parser, _reflow, "draw (noise, sample) pairs from a flow for reflow training"),
    "export": (export_parser, _export, "export a model with its card for diffusers and the Hub; push it"),
    "fit-grid": (fit_grid_parser, _fit_grid, "fit a model's default time grid once and store it with the model"),
    "train-classifier": (train_classifier_parser, _train_classifier,
                         "train the feature net genkit eval scores a labelled data set in"),
    "plot-loss": (plot_loss_parser, _plot_loss, "plot training losses into a PNG"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--version":
        print(f"genkit {__version__}")
        return 0
    if not argv or argv[0] not in COMMANDS:
        if argv and argv[0] in ("-h", "--help"):
            lines = "\n".join(f"  {name:<10} {text}" for name, (_, _, text) in COMMANDS.items())
            print(f"usage: genkit [--version] {{{','.join(COMMANDS)}}} ...\n\n{lines}\n\n"
                  f"Run genkit COMMAND --help for details.")
            return 0
        print(f"error: expected a command: {', '.join(COMMANDS)} (see genkit --help)", file=sys.stderr)
        return 2
    make, fn, _ = COMMANDS[argv[0]]
    return _run(fn, make(f"genkit {argv[0]}").parse_args(argv[1:]))
