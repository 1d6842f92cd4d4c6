"""Generators: engines behind :class:`lmforge.generators.Generator` (``builtin``: lmforge's own
service; ``vllm``: vLLM, where it is installed)."""
