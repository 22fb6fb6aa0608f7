"""A run owns its output directory: one run at a time (a lock file), no silent overwrite of an
earlier run, and a resume that continues the run it claims to continue (config differences are
refused unless allowed)."""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from genkit.config import Config, ConfigError, flat_dict

LOCK_FILE = ".lock"
RUN_FILES = ("checkpoints", "metrics.jsonl", "samples", "logs", "abandoned")  # what a run writes into output_dir
# Keys a resumed run may change: they set how long it runs and how it reports, not its trajectory.
MAY_CHANGE = ("output_dir", "train.max_steps", "train.max_minutes", "train.checkpoint_every", "train.sample_every",
              "train.checkpoints_keep", "train.log_every", "train.report_to", "train.resume", "train.cpu_threads",
              "train.max_bad_steps", "train.overwrite", "train.allow_config_changes", "train.compile", "sample.")


class RunLock:
    """`output_dir/.lock` holding the owner's pid, host and process start time, created
    exclusively. A lock whose process has died on this host, or whose pid now belongs to another
    process (started at another time), is stale and taken over."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK_FILE
        self.held = False

    def acquire(self) -> None:
        directory = self.path.parent
        if directory.exists() and not directory.is_dir():
            raise ConfigError(f"output_dir: {directory} is a file, not a directory")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"output_dir: cannot create {directory} ({err.strerror})") from None
        if not os.access(directory, os.W_OK):
            raise ConfigError(f"output_dir: {directory} is not writable")
        me = (os.getpid(), socket.gethostname(), _started(os.getpid()))
        for _ in range(3):  # a stale lock is removed and the exclusive create tried again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None or not self._alive(*owner) or owner[:2] == me[:2]:
                    self.path.unlink(missing_ok=True)
                    continue
                raise ConfigError(f"output_dir: {directory} is in use by another run (process {owner[0]} on "
                                  f"{owner[1]}); wait for it to finish or choose another output_dir (if no genkit "
                                  f"run uses it, delete {self.path})") from None
            with os.fdopen(fd, "w") as handle:
                handle.write(" ".join(map(str, me)) + "\n")
            self.held = True
            return
        raise ConfigError(f"output_dir: cannot take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def _owner(self) -> tuple[int, str, str] | None:
        try:
            pid, host, *started = self.path.read_text().split()
            return int(pid), host, started[0] if started else ""
        except (OSError, ValueError, UnicodeDecodeError):
            return None  # unreadable or half-written: treated as stale

    @staticmethod
    def _alive(pid: int, host: str, started: str = "") -> bool:
        if host != socket.gethostname():
            return True  # another machine's process cannot be checked: assume it runs
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, OverflowError):
            return False
        except PermissionError:
            pass
        now = _started(pid)
        return not (started and now and started != now)  # the pid reused by a later process: stale


def _started(pid: int) -> str:
    """When process `pid` started (clock ticks since boot, from /proc), or "" where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name before it may hold spaces
    except (OSError, IndexError):
        return ""


def claim(cfg: Config, resuming: bool) -> None:
    """Refuse to train into a directory that holds another run, unless resuming it or told to
    overwrite (then the earlier run's files are removed first)."""
    out = Path(cfg.output_dir)
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not found or resuming:
        return
    if not cfg.train.overwrite:
        raise ConfigError(f"output_dir: {out} already holds a run ({', '.join(found)}); continue it with "
                          f"train.resume=latest, replace it with train.overwrite=true, or choose another output_dir")
    for name in found:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        else:
            (out / name).unlink()


def config_changes(saved: Config, cfg: Config) -> list[str]:
    """'key: old -> new' for every key that differs between a checkpoint's config and this run's,
    except those a resumed run may change (`MAY_CHANGE`)."""
    old, new = flat_dict(saved), flat_dict(cfg)
    changed = []
    for key in sorted(set(old) & set(new)):
        if old[key] != new[key] and not any(key == k or (k.endswith(".") and key.startswith(k)) for k in MAY_CHANGE):
            changed.append(f"{key}: {old[key]} -> {new[key]}")
    return changed
