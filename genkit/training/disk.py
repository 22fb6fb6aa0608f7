"""What a full or lost disk raises while a checkpoint is written, said in a few words."""
from __future__ import annotations

from safetensors import SafetensorError

from genkit.arguments import reason


class CheckpointNotWritten(RuntimeError):
    """The disk refused a checkpoint; the published ones are intact."""


# What a write to a full or lost disk raises: the OS's error from Python, safetensors' own error
# (the weights and accelerate's model state), torch.save's RuntimeError (optimizer, RNG states).
WRITE_ERRORS = (OSError, SafetensorError, RuntimeError)


def write_error(err: BaseException) -> str:
    """The cause of a failed write in a few words: 'No space left on device', not a Rust debug dump."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = str(err)
    for errno_, words in ((28, "No space left on device"), (122, "Disk quota exceeded"), (5, "Input/output error")):
        if f"code: {errno_}," in text or words in text:
            return words
    return reason(err)
