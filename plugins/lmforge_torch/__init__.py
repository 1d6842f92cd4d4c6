"""The ``local`` execution backend: one process on CPU, one GPU or Apple MPS."""
