"""Registration of the evaluation plugin (light: imported at discovery for every command)."""

from __future__ import annotations

from collections.abc import Sequence

from lmforge import Component, InputSlot, backend_ranks, hookimpl, stage
from lmforge_eval.config import (
    ChatLossConfig,
    ExactMatchEvalConfig,
    GenerateConfig,
    MultipleChoiceConfig,
    PassAtKConfig,
    PerplexityConfig,
    PreferenceConfig,
    SuiteConfig,
)

INPUTS = {
    "model": InputSlot(accepts=("model",), help="The model to evaluate."),
    "tokenizer": InputSlot(accepts=("tokenizer",), help="The tokenizer the model was trained with."),
    "baseline": InputSlot(accepts=("model",), required=False,
                          help="A model to compare with (e.g. the one before fine-tuning): every "
                               "evaluator except generate also runs on it, and the report shows "
                               "both and the change."),
    "text": InputSlot(accepts=("dataset/text",), required=False,
                      help="Documents for perplexity (held-out split; train split for the "
                           "unigram baseline)."),
    "chat": InputSlot(accepts=("dataset/chat",), required=False,
                      help="Conversations for chat-loss and generation prompts."),
    "preferences": InputSlot(accepts=("dataset/preference",), required=False,
                             help="Preference pairs for the preference evaluator."),
    "choices": InputSlot(accepts=("dataset/multiple-choice",), required=False,
                         help="Questions for the multiple-choice evaluator."),
    "prompts": InputSlot(accepts=("dataset/prompt",), required=False,
                         help="Problems for the pass-at-k and exact-match evaluators (prompt, "
                              "tests, entry_point, reference)."),
    "judge": InputSlot(accepts=("model",), required=False,
                       help="A judge model, for evaluators that classify with a judge "
                            "(e.g. safety with classifier: judge)."),
    "judge_tokenizer": InputSlot(accepts=("tokenizer",), required=False,
                                 help="The judge model's tokenizer (default: 'tokenizer')."),
}


def _evaluator(name: str, config: type, factory: str, description: str) -> Component:
    return Component(kind="evaluator", name=name, config=config,
                     factory=f"lmforge_eval.{factory}", description=description)


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        stage("evaluate", "suite", config=SuiteConfig, factory="lmforge_eval.suite:SuiteStage",
              description="Run evaluators on a model and write report.json and report.md",
              inputs=INPUTS, outputs={"report": "report"}, ranks=backend_ranks),
        _evaluator("perplexity", PerplexityConfig, "perplexity:Perplexity",
                   "Held-out perplexity, with a unigram baseline from the train split"),
        _evaluator("chat-loss", ChatLossConfig, "chat_loss:ChatLoss",
                   "Mean loss and perplexity on assistant tokens of held-out conversations"),
        _evaluator("preference", PreferenceConfig, "preference:Preference",
                   "Log-prob of chosen vs rejected replies: accuracy and margins"),
        _evaluator("multiple-choice", MultipleChoiceConfig, "multiple_choice:MultipleChoice",
                   "Log-likelihood multiple-choice accuracy (JSONL file or dataset)"),
        _evaluator("generate", GenerateConfig, "generate:Generate",
                   "Greedy and sampled generations for prompts, written into the report"),
        _evaluator("pass-at-k", PassAtKConfig, "pass_at_k:PassAtK",
                   "HumanEval-style pass@k: sampled code run against doctests in a sandbox"),
        _evaluator("exact-match", ExactMatchEvalConfig, "exact_match:ExactMatchEval",
                   "Accuracy of generated answers against references (extraction, "
                   "normalisation)"),
    ]
