"""Models that travel: exports for `genkit.load` and diffusers (`hub`), their model cards
(`model_card`), and the diffusers pipeline that runs them (`diffusers_pipeline`)."""
from genkit.export.diffusers_pipeline import GenkitNet, GenkitPipeline
from genkit.export.hub import load_pretrained, push_to_hub, save_pretrained

__all__ = ["GenkitNet", "GenkitPipeline", "load_pretrained", "push_to_hub", "save_pretrained"]
