"""The training loop on `accelerate.Accelerator`: generic over the method (its `loss`)."""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from genkit import checkpoint as ckpt
from genkit.config import Config, ConfigError, to_dict
from genkit.data import batch_indices, load_images, resolve_data_path
from genkit.ema import EMA
from genkit.methods import build_method
from genkit.nets import build_net
from genkit.reflow import is_pairs_dir, load_pairs


METRICS_FILE = "metrics.jsonl"  # one JSON line per log step, for `genkit plot-loss`


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


def warmup_cosine(warmup: int, total: int):
    """LR multiplier: linear warm-up over `warmup` steps, then a cosine decay to zero at `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """Noise for one optimiser step on one process: a pure function of (seed, step, rank)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1009 + rank)


class Trainer:
    """Trains `cfg`'s net with `cfg`'s method; checkpoints, EMA, logs and sample grids."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        tc = cfg.train
        self.out = Path(cfg.output_dir)
        # Without CUDA, accelerate sets up gloo for several processes only when told it is on CPU.
        multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accelerator = Accelerator(
            cpu=multi_cpu or None,
            mixed_precision=tc.mixed_precision,
            log_with="tensorboard",
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "logs")),
        )
        world = self.accelerator.num_processes
        if self.accelerator.device.type == "cpu":
            # `accelerate launch` defaults to one thread per process, which halves CPU throughput
            local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            torch.set_num_threads(tc.cpu_threads or max(1, (os.cpu_count() or 1) // local))
        if tc.batch_size % (world * tc.grad_accum):
            raise ConfigError(f"train.batch_size: {tc.batch_size} is not divisible by processes x "
                              f"train.grad_accum = {world} x {tc.grad_accum}")
        self.resume_from = self._find_resume()
        set_seed(tc.seed)  # same initial weights on every process
        self.data = self._load_data()
        if self.data.images.shape[1] != cfg.data.channels:
            raise ConfigError(f"data.channels: the model takes {cfg.data.channels} channels, "
                              f"the data has {self.data.images.shape[1]}")
        self.method = build_method(cfg)
        net = build_net(cfg)
        if getattr(net, "channels_last", False):  # faster convolutions on CPU for nets that say so
            net = net.to(memory_format=torch.channels_last)
        if tc.init_from:
            self._init_weights(net, tc.init_from)
        self.num_params = sum(p.numel() for p in net.parameters())
        if tc.compile:
            net.compile()  # in place: parameter names, hence checkpoints, stay as they are
        optimizer = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(tc.warmup_steps, tc.max_steps))
        self.net, self.optimizer = self.accelerator.prepare(net, optimizer)
        self.ema = EMA(self.accelerator.unwrap_model(self.net), tc.ema_decay)
        self.accelerator.register_for_checkpointing(self.scheduler, self.ema)
        self.step, self.bad_steps_total = 0, 0

    @staticmethod
    def _init_weights(net: torch.nn.Module, source: str) -> None:
        """Start from another run's EMA weights (the nets must have the same shape)."""
        from safetensors.torch import load_file

        try:
            net.load_state_dict(load_file(str(ckpt.resolve_checkpoint(source) / ckpt.EMA_FILE)))
        except ConfigError as err:
            raise ConfigError(f"train.init_from: {str(err).split(': ', 1)[-1]}") from None
        except RuntimeError as err:
            raise ConfigError(f"train.init_from: the weights in {source} do not fit this run's net "
                              f"({str(err).splitlines()[0]})") from None

    def _load_data(self):
        """Images, or (noise, sample) pairs from `genkit reflow` when data.path holds them."""
        path = resolve_data_path(self.cfg.data.path)
        if is_pairs_dir(path):
            if self.cfg.method.name != "flow":
                raise ConfigError(f"data.path: {path} holds reflow pairs, which train method.name=flow only")
            return load_pairs(path)
        return load_images(self.cfg.data, progress=self.accelerator.is_main_process)

    # ------------------------------------------------------------------ checkpoints

    def _find_resume(self) -> Path | None:
        resume = self.cfg.train.resume
        if not resume:
            return None
        if resume == "latest":
            found = ckpt.list_checkpoints(self.out)
            return found[-1] if found else None  # nothing yet: start fresh
        path = Path(resume)
        if not (path / ckpt.STATE_FILE).is_file():
            raise ConfigError(f"train.resume: {resume} is not a checkpoint directory (use 'latest' or a step-* path)")
        return path

    def save(self) -> Path:
        """Write a complete checkpoint atomically; every process takes part."""
        acc = self.accelerator
        final = ckpt.checkpoint_dir(self.out, self.step)
        tmp = final.parent / f".tmp-{final.name}"
        if acc.is_main_process and tmp.exists():  # left by a run killed while saving
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()  # every rank's RNG state is in tmp before it is published
        if acc.is_main_process:
            state = {"step": self.step, "bad_steps_total": self.bad_steps_total}
            net_state = acc.unwrap_model(self.net).state_dict()
            ckpt.write_export(tmp, self.cfg, net_state, self.ema.shadow, state)
            ckpt.publish(tmp, final, self.cfg.train.checkpoints_keep)
        acc.wait_for_everyone()
        return final

    def load(self, path: Path) -> None:
        self.accelerator.load_state(str(path))
        state = ckpt.read_trainer_state(path)
        self.step, self.bad_steps_total = state["step"], state["bad_steps_total"]

    # ------------------------------------------------------------------ samples

    def sample_grid(self) -> Path:
        """An 8x8 grid from the EMA weights with the config's sampler, fixed seed."""
        from genkit.images import save_grid
        from genkit.pipeline import build_model

        net = build_net(self.cfg)
        net.load_state_dict(self.ema.shadow)
        images = build_model(self.cfg, net.eval()).sample(64, seed=0, progress=False).images
        return save_grid(images, self.out / "samples" / f"step-{self.step:06d}.png", nrow=8)

    # ------------------------------------------------------------------ loop

    def train_step(self) -> tuple[float, bool]:
        """One optimiser step over the global batch; returns (mean loss, whether it was applied)."""
        acc, tc = self.accelerator, self.cfg.train
        rank, world = acc.process_index, acc.num_processes
        idx = batch_indices(len(self.data), tc.batch_size, tc.seed, self.step)[rank::world]
        gen = step_generator(tc.seed, self.step, rank)
        x0, y, noise = self.data.batch(idx, gen if self.cfg.data.hflip else None)
        x0 = x0.to(acc.device)
        noise = None if noise is None else noise.to(acc.device)
        y = y.to(acc.device) if (y is not None and self.cfg.model.num_classes > 0) else None
        total = 0.0
        for i, micro in enumerate(torch.arange(len(idx)).chunk(tc.grad_accum)):
            sync = i == tc.grad_accum - 1
            with nullcontext() if sync else acc.no_sync(self.net):
                loss = self.method.loss(self.net, x0[micro], None if y is None else y[micro], gen,
                                        noise=None if noise is None else noise[micro])
                acc.backward(loss / tc.grad_accum)
            total += loss.item() / tc.grad_accum
        max_norm = tc.grad_clip if tc.grad_clip > 0 else float("inf")
        grad_norm = acc.clip_grad_norm_(self.net.parameters(), max_norm)
        ok = bool(torch.isfinite(grad_norm)) and math.isfinite(total)
        if ok:
            self.optimizer.step()
            self.ema.update(acc.unwrap_model(self.net))
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return total, ok

    def out_of_time(self, started: float) -> bool:
        """Whether any process has used up `train.max_minutes` (all processes agree)."""
        over = time.perf_counter() - started > 60 * self.cfg.train.max_minutes
        flag = torch.tensor(float(over), device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, "max").item())

    def fit(self) -> Path:
        acc, tc = self.accelerator, self.cfg.train
        if self.resume_from is not None:
            self.load(self.resume_from)
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
        acc.init_trackers("train", config=_flat(to_dict(self.cfg)))
        main = acc.is_main_process
        if main:
            tqdm.write(f"genkit: {self.cfg.model.name} with {self.num_params / 1e6:.2f}M parameters, "
                       f"{len(self.data)} images, {acc.num_processes} process(es), output in {self.out}")
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
                        f"{streak} consecutive steps had a non-finite loss or gradient (last at step {self.step}); "
                        f"stopping. The last good checkpoint is {last_saved or 'not written yet'}; "
                        f"try a lower train.lr or train.mixed_precision=no")
                bar.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                    mean = sum(window) / max(1, len(window))
                    mean = acc.reduce(torch.tensor(mean, device=acc.device), "mean").item()
                    rate = (self.step - start_step) * tc.batch_size / (time.perf_counter() - started)
                    record = {"loss": mean, "lr": self.scheduler.get_last_lr()[0], "img_per_s": rate,
                              "bad_steps": self.bad_steps_total}
                    record.update(self.method.log_terms(mean, self.data.images[0].numel()))  # e.g. bits/dim
                    acc.log(record, step=self.step)
                    if main:
                        with open(self.out / METRICS_FILE, "a") as log:
                            log.write(json.dumps({"step": self.step, **record}) + "\n")
                    shown = {"nats": f"{record['nats_per_image']:.2f}"} if "nats_per_image" in record else {}
                    bar.set_postfix(loss=f"{mean:.4f}", **shown, img_s=f"{rate:.0f}", bad=self.bad_steps_total)
                    window = []
                if main and tc.sample_every and self.step % tc.sample_every == 0 and self.step < tc.max_steps:
                    self.sample_grid()
                if tc.checkpoint_every and self.step % tc.checkpoint_every == 0 and self.step < tc.max_steps:
                    last_saved = self.save()
                if tc.max_minutes and self.out_of_time(started):
                    tqdm.write(f"genkit: train.max_minutes={tc.max_minutes} reached at step {self.step}")
                    break
        finally:
            bar.close()
        last_saved = self.save()
        if main and tc.sample_every:
            self.sample_grid()
        acc.end_training()
        return last_saved


def train(cfg: Config) -> Path:
    """Train a run described by `cfg`; returns its final checkpoint directory."""
    return Trainer(cfg).fit()
