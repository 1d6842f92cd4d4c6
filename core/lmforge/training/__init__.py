"""Shared training services for stages that optimise a model (pre-training, SFT, DPO, reward
models, PPO). :mod:`lmforge.training.config` is light (pydantic only) so plugins put these models
in their stage configs; :mod:`lmforge.training.loop` imports torch and is used at run time.
"""

from lmforge.training.config import OptimConfig, TrainLoopConfig

__all__ = ["OptimConfig", "TrainLoopConfig"]
