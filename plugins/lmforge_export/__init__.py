"""Export stages: write lmforge models in other ecosystems' formats (``hf``: transformers)."""
