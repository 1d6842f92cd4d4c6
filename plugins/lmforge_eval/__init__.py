"""lmforge's first-party evaluation plugin: the ``evaluate/suite`` stage and its evaluators."""
