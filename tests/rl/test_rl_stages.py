"""The RL stages end to end on a tiny model: they run, learn a simple reward, log what they
claim, refuse bad wiring, and a run killed (as SIGKILL) in the middle of an iteration resumes
from its last checkpoint to byte-identical artifacts and the same metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import rl_helpers as H
import yaml

from lmforge.errors import SpecError, StageFailed
from lmforge.testing import run_spec, validate_spec

HERE = Path(__file__).parent


def _cli(k: int, spec: dict[str, Any], run: Path) -> subprocess.CompletedProcess:
    path = run.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(HERE / "rl_kill_driver.py"), str(k), "--",
                           "-p", "rl_fakes", "run", str(path), "--run-dir", str(run), "-q"],
                          env=env, capture_output=True, text=True, timeout=600)


def _records(stage_dir: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time"} for r in H.metrics(stage_dir)]


def _outputs(stage_dir: Path) -> dict[str, bytes]:
    out = stage_dir / "outputs" / "model"
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.is_file() and p.name != "artifact.json"}


CASES = {
    # GRPO with a KL loss term: one optimizer step per iteration; the 3rd starts after the
    # iteration-2 checkpoint
    "grpo": ({"kl_coef": 0.05}, 3),
    # PPO, 2 epochs x 2 minibatches: 8 steps per iteration (policy and value alternate);
    # step 22 is the value model's step in the middle of iteration 3, after the policy's
    "ppo": ({"rollout": H.rollout(samples_per_prompt=2), "reward_norm": "running",
             "kl_target": 0.5, "kl_horizon": 100,
             "loop": H.loop(epochs=2, minibatches=2, micro_batch_size=4)}, 22),
}


@pytest.mark.slow
@pytest.mark.parametrize("plugin", sorted(CASES))
def test_sigkill_inside_an_iteration_resumes_to_identical_artifacts(rl_assets, tmp_path, plugin):
    extra, kill_at = CASES[plugin]
    cfg = {"reward": {"type": "letter-share"}, "rollout": H.rollout(),
           "loop": H.loop(iterations=3), "eval_prompts": 4, **extra}
    if "loop" in extra:
        cfg["loop"] = {**extra["loop"], "iterations": 3}
    spec = H.rl_spec(rl_assets, plugin, cfg)
    straight = _cli(0, spec, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = _cli(kill_at, spec, tmp_path / "resumed")
    assert killed.returncode == 137, killed.stderr[-3000:]
    stage = tmp_path / "resumed" / "rl"
    assert sorted(p.name for p in (stage / "checkpoints").iterdir()) == ["step-00000002"]
    again = _cli(0, spec, tmp_path / "resumed")
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed"] is True
    ref = tmp_path / "straight" / "rl"
    assert _records(stage) == _records(ref)
    assert _outputs(stage) == _outputs(ref)
    steps = [r["step"] for r in _records(stage) if "rollout/reward" in r]
    assert steps == [1, 2, 3]


@pytest.mark.slow
def test_grpo_learns_the_reward_and_logs_what_it_claims(rl_assets, tmp_path):
    cfg = {"reward": {"type": "letter-share", "letter": "e"}, "rollout": H.rollout(),
           "loop": H.loop(iterations=8, checkpoint_every=8), "eval_prompts": 8,
           "kl_coef": 0.02,
           "eval_rewards": [{"name": "len-20", "reward": {"type": "length-target"}},
                            {"name": "e-share", "reward": {"type": "letter-share"}}]}
    run_spec(H.rl_spec(rl_assets, "grpo", cfg), H.make_pm(), tmp_path / "run")
    recs = H.metrics(tmp_path / "run" / "rl")
    it = [r for r in recs if "rollout/reward" in r]
    assert [r["step"] for r in it] == list(range(1, 9))
    first, last = (sum(r["rollout/reward"] for r in part) / 3 for part in (it[:3], it[-3:]))
    assert last > first * 1.5, (first, last)
    held = [r for r in recs if "heldout/reward" in r]
    assert [r["step"] for r in held] == [0, 8]
    assert held[0]["heldout/kl"] == 0.0 and held[-1]["heldout/kl"] > 0
    # an eval reward equal to the trained one gives the same figure; another one is reported
    assert all(r["heldout/e-share"] == pytest.approx(r["heldout/reward"], rel=1e-9) for r in held)
    assert all(r["heldout/len-20"] <= 0.0 for r in held)
    for key in ("train/clipfrac", "train/approx_kl", "train/kl", "rollout/entropy",
                "rollout/length", "train/grad_norm"):
        assert all(key in r for r in it), key
    meta = json.loads((tmp_path / "run" / "rl" / "outputs" / "model" / "artifact.json")
                      .read_text())
    assert meta["algorithm"] == "grpo" and meta["optimizer_steps"] == 8


@pytest.mark.slow
def test_rloo_on_chats_uses_the_turns_before_the_last_reply(rl_assets, tmp_path):
    cfg = {"reward": {"type": "length-target", "target": 10},
           "rollout": H.rollout(prompts=4, samples_per_prompt=2),
           "loop": H.loop(iterations=2, checkpoint_every=2), "eval_prompts": 2}
    run_spec(H.rl_spec(rl_assets, "rloo", cfg, data="chats"), H.make_pm(), tmp_path / "run")
    recs = H.metrics(tmp_path / "run" / "rl")
    assert [r["step"] for r in recs if "rollout/reward" in r] == [1, 2]
    assert all(r["rollout/reward"] <= 0 for r in recs if "rollout/reward" in r)


def test_rl_specs_validate_and_refuse_bad_keys(rl_assets):
    pm = H.make_pm()
    ok = {"reward": {"type": "letter-share"}, "rollout": H.rollout(), "loop": H.loop()}
    for plugin in ("ppo", "grpo", "rloo"):
        validate_spec(H.rl_spec(rl_assets, plugin, ok), pm)
    with pytest.raises(SpecError, match="samples_per_prompt"):
        validate_spec(H.rl_spec(rl_assets, "grpo", {**ok, "rollout": H.rollout(
            samples_per_prompt=1)}), pm)
    with pytest.raises(SpecError, match="warmup_steps"):
        validate_spec(H.rl_spec(rl_assets, "ppo", {**ok, "loop": H.loop(optim={
            "lr": 1e-3, "warmup_steps": 10})}), pm)
    with pytest.raises(SpecError, match="reward"):
        validate_spec(H.rl_spec(rl_assets, "ppo", {"rollout": H.rollout()}), pm)
    with pytest.raises(SpecError, match="must be unique"):
        validate_spec(H.rl_spec(rl_assets, "rloo", {**ok, "eval_rewards": [
            {"name": "kl", "reward": {"type": "letter-share"}}]}), pm)


def test_a_reward_missing_its_input_is_named_before_training(rl_assets, tmp_path):
    cfg = {"reward": {"type": "needs-model"}, "rollout": H.rollout(), "loop": H.loop()}
    with pytest.raises(StageFailed, match="needs input 'reward_model'"):
        run_spec(H.rl_spec(rl_assets, "grpo", cfg), H.make_pm(), tmp_path / "run")


def test_prompts_longer_than_the_model_are_refused(rl_assets, tmp_path):
    cfg = {"reward": {"type": "letter-share"}, "loop": H.loop(),
           "rollout": H.rollout(max_prompt_tokens=100, max_new_tokens=64)}
    with pytest.raises(StageFailed, match="max_seq_len"):
        run_spec(H.rl_spec(rl_assets, "grpo", cfg), H.make_pm(), tmp_path / "run")


@pytest.mark.slow
def test_grpo_on_two_ddp_ranks_trains_what_one_process_trains(rl_assets, tmp_path):
    """Every rank generates the whole batch and trains on its share of the prompts; the DDP
    gradient mean over ranks equals one process's mean over all completion tokens."""
    import safetensors.torch

    def spec(backend: dict[str, Any]) -> dict[str, Any]:
        cfg = {"reward": {"type": "letter-share"}, "rollout": H.rollout(),
               "loop": H.loop(iterations=2, checkpoint_every=2, backend=backend),
               "eval_prompts": 0, "kl_coef": 0.05}
        return H.rl_spec(rl_assets, "grpo", cfg)

    one = _cli(0, spec({"type": "local", "device": "cpu", "precision": "fp32"}),
               tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(spec({"type": "ddp", "device": "cpu", "precision": "fp32"})))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "lmforge.cli", "-p", "rl_fakes", "run", str(path),
                          "--run-dir", str(tmp_path / "two"), "-q", "--nproc", "2"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _records(tmp_path / "one" / "rl"), _records(tmp_path / "two" / "rl")
    # the first rollout comes from identical weights: the same completions and rewards
    assert a[0]["rollout/reward"] == pytest.approx(b[0]["rollout/reward"], rel=1e-12)
    assert a[0]["train/loss"] == pytest.approx(b[0]["train/loss"], rel=1e-5, abs=1e-7)
    wa = safetensors.torch.load_file(str(tmp_path / "one" / "rl" / "outputs" / "model" /
                                         "model.safetensors"))
    wb = safetensors.torch.load_file(str(tmp_path / "two" / "rl" / "outputs" / "model" /
                                         "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max() < 1e-4, k


@pytest.mark.slow
def test_ppo_and_grpo_with_the_first_party_rewards(rl_assets, tmp_path):
    """PPO against a score-head reward model (also the value model's start) with python-checks
    reported on the held-out problems, and GRPO against python-checks (doctests in the
    subprocess sandbox) with the reward model reported."""
    import rl_fakes

    import lmforge_align.plugin as align
    import lmforge_models.plugin as models
    import lmforge_rewards.plugin as rewards
    import lmforge_torch.plugin as torch_plugin
    from lmforge.testing import plugin_manager

    pm = plugin_manager(align, models, torch_plugin, rl_fakes, rewards)
    checks = {"name": "python-checks", "reward": {"type": "python-checks", "timeout_s": 20}}
    for plugin, reward, extra in (
            ("ppo", {"type": "reward-model"}, [checks]),
            ("grpo", {"type": "python-checks", "timeout_s": 20},
             [{"name": "rm", "reward": {"type": "reward-model"}}])):
        spec = H.rl_spec(rl_assets, plugin, {
            "reward": reward, "eval_rewards": extra, "eval_prompts": 4,
            "rollout": H.rollout(prompts=2, samples_per_prompt=2, max_new_tokens=8),
            "loop": H.loop(iterations=1, checkpoint_every=1)},
            data="problems", extra_inputs={"reward_model": "rm", **(
                {"value_init": "rm"} if plugin == "ppo" else {})})
        spec["stages"].insert(3, {"id": "rm", "kind": "import", "plugin": "rl-fixture",
                                  "config": {"path": str(rl_assets["rm"])}})
        run_spec(spec, pm, tmp_path / plugin)
        held = [r for r in H.metrics(tmp_path / plugin / "rl") if "heldout/reward" in r]
        assert [r["step"] for r in held] == [0, 1]
        other = "heldout/python-checks" if plugin == "ppo" else "heldout/rm"
        assert all(other in r for r in held)
        checks_key = "heldout/python-checks" if plugin == "ppo" else "heldout/reward"
        assert all(0.0 <= r[checks_key] <= 1.0 for r in held)
