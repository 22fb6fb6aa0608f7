"""Inference: trained models (`models`) and the devices and precisions they run in (`devices`)."""
from genkit.inference.devices import PRECISIONS, half_dtype, hardware_precision, pick_device
from genkit.inference.models import (AutoencoderModel, AutoregressiveModel, GenerativeModel, Samples, TrainedModel,
                                     build_model)

__all__ = ["PRECISIONS", "AutoencoderModel", "AutoregressiveModel", "GenerativeModel", "Samples", "TrainedModel",
           "build_model", "half_dtype", "hardware_precision", "pick_device"]
