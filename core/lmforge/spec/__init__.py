"""The pipeline spec: safe YAML loading with locations, model assembly, validation."""

from lmforge.spec.source import Located, apply_overrides, load_spec_file, load_yaml
from lmforge.spec.validate import (
           StagePlan,
           ValidatedPipeline,
           load_and_validate,
           validate,
)

__all__ = ["Located", "StagePlan", "ValidatedPipeline", "apply_overrides", "load_and_validate",
           "load_spec_file", "load_yaml", "validate"]
