"""The model card (README.md) of an exported genkit model: what it is, how it was trained, how
well it samples beside real data, and how to load it."""
from __future__ import annotations

import yaml

from genkit.arguments import shorten
from genkit.config import to_dict
from genkit.registry import ArgumentError


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} seconds"
    return f"{seconds / 60:.1f} minutes" if seconds < 7200 else f"{seconds / 3600:.1f} hours"


def check_report(report) -> dict:
    """`report` if it is a `genkit eval` report a card can show: a `metrics` mapping of names to
    numbers (null where JSON had no word for a value) and, optionally, a `real_data_floor` mapping
    of the same kind; else `ArgumentError` named `metrics`."""
    if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict):
        raise ArgumentError("metrics", "not a report of genkit eval (no 'metrics' mapping)")
    for part in ("metrics", "real_data_floor"):
        values = report.get(part)
        if values is None and part == "real_data_floor":
            continue
        if not isinstance(values, dict):
            raise ArgumentError("metrics", f"'{part}' is {shorten(values)}, not a mapping of names to numbers")
        for key, value in values.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ArgumentError("metrics", f"'{part}.{key}' is {shorten(value)}, not a number")
    return report


def _number(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _metrics_table(report: dict) -> str:
    """A `genkit eval` report (`check_report`) as a table: each metric beside the same metric on
    real data."""
    scores, floor = report["metrics"], report.get("real_data_floor") or {}
    shown = ("num", "sampler", "steps", "nfe", "guidance", "guidance_interval", "seed")
    how = ", ".join(f"{k.replace('_', ' ')} {report[k]}" for k in shown if k in report)
    rows = "\n".join(f"| {key} | {_number(value)} | {_number(floor.get(key))} |" for key, value in scores.items())
    return (f"Scored by `genkit eval` ({how}) in the feature space of genkit's MNIST classifier; the real-data "
            f"column is the same metric for as many real training images (the floor).\n\n"
            f"| metric | model | real data |\n|---|---|---|\n{rows}\n")


def model_card(model, card: dict, grid: int, name: str) -> str:
    """Markdown with the Hub's metadata header, for `model` with `card` = {training, metrics},
    loaded in its examples as `name` (a Hub id or a directory)."""
    cfg = model.cfg
    params = sum(p.numel() for p in model.net.parameters())
    conditional = f"class-conditional ({cfg.model.num_classes} classes)" if cfg.model.num_classes else "unconditional"
    header = {"library_name": "genkit", "pipeline_tag": "unconditional-image-generation",
              "tags": ["genkit", cfg.method.name, cfg.model.name, "diffusers"]}
    training = card.get("training") or {}
    trained = [f"- net: {cfg.model.name}, {params / 1e6:.2f}M parameters; method: {cfg.method.name}",
               f"- data: {cfg.data.path} at {cfg.data.image_size}x{cfg.data.image_size}, {cfg.data.channels} channel(s)",
               f"- batch size {cfg.train.batch_size}, learning rate {cfg.train.lr}, EMA decay {cfg.train.ema_decay}"]
    if "step" in training:
        trained.append(f"- {training['step']} training steps" +
                       (f" in {_duration(training['train_seconds'])}" if training.get("train_seconds") else ""))
    samples = (f"![samples](samples.png)\n\n{grid} samples, seed 0, the model's default sampler "
               f"(`{cfg.sample.sampler}`, {cfg.sample.steps} steps).\n" if grid else "")
    metrics = _metrics_table(card["metrics"]) if card.get("metrics") else \
        "Not evaluated: `genkit eval --checkpoint DIR` writes a report; `genkit export --metrics REPORT` adds it here.\n"
    labels = "class_labels=[0, 1, 2, 3], " if cfg.model.num_classes else "batch_size=4, "
    return f"""---
{yaml.safe_dump(header, sort_keys=False).strip()}
---

# {cfg.method.name} / {cfg.model.name}, {conditional}

A {conditional} generative model trained with genkit.

## Training

{chr(10).join(trained)}

## Samples

{samples or 'No sample grid was drawn for this export.'}

## Metrics

{metrics}
## Use

```python
import genkit

model = genkit.load("{name}")
images = model.sample(16, seed=0).pil()
```

With diffusers:

```python
from genkit.export.diffusers_pipeline import GenkitPipeline

pipe = GenkitPipeline.from_pretrained("{name}")
images = pipe({labels}num_inference_steps=10).images
```

## Config

```yaml
{yaml.safe_dump(to_dict(cfg), sort_keys=False).strip()}
```
"""
