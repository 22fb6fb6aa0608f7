"""genkit: diffusion, score-SDE, rectified-flow, latent and autoregressive generative models."""
from genkit.config import Config, load_config
from genkit.export import push_to_hub, save_pretrained
from genkit.inference import AutoencoderModel, AutoregressiveModel, GenerativeModel, Samples
from genkit.loading import from_diffusers, load
from genkit.registry import ArgumentError, ConfigError

__version__ = "0.1.0"
__all__ = ["ArgumentError", "AutoencoderModel", "AutoregressiveModel", "Config", "ConfigError", "GenerativeModel",
           "Samples", "from_diffusers", "load", "load_config", "push_to_hub", "save_pretrained"]
