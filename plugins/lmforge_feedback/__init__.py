"""lmforge_feedback: judges, Constitutional AI and RLAIF data stages, the judge reward and the
safety evaluator (see docs/plugins/feedback.md)."""
