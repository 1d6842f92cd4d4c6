"""Registration of the rating plugin (light: no heavy import)."""

from __future__ import annotations

from lmforge import Component, InputSlot, hookimpl, stage
from lmforge.commands import Command
from lmforge_rating.config import ArenaConfig, HumanPreferencesConfig
from lmforge_rating.rate_cli import EPILOG as RATE_EPILOG

ARENA_INPUTS = {
    "candidates": InputSlot(("model",), many=True, help="The models to compare, e.g. "
                            "[pretrain, sft, dpo]; the first is the anchor by default."),
    "tokenizer": InputSlot(("tokenizer",)),
    "prompts": InputSlot(("dataset/prompt", "dataset/chat"), help="Prompts: dataset/prompt, "
                         "or the conversations of a dataset/chat up to the first reply."),
    "judge": InputSlot(("model",), required=False, help="The judge model (for judges that "
                       "read their model from the 'judge' input)."),
    "judge_tokenizer": InputSlot(("tokenizer",), required=False,
                                 help="The judge model's tokenizer (default: 'tokenizer')."),
}


@hookimpl
def lmforge_components() -> list[Component]:
    return [
        Component(kind="source", name="human-preferences", config=HumanPreferencesConfig,
                  factory="lmforge_rating.source:HumanPreferencesSource",
                  description="Votes collected with `lmforge rate`, by majority, as preference "
                              "records"),
        stage("evaluate", "arena", config=ArenaConfig,
              factory="lmforge_rating.arena:ArenaStage",
              description="Compare several models pairwise (judge and/or human votes); "
                          "Bradley-Terry ratings on the Elo scale with bootstrap intervals",
              inputs=ARENA_INPUTS, outputs={"report": "report"}),
    ]


@hookimpl
def lmforge_commands() -> list[Command]:
    return [Command("rate", help="collect human preferences between two responses in a web "
                    "page", factory="lmforge_rating.rate_cli:setup",
                    description="Serve a small web page where raters compare two responses to "
                    "a prompt (A, B, tie or skip, with a note) from the mouse or the keyboard. "
                    "Answers are appended durably to a vote log; several raters can work at "
                    "once and everyone resumes where they stopped.",
                    epilog=RATE_EPILOG)]
