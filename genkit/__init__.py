"""genkit: diffusion, score-SDE, rectified-flow and autoregressive generative models."""
from genkit.config import Config, ConfigError, load_config
from genkit.pipeline import AutoregressiveModel, GenerativeModel, load

__version__ = "0.1.0"
__all__ = ["AutoregressiveModel", "Config", "ConfigError", "GenerativeModel", "load", "load_config"]
