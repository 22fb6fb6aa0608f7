"""Stopping a run cleanly: the first SIGINT or SIGTERM finishes the step and saves."""
from __future__ import annotations

import signal
import threading
from pathlib import Path

from tqdm.auto import tqdm


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM stopped the run after its current step, with a checkpoint saved."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; saved {checkpoint}; "
                         f"continue with train.resume=latest")


class StopRequests:
    """While active, the first SIGINT or SIGTERM is recorded (`signum`) for the loop to stop at the
    end of its step; a second one raises KeyboardInterrupt at once. Handlers are installed only in
    the main thread (elsewhere signals cannot be caught) and restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum, self.previous = None, {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._request) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _request(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        tqdm.write(f"genkit: {signal.Signals(signum).name}: finishing this step and saving (send it again to stop at once)")
