"""Models that travel: exports for `genkit.load` and diffusers (`hub`), their model cards
(`model_card`), and the diffusers pipeline that runs them (`diffusers_pipeline`, imported from
there: it imports diffusers, which takes seconds that `import genkit` does not pay)."""
from genkit.export.hub import load_pretrained, push_to_hub, save_pretrained

__all__ = ["load_pretrained", "push_to_hub", "save_pretrained"]
