"""PNG plots of training logs and benchmark results (matplotlib, no display needed)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from genkit.files import atomic_path
from genkit.images import image_format
from genkit.registry import ArgumentError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path) -> Path:
    out, fmt = Path(out), image_format(out).lower()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format=fmt)
    _pyplot().close(fig)
    return out


def read_metrics(run_dir: str | Path) -> list[dict]:
    """A run's logged records, one per step (a resumed run's later record for a step wins). Lines
    that are not records (cut short by a killed run, or damaged) are skipped with one warning."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ArgumentError("runs", f"{run_dir} has no metrics.jsonl (is it a training output directory?)")
    by_step, skipped = {}, 0
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int) and not isinstance(record["step"], bool):
            by_step[record["step"]] = record
        elif line.strip():
            skipped += 1
    if skipped:
        logging.getLogger("genkit").warning(f"{path}: skipped {skipped} line(s) that are not records")
    if not by_step:
        raise ArgumentError("runs", f"{path} holds no records yet")
    return [by_step[s] for s in sorted(by_step)]


def plot_loss(run_dirs: list[str | Path], out: str | Path, log_scale: bool = True) -> Path:
    """Loss against step for one or more runs, on one set of axes."""
    runs = [(Path(run).name, [r for r in read_metrics(run)  # a loss of None: no step applied
                              if isinstance(r.get("loss"), (int, float)) and not isinstance(r["loss"], bool)])
            for run in run_dirs]  # every run read before a figure is opened
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, records in runs:
        ax.plot([r["step"] for r in records], [r["loss"] for r in records], label=name)
    ax.set(xlabel="step", ylabel="training loss", yscale="log" if log_scale else "linear")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out)


def plot_quality(rows: list[dict], out: str | Path, floor: float | None = None, title: str = "",
                 features: str = "MNIST classifier") -> Path:
    """FID against NFE, one line per (library, recipe), log-log; `floor` as a dashed line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        series.setdefault(f"{row['library']}: {row['recipe']}", []).append((row["nfe"], row["fid"]))
    for name, points in series.items():
        points.sort()
        ax.plot(*zip(*points), marker="o", label=name)
    if floor is not None:
        ax.axhline(floor, color="grey", linestyle="--", label="real-data floor")
    ax.set(xlabel="network evaluations per sample (NFE)", ylabel=f"FID ({features} features)",
           xscale="log", yscale="log", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, out)
