"""First-party model architectures for lmforge (``dense``: a Llama-family decoder)."""
