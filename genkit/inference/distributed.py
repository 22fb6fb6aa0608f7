"""Drawing across the processes of one launch (`accelerate launch`, `torchrun`): process r of W draws
the r-th contiguous share of the samples and every process gathers them all. Sample i depends only
on (seed, i), so W processes draw the images one process draws (to float rounding where their
batches differ: `model.sample`'s batch-independence note)."""
from __future__ import annotations

import torch
import torch.distributed as dist
from accelerate import PartialState

from genkit.inference.devices import launched_on_cpus
from genkit.inference.models import Samples, TrainedModel


def launch() -> PartialState:
    """The launch this process belongs to (one process when nothing launched it)."""
    return PartialState(cpu=launched_on_cpus())


def sample_across_processes(model: TrainedModel, n: int, seed: int = 0, labels=None, **options) -> Samples:
    """`model.sample(n, seed, labels, **options)` drawn by every process of the launch together; each
    returns all n samples, in order."""
    state = launch()
    if state.num_processes == 1:
        return model.sample(n, seed=seed, labels=labels, **options)
    labels = model.labels_for(labels, n)  # [n] or None: the classes in turn count from sample 0, not each share's
    share = -(-n // state.num_processes)
    start, stop = min(n, state.process_index * share), min(n, (state.process_index + 1) * share)
    part = model.sample(stop - start, seed=seed, labels=None if labels is None else labels[start:stop],
                        start_index=start, **options) if stop > start else None
    parts = [None] * state.num_processes
    dist.all_gather_object(parts, part)
    drawn = [p for p in parts if p is not None]
    noise = None if drawn[0].noise is None else torch.cat([p.noise for p in drawn])
    return Samples(torch.cat([p.images for p in drawn]), noise, labels, max(p.nfe for p in drawn))
