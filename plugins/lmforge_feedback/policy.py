"""The policy model of a feedback stage: built by the stage's backend, answering conversations
through :func:`lmforge.generation.generate` (batched, KV cache, stop at ``<|end|>``/EOS)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmforge.chat import END, encode_chat


class Policy:
    """``model`` and ``tokenizer`` stage inputs, built by ``backend_config``'s backend."""

    def __init__(self, stage: Any, backend_config: Any, model_input: str = "model",
                 tokenizer_input: str = "tokenizer") -> None:
        from lmforge.chat import load_tokenizer
        from lmforge.modelio import ModelRecipe

        self.backend = stage.build("backend", backend_config)
        self.device = self.backend.device
        self.tokenizer = load_tokenizer(stage.input(tokenizer_input).path)
        recipe = ModelRecipe.from_artifact(stage.input(model_input).path, stage.plugins)
        self.model = self.backend.build_model(recipe)
        self.model.eval()
        self.max_len = int(recipe.architecture.max_seq_len)
        self.stop = tuple(t for t in (self.tokenizer.eos_id,
                                      self.tokenizer.tokenizer.token_to_id(END)) if t is not None)

    def prompt_ids(self, messages: Sequence[Mapping[str, str]], max_new_tokens: int
                   ) -> list[int]:
        """The conversation plus the generation prompt, cut from the left so that
        ``max_new_tokens`` still fit (keeping at least half the context for the prompt)."""
        ids = encode_chat(self.tokenizer.tokenizer, list(messages), add_generation_prompt=True)[0]
        room = max(self.max_len - max_new_tokens, self.max_len // 2)
        return ids[-room:]

    def reply(self, conversations: Sequence[Sequence[Mapping[str, str]]], gen: Any, seed: int,
              n: int = 1) -> list[list[str]]:
        """``n`` replies per conversation (texts without the stop token)."""
        import torch

        from lmforge.generation import SamplingParams, generate

        params = SamplingParams(max_new_tokens=gen.max_new_tokens, temperature=gen.temperature,
                                top_k=gen.top_k, top_p=gen.top_p, n=n, stop_ids=self.stop,
                                seed=seed)
        prompts = [self.prompt_ids(c, gen.max_new_tokens) for c in conversations]
        with torch.inference_mode(), self.backend.autocast():
            done = generate(self.model, prompts, params, pad_id=self.tokenizer.pad_id,
                            device=self.device, batch_size=gen.batch_size,
                            max_len=self.max_len)
        out: list[list[str]] = [[] for _ in conversations]
        for c in done:
            out[c.prompt_index].append(self.tokenizer.decode(c.token_ids))
        return out

    def close(self) -> None:
        self.backend.close()
