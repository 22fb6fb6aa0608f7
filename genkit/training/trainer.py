"""The training loop on `accelerate.Accelerator`: generic over the method (its `loss`)."""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import time
import warnings
from contextlib import nullcontext
from operator import attrgetter
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from genkit import checkpoint as ckpt
from genkit.arguments import reason
from genkit.config import Config, ConfigError, flat_dict, load_config, validate
from genkit.data import DiskImageData, RandomCrops, StepIndices, load_images, open_images, resolve_data_path
from genkit.images import make_grid, save_grid, to_uint8
from genkit.inference import GenerativeModel, build_model
from genkit.inference.devices import keep_freed_memory, launched_on_cpus
from genkit.latents import AUTOENCODER_DIR, LatentCodec, LatentData, encode_dataset
from genkit.loading import diffusers_model_folder, load
from genkit.methods import METHODS, build_method
from genkit.nets import build_net, input_shape
from genkit.reflow import is_pairs_dir, load_pairs
from genkit.registry import ArgumentError
from genkit.samplers import UnfittedGrid, takes_fitted_grid
from genkit.training.disk import WRITE_ERRORS, CheckpointNotWritten, write_error
from genkit.training.ema import EMA
from genkit.training.run_dir import RunLock, claim, config_changes
from genkit.training.schedules import lr_schedule, mixed_precision
from genkit.training.sharding import ShardedState, all_ranks, gathered, refuse_other_sharding, shard, whole
from genkit.training.signals import StopRequests, TrainingInterrupted
from genkit.training.trackers import Heard, check_tracker


METRICS_FILE = "metrics.jsonl"  # one JSON line per log step, for `genkit plot-loss`


log = logging.getLogger("genkit")


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss, gradient or update."""


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """Noise for one optimiser step on one process: a pure function of (seed, step, rank)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1009 + rank)


