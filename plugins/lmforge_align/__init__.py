"""First-party alignment stages: direct preference optimisation (DPO) and its variants."""
