"""lmforge's first-party tokenizer plugin: byte-level BPE trained with Hugging Face ``tokenizers``."""
