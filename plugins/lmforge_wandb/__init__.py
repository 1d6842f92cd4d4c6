"""lmforge-wandb: log lmforge runs to Weights & Biases (first-party tracker plugin).

Select it in a spec with ``trackers: [{type: wandb, project: my-project}]``. See
``docs/plugins/wandb.md``. Importing this package does not import ``wandb``.
"""
