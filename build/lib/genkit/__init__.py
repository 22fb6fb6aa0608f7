"""genkit: diffusion, score-SDE, rectified-flow and autoregressive generative models."""
from genkit.config import Config, load_config
from genkit.pipeline import AutoregressiveModel, GenerativeModel, Samples, load
from genkit.registry import ArgumentError, ConfigError

__version__ = "0.1.0"
__all__ = ["ArgumentError", "AutoregressiveModel", "Config", "ConfigError", "GenerativeModel", "Samples", "load",
           "load_config"]
