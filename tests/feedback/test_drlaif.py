"""Direct RLAIF: the `judge` reward as the reward of align/grpo (a real RL stage of the align
plugin, reached only through the spec): the rollout rewards are the judge's expected 1-9
ratings."""

from __future__ import annotations

import json

import pytest

from lmforge.testing import run_spec


@pytest.mark.slow
def test_grpo_with_a_judge_reward(env, tmp_path):
    if env.pm.components("stage:align") is None or not any(
            c.name == "grpo" for c in env.pm.components("stage:align")):
        pytest.skip("align/grpo is not installed")
    stages = env.fixtures(m=(env.model_dir, "model"), tok=(env.tok_dir, "tokenizer"),
                          prompts=(env.prompts_dir, "dataset/prompt"))
    stages.append({
        "id": "grpo", "kind": "align", "plugin": "grpo",
        "inputs": {"dataset": "prompts", "tokenizer": "tok", "init": "m", "reward_model": "m"},
        "config": {
            "reward": {"type": "judge", "mode": "score",
                       "judge": {"type": "model-prompted", "model_input": "reward_model"}},
            "rollout": {"prompts": 2, "samples_per_prompt": 2, "max_new_tokens": 6,
                        "batch_size": 4},
            "loop": {"iterations": 2, "micro_batch_size": 4, "checkpoint_every": 2,
                     "backend": {"type": "local", "device": "cpu", "precision": "fp32"}},
            "eval_prompts": 0}})
    run_spec({"name": "drlaif", "stages": stages}, env.pm, tmp_path / "run")
    records = [json.loads(line) for line in
               (tmp_path / "run" / "grpo" / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["rollout/reward"] for r in records if "rollout/reward" in r]
    assert rewards and all(1.0 <= r <= 9.0 for r in rewards), rewards
