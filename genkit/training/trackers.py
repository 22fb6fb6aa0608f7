"""Experiment trackers (accelerate's): checked before a run starts, and what their loggers say."""
from __future__ import annotations

import importlib.util
import logging

from genkit.registry import ConfigError


# The packages each accelerate tracker needs (any one of them).
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
                    "comet_ml": ("comet_ml",), "aim": ("aim",), "clearml": ("clearml",), "dvclive": ("dvclive",)}


def check_tracker(name: str) -> None:
    """Refuse, before a run starts, a tracker whose package is not installed: accelerate would
    warn once and train the whole run without it."""
    packages = TRACKER_PACKAGES.get(name, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise ConfigError(f"train.report_to: {name} is not installed (pip install {packages[0]}); install it, or "
                          f"choose train.report_to=none or another tracker")


class Heard(logging.Handler):
    """Collect what a logger says at INFO and above while the block runs (the main process's, for
    accelerate's loggers)."""

    def __init__(self, name: str):
        super().__init__(logging.INFO)
        self.logger, self.messages = logging.getLogger(name), []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> "Heard":
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)