class Trainer:
    """Trains `cfg`'s net with `cfg`'s method; checkpoints, EMA, logs and sample grids."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.grids = None  # the grids fitted to the final weights (`fit_grid`)
        tc = cfg.train
        check_tracker(tc.report_to)
        refuse_other_sharding()
        self.out = Path(cfg.output_dir)
        self.accelerator = Accelerator(
            cpu=launched_on_cpus() or None,
            mixed_precision=mixed_precision(tc.mixed_precision),
            log_with=None if tc.report_to == "none" else tc.report_to,
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "logs")),
        )
        world = self.accelerator.num_processes
        if tc.fsdp and self.accelerator.mixed_precision == "fp16":
            raise ConfigError("train.fsdp: fp16's loss scaling is not sharded here; set train.mixed_precision=bf16 or no")
        if self.accelerator.device.type == "cpu":
            # `accelerate launch` defaults to one thread per process, which halves CPU throughput
            local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            torch.set_num_threads(tc.cpu_threads or max(1, (os.cpu_count() or 1) // local))
            if keep_freed_memory():
                log.info("CPU: freed memory kept for the next tensors (glibc malloc without mmap or trimming; "
                         "GENKIT_KEEP_FREED_MEMORY=0 leaves malloc as it is)")
        if tc.batch_size % (world * tc.grad_accum):
            raise ConfigError(f"train.batch_size: {tc.batch_size} is not divisible by processes x "
                              f"train.grad_accum = {world} x {tc.grad_accum}")
        self.lock = RunLock(self.out)
        if self.accelerator.is_main_process:
            self.lock.acquire()
        try:
            self._setup()
        except BaseException:
            self.lock.release()
            raise

    def _setup(self) -> None:
        cfg, tc = self.cfg, self.cfg.train
        self.codec = self._autoencoder()
        if self.accelerator.is_main_process:
            ckpt.recover(self.out)
            claim(cfg, resuming=bool(tc.resume))
        self.accelerator.wait_for_everyone()
        self.resume_candidates = self._find_resume()
        set_seed(tc.seed)  # same initial weights on every process
        teacher = METHODS[cfg.method.name].extra.get("teacher")  # the config key naming it
        parts = {"teacher": self._teacher(teacher)} if teacher else {}  # before the data: fail fast
        self.data = self._load_data()
        self.method = build_method(cfg, **parts)
        net = build_net(cfg)
        if self._trains_channels_last(net):
            net = net.to(memory_format=torch.channels_last)
        if tc.init_from:
            self._init_weights(net, tc.init_from)
        self.num_params = sum(p.numel() for p in net.parameters())
        if tc.compile:
            net.compile()  # in place: parameter names, hence checkpoints, stay as they are
        self.sharded = tc.fsdp and self.accelerator.num_processes > 1
        if tc.fsdp:  # genkit shards (below) and checkpoints the whole state (`ShardedState`), not accelerate
            net = net.to(self.accelerator.device)
            if self.sharded:
                shard(net)
        optimizer = torch.optim.AdamW(net.parameters(), lr=tc.lr, betas=tuple(tc.adam_betas),
                                      weight_decay=tc.weight_decay)
        self.scheduler = lr_schedule(optimizer, tc)
        self.net, self.optimizer = (net, optimizer) if tc.fsdp else self.accelerator.prepare(net, optimizer)
        self.ema = EMA(self.accelerator.unwrap_model(self.net), tc.ema_decay)
        self.accelerator.register_for_checkpointing(self.scheduler, self.ema)
        if tc.fsdp:
            self.accelerator.register_for_checkpointing(ShardedState(self.net, self.optimizer))
        self.step, self.bad_steps_total = 0, 0
        self.seconds_before, self.fit_started = 0.0, time.perf_counter()  # training time of earlier sessions; this one's start

    def _trains_channels_last(self, net: torch.nn.Module) -> bool:
        """Whether `net` trains faster in channels-last here: nets that always do (`channels_last`: the
        PixelCNN), and on a CPU in half precision those whose convolutions do (`cpu_channels_last`:
        the UNet, its normalisations in the contiguous layout; benchmarks/throughput.py)."""
        acc = self.accelerator
        half_on_cpu = acc.device.type == "cpu" and acc.mixed_precision in ("bf16", "fp16")
        return getattr(net, "channels_last", False) or (
            half_on_cpu and not self.cfg.train.fsdp and getattr(net, "cpu_channels_last", False))

    @staticmethod
    def _init_weights(net: torch.nn.Module, source: str) -> None:
        """Start from another run's EMA weights, or, for a diffusers net, from the weights of a diffusers
        model or pipeline folder (the nets must have the same shape)."""
        from safetensors.torch import load_file

        folder = diffusers_model_folder(source)
        try:
            if folder is not None:
                if not hasattr(net, "load_pretrained"):  # a net that wraps a diffusers model (`diffusers_net`)
                    raise ConfigError(f"train.init_from: {source} holds a diffusers model; fine-tune it as one, with "
                                      f"model.name=diffusers and model.diffusers.path={folder}")
                net.load_pretrained(folder)
                return
            net.load_state_dict(load_file(str(ckpt.resolve_checkpoint(source) / ckpt.EMA_FILE)))
        except ArgumentError as err:
            raise ConfigError(f"train.init_from: {err.problem}") from None
        except RuntimeError as err:
            raise ConfigError(f"train.init_from: the weights in {source} do not fit this run's net "
                              f"({str(err).splitlines()[0]})") from None

    def _teacher(self, key: str):
        """The trained model the method learns from, named by config `key` (`method.consistency.teacher`),
        on this run's device and checked against its data; None where the key is empty."""
        source = attrgetter(key)(self.cfg)
        if not source:
            return None
        try:
            teacher = load(source, device=self.accelerator.device)
        except ArgumentError as err:
            raise ConfigError(f"{key}: {err.problem}") from None
        if not isinstance(teacher, GenerativeModel):
            paths = ", ".join(name for name, method in METHODS.items() if "path" in method.extra)
            raise ConfigError(f"{key}: {source} holds a {teacher.cfg.method.name} model; distillation needs one on "
                              f"a Gaussian path ({paths})")
        ours, theirs = input_shape(self.cfg), input_shape(teacher.cfg)
        if ours != theirs:
            raise ConfigError(f"{key}: the teacher models {theirs[0]} x {theirs[1]} x {theirs[1]} "
                              f"inputs, this run's data are {ours[0]} x {ours[1]} x {ours[1]}")
        teacher.net.requires_grad_(False)
        return teacher

    def _autoencoder(self):
        """With `data.autoencoder`: its `LatentCodec`, after filling `data.latent_channels` and
        `data.latent_size` in from it (or checking them against it); else None."""
        data = self.cfg.data
        if not data.autoencoder:
            return None
        codec = LatentCodec.from_run(data.autoencoder)
        channels, size, _ = codec.latent_shape_for(data.channels, data.image_size)
        for key, value in (("latent_channels", channels), ("latent_size", size)):
            if getattr(data, key) not in (0, value):
                raise ConfigError(f"data.{key}: {getattr(data, key)}, but {data.autoencoder} makes latents of "
                                  f"{channels} x {size} x {size}; leave it at 0 to take the autoencoder's")
        data.latent_channels, data.latent_size = channels, size
        validate(self.cfg)  # the net's checks, now on the latents' size
        return codec.to(self.accelerator.device)

    def _load_data(self):
        """Images, (noise, sample) pairs from `genkit reflow` when data.path holds them, or with
        `data.autoencoder` the images' latents (encoded once into `<output_dir>/latents`, then
        normalised: `genkit.latents`)."""
        path = resolve_data_path(self.cfg.data.path)
        pairs, check_pairs = is_pairs_dir(path), METHODS[self.cfg.method.name].extra.get("pairs")
        if pairs and check_pairs is None:
            takers = " or ".join(name for name, method in METHODS.items() if "pairs" in method.extra)
            raise ConfigError(f"data.path: {path} holds reflow pairs, which train method.name={takers} only")
        if check_pairs is not None:
            check_pairs(self.cfg.method, path, pairs)
        if pairs:
            if self.codec is not None:
                raise ConfigError(f"data.path: {path} holds reflow pairs, which are pixels; leave data.autoencoder empty")
            data = load_pairs(path)
        elif self.codec is not None:  # encoded once, whole: latents are small
            data = load_images(self.cfg.data, progress=self.accelerator.is_main_process)
        else:
            data = open_images(self.cfg.data, progress=self.accelerator.is_main_process)
        if data.shape[0] != self.cfg.data.channels:
            raise ConfigError(f"data.channels: the model takes {self.cfg.data.channels} channels, "
                              f"the data has {data.shape[0]}")
        classes, column = self.cfg.model.num_classes, self.cfg.data.label_column
        if classes > 0 and data.labels is None:
            raise ConfigError(f"data.label_column: {self.cfg.data.path} has no label column '{column}'; name the "
                              f"column that holds the labels, or set model.num_classes=0 for an unconditional model")
        if classes > 0 and (data.labels.min() < 0 or data.labels.max() >= classes):
            bad = data.labels[(data.labels < 0) | (data.labels >= classes)][0].item()
            raise ConfigError(f"data.label_column: labels must lie in 0..{classes - 1} (model.num_classes={classes}), "
                              f"found {bad}")
        if self.codec is None:
            return data
        cache, acc = self.out / "latents", self.accelerator
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(acc.mixed_precision)  # the run's precision
        if acc.is_main_process:  # one process encodes; the others read its cache
            latents = encode_dataset(self.codec, data.images, cache, half, progress=True)
        acc.wait_for_everyone()
        if not acc.is_main_process:
            latents = encode_dataset(self.codec, data.images, cache, half, progress=False)
        self.codec.fit(latents)
        return LatentData((latents - self.codec.shift) * self.codec.scale, data.labels)

    # ------------------------------------------------------------------ checkpoints

    def _find_resume(self) -> list[Path]:
        """The checkpoints to resume from, newest first (`load` falls back along them)."""
        resume = self.cfg.train.resume
        if not resume:
            return []
        if resume == "latest":
            found = ckpt.intact_checkpoints(self.out)
            if not found and ckpt.list_checkpoints(self.out):
                raise ConfigError(f"train.resume: every checkpoint in {self.out / 'checkpoints'} is damaged")
            return found[::-1]  # nothing yet: start fresh
        path = Path(resume)
        if not (path / ckpt.STATE_FILE).is_file():
            raise ConfigError(f"train.resume: {resume} is not a checkpoint directory (use 'latest' or a step-* path)")
        problem = ckpt.damage(path)
        if problem:
            raise ConfigError(f"train.resume: {path} is damaged ({problem})")
        return [path]

    def _check_resume_config(self, path: Path) -> None:
        """Refuse a resume whose config changes the run's trajectory, unless allowed."""
        saved = load_config(path / ckpt.CONFIG_FILE)
        changes = config_changes(saved, self.cfg)
        if changes and not self.cfg.train.allow_config_changes:
            raise ConfigError(f"train.resume: this config changes what {path.name} was trained with "
                              f"({'; '.join(changes)}); resume with its values or set train.allow_config_changes=true")

    def _apply_learning_rate(self) -> None:
        """After a resume: this config's learning rate (the one its checkpoints record) replaces the
        loaded scheduler's, which a state load restores."""
        lr, sched = self.cfg.train.lr, self.scheduler
        sched.base_lrs = [lr] * len(sched.base_lrs)
        for group, factor in zip(self.optimizer.param_groups, sched.lr_lambdas):
            group["initial_lr"], group["lr"] = lr, lr * factor(sched.last_epoch)

    def save(self) -> Path:
        """Write a complete checkpoint atomically; every process takes part. Weights that are not
        finite are never published."""
        acc = self.accelerator
        ema, net_state = self.ema.whole(), gathered(acc.unwrap_model(self.net).state_dict())  # collectives
        if not all(torch.isfinite(v).all() for v in ema.values()):
            raise TrainingDiverged(f"the EMA weights at step {self.step} are not finite; no checkpoint written")
        final = ckpt.checkpoint_dir(self.out, self.step)
        tmp = final.parent / f".tmp-{final.name}"
        if acc.is_main_process and tmp.exists():  # left by a run killed while saving
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(tmp))
            acc.wait_for_everyone()  # every rank's RNG state is in tmp before it is published
            if acc.is_main_process:
                seconds = self.seconds_before + time.perf_counter() - self.fit_started
                state = {"step": self.step, "bad_steps_total": self.bad_steps_total, "train_seconds": round(seconds, 1)}
                ckpt.write_export(tmp, self.cfg, net_state, ema, state)
                if self.codec is not None:  # a latent model travels with its autoencoder
                    self.codec.save(tmp / AUTOENCODER_DIR)
                ckpt.publish(tmp, final, self.cfg.train.checkpoints_keep)
        except WRITE_ERRORS as err:  # a full disk, a lost mount: leave no half-written copy to fill it further
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointNotWritten(f"cannot write checkpoint {final} ({write_error(err)}); the checkpoints "
                                       f"already in {final.parent} are intact: free space, then continue with "
                                       f"train.resume=latest") from None
        except BaseException:  # anything else (a second Ctrl-C): no unpublished copy stays behind either
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        acc.wait_for_everyone()
        return final

    def load(self, path: Path) -> None:
        with Heard("accelerate.checkpointing") as heard:
            self.accelerator.load_state(str(path))
        # accelerate skips a random state it cannot read with only an info line; resume would not be exact
        if any("Could not load random states" in message for message in heard.messages):
            raise ValueError("its random states do not load")
        state = ckpt.read_trainer_state(path)
        self.step, self.bad_steps_total = state["step"], state["bad_steps_total"]
        self.seconds_before = state.get("train_seconds", 0.0)  # absent in checkpoints of earlier versions

    def resume(self) -> Path | None:
        """Load the newest loadable checkpoint among the candidates, warning about each one skipped.
        Checkpoints of this run beyond the step resumed (a branch abandoned, or ones that did not
        load) are moved aside (`checkpoint.set_aside_later`), so that the newest is this branch's."""
        for path in self.resume_candidates:
            self._check_resume_config(path)
            try:
                self.load(path)
                self._apply_learning_rate()
            except Exception as err:  # a damaged optimizer, RNG or scheduler state: try the one before
                log.warning(f"skipping checkpoint {path}: it does not load ({reason(err)})")
                continue
            if self.accelerator.is_main_process:
                aside = ckpt.set_aside_later(self.out, self.step)
                if aside is not None:
                    tqdm.write(f"genkit: resuming from step {self.step} starts a new branch; the run's later "
                               f"checkpoints were moved to {aside}")
            self.accelerator.wait_for_everyone()
            return path
        if self.resume_candidates:
            raise ConfigError(f"train.resume: no checkpoint of {self.out} loads")
        return None

    # ------------------------------------------------------------------ samples

    def ema_model(self, weights: dict):
        """The EMA `weights` (`EMA.whole`) as a model for inference (`genkit.inference`), where the run
        trains, with the grids fitted to it so far (none until the run ends: `fit_grid`)."""
        net = build_net(self.cfg)
        net.load_state_dict(weights)
        model = build_model(self.cfg, net.eval(), self.accelerator.device, self.codec)
        if self.grids is not None:
            model.grids = self.grids
        return model

    def fit_grid(self, checkpoint: Path, weights: dict) -> None:
        """Fit the grid the config's sampler samples on by default to the EMA weights (`sample.fit_grid`;
        only for samplers that take a fitted grid) and store it in `checkpoint` (`genkit.checkpoint.write_grids`)."""
        sc = self.cfg.sample
        if not (sc.fit_grid and takes_fitted_grid(sc.sampler)):
            return
        model = self.ema_model(weights)
        tqdm.write(f"genkit: fitting the {sc.sampler} grid at {sc.steps} steps (once; `genkit fit-grid` fits others)")
        model.fit_grid(progress=True)
        self.grids = model.grids
        try:
            ckpt.write_grids(checkpoint, model.grids)
        except WRITE_ERRORS as err:  # the checkpoint stands; only the grid is not stored
            log.warning(f"could not store the fitted grid in {checkpoint} ({write_error(err)}); the run is saved: "
                        f"`genkit fit-grid {self.out}` fits it again")

    def sample_grid(self, weights: dict) -> Path:
        """An 8x8 grid from the EMA `weights` (`preview`: samples with the config's sampler and seed 0,
        or an autoencoder's reconstructions)."""
        model = self.ema_model(weights)
        with warnings.catch_warnings():  # a preview before the grid is fitted runs on the fixed one, as meant
            warnings.simplefilter("ignore", UnfittedGrid)
            images = model.preview(self.data, 64)
        path = save_grid(images, self.out / "samples" / f"step-{self.step:06d}.png", nrow=8)
        grid = make_grid(to_uint8(images), nrow=8)  # [C, H, W] uint8
        for tracker in self.accelerator.trackers:  # the grid goes to the tracker too
            if tracker.name == "tensorboard":
                tracker.log_images({"samples": grid[None].numpy()}, step=self.step)
            elif hasattr(tracker, "log_images"):
                tracker.log_images({"samples": [grid.permute(1, 2, 0).numpy()]}, step=self.step)
        return path

    # ------------------------------------------------------------------ loop

    def train_step(self) -> tuple[float, bool]:
        """One optimiser step over the global batch; returns (mean loss, whether it was applied)."""
        acc, tc = self.accelerator, self.cfg.train
        rank, world = acc.process_index, acc.num_processes
        self.method.progress = self.step / tc.max_steps  # the share of training done: curricula read it
        idx = StepIndices(len(self.data), tc.batch_size, tc.seed, rank, world)(self.step)
        gen = step_generator(tc.seed, self.step, rank)
        augment = self.cfg.data.hflip or self.cfg.data.fit == "random_crop"
        x0, y, noise = self.data.batch(idx, gen if augment else None)
        x0 = x0.to(acc.device)
        noise = None if noise is None else noise.to(acc.device)
        y = y.to(acc.device) if (y is not None and self.cfg.model.num_classes > 0) else None
        total = 0.0
        for i, micro in enumerate(torch.arange(len(idx)).chunk(tc.grad_accum)):
            sync = i == tc.grad_accum - 1
            if self.sharded:  # gradients reduce-scattered once, after the last micro-batch
                self.net.set_requires_gradient_sync(sync)
            # a prepared net autocasts in its forward; one genkit shards is not prepared
            with nullcontext() if sync or self.sharded else acc.no_sync(self.net), \
                    acc.autocast() if tc.fsdp else nullcontext():
                loss = self.method.loss(self.net, x0[micro], None if y is None else y[micro], gen,
                                        noise=None if noise is None else noise[micro])
                acc.backward(loss / tc.grad_accum)
            total += loss.item() / tc.grad_accum
        max_norm = tc.grad_clip if tc.grad_clip > 0 else float("inf")
        grad_norm = whole(acc.clip_grad_norm_(self.net.parameters(), max_norm))  # the norm over every shard
        ok = bool(torch.isfinite(grad_norm)) and math.isfinite(total)
        if ok:
            params = list(self.net.parameters())
            before = [p.detach().clone() for p in params]  # about 1 ms a step for the MNIST nets; shards when sharded
            self.optimizer.step()
            ok = bool(torch.stack([whole(p, local=True).isfinite().all() for p in params]).all())  # one device sync
            if self.sharded:  # each process saw its own shards: all undo, or none
                ok = all_ranks(ok, acc.device)
            if ok:
                self.ema.update(acc.unwrap_model(self.net))
            else:  # a finite gradient gave non-finite weights (a huge learning rate): undo the update
                with torch.no_grad():
                    for p, old in zip(params, before):
                        p.copy_(old)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return total, ok

    def should_stop(self, started: float, signalled: int | None) -> str | None:
        """Why every process stops after this step (a signal, `train.max_minutes`), or None; the
        processes agree, so that they save the same step."""
        minutes = self.cfg.train.max_minutes
        reasons = [float(signalled or 0), float(bool(minutes) and time.perf_counter() - started > 60 * minutes)]
        if self.accelerator.num_processes > 1:
            flags = self.accelerator.reduce(torch.tensor(reasons, device=self.accelerator.device), "max").tolist()
        else:
            flags = reasons
        if flags[0]:
            self.stop_signal = int(flags[0])
            return signal.Signals(self.stop_signal).name
        return "time" if flags[1] else None

    def fit(self) -> Path:
        """Train to `train.max_steps` (or until a signal or `train.max_minutes`); returns the final
        checkpoint. SIGINT and SIGTERM finish the current step and save (a second one stops at once);
        then `TrainingInterrupted` is raised."""
        try:
            with StopRequests() as stop:
                final = self._fit(stop)
        finally:
            self.lock.release()
        if self.stop_signal:
            raise TrainingInterrupted(self.stop_signal, self.step, final)
        return final

    def _fit(self, stop: "StopRequests") -> Path:
        acc, tc = self.accelerator, self.cfg.train
        self.stop_signal = 0
        resumed = self.resume()
        self.fit_started = time.perf_counter()
        if resumed is not None and acc.is_main_process:
            tqdm.write(f"genkit: resuming from {resumed} (step {self.step})")
        hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat_dict(self.cfg).items()}
        acc.init_trackers(self.out.name or "genkit", config=hparams)  # the run's name as the project
        main = acc.is_main_process
        rank, world = acc.process_index, acc.num_processes
        on_disk = self.data.data if isinstance(self.data, RandomCrops) else self.data
        if isinstance(on_disk, DiskImageData):
            on_disk.stream(StepIndices(len(self.data), tc.batch_size, tc.seed, rank, world), self.step,
                             tc.max_steps, self.cfg.data.workers)
            where = f"read from disk by {self.cfg.data.workers} worker(s)"
        else:
            where = "in memory"
        if main:
            tqdm.write(f"genkit: {self.cfg.model.name} with {self.num_params / 1e6:.2f}M parameters, "
                       f"{len(self.data)} images {where}, {acc.num_processes} process(es), output in {self.out}")
        bar = tqdm(total=tc.max_steps, initial=self.step, desc="train", disable=not main, dynamic_ncols=True)
        streak, window, started = 0, [], time.perf_counter()
        start_step = self.step
        last_saved = None
        try:
            while self.step < tc.max_steps:
                loss, ok = self.train_step()
                self.step += 1
                streak = 0 if ok else streak + 1
                self.bad_steps_total += 0 if ok else 1
                if ok:
                    window.append(loss)
                if streak >= tc.max_bad_steps:
                    raise TrainingDiverged(
                        f"{streak} consecutive steps had a non-finite loss, gradient or update (last at step "
                        f"{self.step}); stopping. The last good checkpoint is {last_saved or 'not written yet'}; "
                        f"try a lower train.lr or train.mixed_precision=no")
                bar.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                    mean = sum(window) / len(window) if window else float("nan")  # nan: no step applied
                    mean = acc.reduce(torch.tensor(mean, device=acc.device), "mean").item()
                    rate = (self.step - start_step) * tc.batch_size / (time.perf_counter() - started)
                    record = {"loss": mean if math.isfinite(mean) else None, "lr": self.scheduler.get_last_lr()[0],
                              "img_per_s": rate, "bad_steps": self.bad_steps_total}
                    if math.isfinite(mean):
                        record.update(self.method.log_terms(mean, math.prod(self.data.shape)))  # e.g. bits/dim
                    acc.log({k: v for k, v in record.items() if v is not None}, step=self.step)
                    if main:
                        with open(self.out / METRICS_FILE, "a") as metrics:
                            metrics.write(json.dumps({"step": self.step, **record}) + "\n")
                    shown = {"nats": f"{record['nats_per_image']:.2f}"} if "nats_per_image" in record else {}
                    bar.set_postfix(loss=f"{mean:.4f}", **shown, img_s=f"{rate:.0f}", bad=self.bad_steps_total)
                    window = []
                if tc.sample_every and self.step % tc.sample_every == 0 and self.step < tc.max_steps:
                    weights = self.ema.whole()  # every process: a collective where the net is sharded
                    if main:
                        self.sample_grid(weights)
                if tc.checkpoint_every and self.step % tc.checkpoint_every == 0 and self.step < tc.max_steps:
                    last_saved = self.save()
                reason = self.should_stop(started, stop.signum)
                if reason:
                    tqdm.write(f"genkit: {f'train.max_minutes={tc.max_minutes}' if reason == 'time' else reason} "
                               f"reached at step {self.step}; saving a checkpoint")
                    break
        finally:
            bar.close()
            if isinstance(on_disk, DiskImageData):
                on_disk.close()
        last_saved = self.save()
        weights = self.ema.whole()
        if main and not self.stop_signal:  # the run's end (its steps or train.max_minutes), not a signal
            self.fit_grid(last_saved, weights)
        if main and tc.sample_every and not self.stop_signal:
            self.sample_grid(weights)
        acc.end_training()
        return last_saved


def train(cfg: Config) -> Path:
    """Train a run described by `cfg`; returns its final checkpoint directory."""
    return Trainer(cfg).fit()
