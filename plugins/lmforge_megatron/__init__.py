"""lmforge's Megatron-Core backend (``backend: {type: megatron}``); see docs/plugins/megatron.md."""
