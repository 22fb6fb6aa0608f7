"""Where exports written before genkit 0.1's `genkit.export` package look for their pipeline (their
`pipeline.py` imports it from here): `genkit.export.diffusers_pipeline`."""
from genkit.export.diffusers_pipeline import GenkitNet, GenkitPipeline

__all__ = ["GenkitNet", "GenkitPipeline"]
