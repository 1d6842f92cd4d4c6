"""The ``reward-model`` reward: a trained score-head model's score of prompt + completion.

The model is a ``model`` artifact with ``head: score`` (what ``train/reward-model`` writes),
wired as a stage input (``reward_model`` by default, ``config.input``), with its tokenizer
(``config.tokenizer_input``). A sample is encoded exactly as the reward-model stage encodes a
reply (:func:`lmforge.chat.encode_reply`: chat-templated prompt, then completion + end-of-turn)
and its reward is the score at that last token. Sequences longer than ``max_length`` keep their
end. Scoring is batched (``batch_size``), right-padded, under ``torch.inference_mode``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmforge import StageInputError
from lmforge.rewards import Reward, RewardOutput, RewardSample


class RewardModelReward(Reward):
    """Config: :class:`lmforge_rewards.config.RewardModelConfig`."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.model: Any = None
        self.tok: Any = None
        self.device: Any = None
        self.max_length = 0

    def requires(self) -> dict[str, str]:
        return {self.config.input: "model", self.config.tokenizer_input: "tokenizer"}

    def check(self, inputs: Mapping[str, Any]) -> None:
        from lmforge.modelio import read_model_json

        art = inputs.get(self.config.input)
        if art is None:
            return
        arch = read_model_json(art.path).get("architecture", {})
        if arch.get("head", "lm") != "score":
            raise StageInputError(
                f"reward 'reward-model': input {self.config.input!r} ({art.path}) is a language "
                f"model (head: {arch.get('head', 'lm')}), not a reward model; wire the output "
                f"of a train/reward-model stage")

    def setup(self, stage: Any, device: Any) -> None:
        self.check(stage.inputs)
        self.load(stage.input(self.config.input).path,
                  stage.input(self.config.tokenizer_input).path, stage.plugins, device)

    def load(self, model_dir: Path, tokenizer_dir: Path, plugins: Any, device: Any) -> None:
        """Load the reward model and tokenizer from artifact folders (what :meth:`setup`
        does with the stage's inputs)."""
        import torch

        from lmforge.chat import load_tokenizer
        from lmforge.modelio import load_model

        dtype = torch.bfloat16 if self.config.precision == "bf16" else None
        self.model = load_model(Path(model_dir), plugins, device=device, dtype=dtype).eval()
        if getattr(self.model, "score", None) is None:
            raise StageInputError(f"reward 'reward-model': {model_dir} has no score head")
        self.tok = load_tokenizer(Path(tokenizer_dir))
        self.device = device
        self.max_length = min(self.config.max_length or self.model.max_seq_len,
                              self.model.max_seq_len)

    def encode(self, sample: RewardSample) -> list[int]:
        from lmforge.chat import encode_reply

        prompt, reply = encode_reply(self.tok.tokenizer, list(sample.prompt), sample.completion)
        return (prompt + reply)[-self.max_length:]

    def score(self, samples: Sequence[RewardSample]) -> RewardOutput:
        import torch

        if self.model is None:
            raise RuntimeError("reward-model: setup() was not called (it loads the model)")
        seqs = [self.encode(s) for s in samples]
        scores: list[float] = []
        bs = self.config.batch_size
        with torch.inference_mode():
            for start in range(0, len(seqs), bs):
                chunk = seqs[start:start + bs]
                width = max(map(len, chunk))
                ids = torch.full((len(chunk), width), self.tok.pad_id, dtype=torch.long)
                for i, s in enumerate(chunk):
                    ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
                last = torch.tensor([len(s) - 1 for s in chunk])
                out = self.model(ids.to(self.device)).scores  # [B, W], causal: padding unseen
                scores.extend(out.float().cpu().gather(1, last[:, None]).squeeze(1).tolist())
        return RewardOutput(scores, [{"tokens": len(s)} for s in seqs])

    def close(self) -> None:
        self.model = None
