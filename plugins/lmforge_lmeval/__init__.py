"""lm-evaluation-harness interop: the ``lm-eval`` evaluator runs harness tasks on lmforge models
in-process (``pip install lmforge[lm-eval]``)."""
