"""Training: the loop (`trainer`), its learning-rate schedules and precision (`schedules`), the run
directory it owns (`run_dir`), EMA weights (`ema`), clean stops on a signal (`signals`), trackers
(`trackers`) and what a full disk says (`disk`)."""
from genkit.training.disk import CheckpointNotWritten
from genkit.training.schedules import lr_schedule, mixed_precision, warmup_cosine
from genkit.training.signals import TrainingInterrupted
from genkit.training.trainer import Trainer, TrainingDiverged, train

__all__ = ["CheckpointNotWritten", "Trainer", "TrainingDiverged", "TrainingInterrupted", "lr_schedule",
           "mixed_precision", "train", "warmup_cosine"]
