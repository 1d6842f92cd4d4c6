"""The RL math of lmforge.training.rl against hand-computed cases (numbers worked out in the
comments)."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.training.rl import (
    AdaptiveKLController,
    FixedKLController,
    RunningMoments,
    gae,
    group_advantages,
    kl_controller,
    kl_estimate,
    leave_one_out_advantages,
    masked_whiten,
    policy_loss,
    value_loss,
)


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64),
                          torch.as_tensor(b, dtype=torch.float64), atol=tol, rtol=0)


def test_gae_by_hand():
    # gamma 1, lam 0.5; rewards [0, 0, 1], values [.5, .6, .7], then padding (ignored):
    # t2: delta = 1 - .7 = .3, A = .3; t1: delta = .7 - .6 = .1, A = .1 + .5 * .3 = .25;
    # t0: delta = .6 - .5 = .1, A = .1 + .5 * .25 = .225; returns = A + V.
    r = torch.tensor([[0.0, 0.0, 1.0, 7.0]])
    v = torch.tensor([[0.5, 0.6, 0.7, 9.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = gae(r, v, m, gamma=1.0, lam=0.5)
    assert close(adv, [[0.225, 0.25, 0.3, 0.0]])
    assert close(ret, [[0.725, 0.85, 1.0, 0.0]])


def test_gae_discount_and_leading_prompt_positions():
    # gamma .9, lam 1: rewards [1, 2], values 0: A1 = 2, A0 = 1 + .9 * 2 = 2.8
    adv, ret = gae(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2), torch.ones(1, 2), 0.9, 1.0)
    assert close(adv, [[2.8, 2.0]]) and close(ret, [[2.8, 2.0]])
    # a masked (prompt) position before the completion takes no part: its reward 5 and
    # value 3 are ignored. t2: .5, t1: 0 + (.5 - .5) + .5 = .5
    adv, ret = gae(torch.tensor([[5.0, 0.0, 1.0]]), torch.tensor([[3.0, 0.5, 0.5]]),
                   torch.tensor([[0.0, 1.0, 1.0]]), 1.0, 1.0)
    assert close(adv, [[0.0, 0.5, 0.5]]) and close(ret, [[0.0, 1.0, 1.0]])


def test_gae_lambda_one_is_the_monte_carlo_return_minus_value():
    torch.manual_seed(0)
    r, v = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    m = torch.ones(3, 6, dtype=torch.float64)
    adv, ret = gae(r, v, m, gamma=1.0, lam=1.0)
    mc = r.flip(1).cumsum(1).flip(1)  # sum of the rewards from t on
    assert close(ret, mc, 1e-12) and close(adv, mc - v, 1e-12)


def test_policy_loss_clipped_and_unclipped_cases():
    # clip .2; ratio e^.5 = 1.6487 or e^-.5 = .6065
    # A=+1, r=1.65: max(-1.65, -1.2) = -1.2 (clipped: no gradient)
    # A=+1, r=.61:  max(-.61, -.8)   = -.6065 (unclipped)
    # A=-2, r=1.65: max(3.30, 2.4)   = 3.2974 (unclipped)
    # A=-2, r=.61:  max(1.21, 1.6)   = 1.6 (clipped: no gradient)
    old = torch.zeros(1, 4, dtype=torch.float64)
    logp = torch.tensor([[0.5, -0.5, 0.5, -0.5]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, -2.0, -2.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.float64)
    losses, stats = policy_loss(logp, old, adv, mask, 0.2)
    e = math.exp(0.5)
    assert close(losses, [[-1.2, -1 / e, 2 * e, 1.6]])
    assert close(stats["clipped"], [[1, 0, 0, 1]])
    losses.sum().backward()
    # d/dlogp of -A * exp(logp - old) = -A * ratio where unclipped, 0 where clipped
    assert close(logp.grad, [[0.0, -1 / e, 2 * e, 0.0]])
    # approx_kl is k3 of the new policy against the old one: exp(old-logp) - 1 - (old-logp)
    assert close(stats["approx_kl"], [[1 / e - 1 + 0.5, e - 1 - 0.5, 1 / e - 0.5, e - 1.5]])


def test_policy_loss_asymmetric_clip_and_mask():
    logp = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    old = torch.zeros(1, 2, dtype=torch.float64)
    adv = torch.ones(1, 2, dtype=torch.float64)
    losses, _ = policy_loss(logp, old, adv, torch.tensor([[1.0, 0.0]], dtype=torch.float64),
                            0.2, clip_high=0.28)
    assert close(losses, [[-1.28, 0.0]])  # clipped at 1 + .28; the padded position is 0


def test_value_loss_by_hand():
    # clip .2. v=1, old=.5, R=.6: plain .16, v_clip=.7 -> .01; max .16 -> .08
    # v=.55, old=.5, R=1: inside the clip, .2025 -> .10125
    # v=0, old=.5, R=0: plain 0, v_clip=.3 -> .09 -> .045 (clipped term larger)
    v = torch.tensor([[1.0, 0.55, 0.0]], dtype=torch.float64)
    old = torch.tensor([[0.5, 0.5, 0.5]], dtype=torch.float64)
    ret = torch.tensor([[0.6, 1.0, 0.0]], dtype=torch.float64)
    losses, clipped = value_loss(v, old, ret, torch.ones(1, 3, dtype=torch.float64), 0.2)
    assert close(losses, [[0.08, 0.10125, 0.045]])
    assert close(clipped, [[0, 0, 1]])
    plain, _ = value_loss(v, old, ret, torch.ones(1, 3, dtype=torch.float64), None)
    assert close(plain, [[0.08, 0.10125, 0.0]])


def test_kl_estimators_by_hand():
    # p(token) = .5 under the policy, .25 under the reference: d = ref - logp = -ln 2
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    ln2 = math.log(2)
    assert close(kl_estimate(logp, ref, "k1"), [ln2])
    assert close(kl_estimate(logp, ref, "k2"), [0.5 * ln2 ** 2])
    assert close(kl_estimate(logp, ref, "k3"), [0.5 - 1 + ln2])
    with pytest.raises(ValueError, match="k1, k2 or k3"):
        kl_estimate(logp, ref, "k4")  # type: ignore[arg-type]


def test_k1_and_k3_are_unbiased_for_the_exact_kl():
    # p = [.5, .5], q = [.25, .75]: KL(p||q) = .5 ln 2 + .5 ln(2/3) = .143841
    p, q = torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([0.25, 0.75],
                                                                        dtype=torch.float64)
    exact = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    for kind in ("k1", "k3"):
        expectation = (p * kl_estimate(p.log(), q.log(), kind)).sum()
        assert close(expectation, exact, 1e-12), kind
    assert float((p * kl_estimate(p.log(), q.log(), "k2")).sum()) > 0


def test_group_advantages_by_hand():
    # group [1, 0, 0, 1]: mean .5, Bessel std sqrt(1/3) = .57735 -> +-.5 / (.57735 + 1e-4)
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
    a = group_advantages(r)
    s = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert close(a, [[s, -s, -s, s], [0, 0, 0, 0]])
    assert close(group_advantages(r, scale=False), [[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0]])


def test_leave_one_out_by_hand():
    # [1, 0, 0, 1]: 1 - (0 + 0 + 1)/3 = 2/3, 0 - 2/3; [3, 1]: 3 - 1 = 2, 1 - 3 = -2
    a = leave_one_out_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=torch.float64))
    assert close(a, [[2 / 3, -2 / 3, -2 / 3, 2 / 3]])
    assert close(leave_one_out_advantages(torch.tensor([[3.0, 1.0]])), [[2.0, -2.0]])
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_advantages(torch.tensor([[1.0]]))


def test_adaptive_kl_controller_by_hand():
    # target 6, horizon 10000, 256 samples: KL 9 -> error clipped to .2 -> x 1.00512;
    # KL 3 -> -.2 -> x .99488; KL 6.6 -> .1 -> x 1.00256
    for kl, factor in ((9.0, 1.00512), (3.0, 0.99488), (6.6, 1.00256)):
        c = AdaptiveKLController(0.1, 6.0, 10000)
        c.update(kl, 256)
        assert c.value == pytest.approx(0.1 * factor, rel=1e-12)
    c = AdaptiveKLController(0.1, 6.0, 10000)
    c.update(9.0, 256)
    c.update(9.0, 256)
    assert c.value == pytest.approx(0.1 * 1.00512 ** 2, rel=1e-12)
    restored = AdaptiveKLController(0.1, 6.0, 10000)
    restored.load_state_dict(c.state_dict())
    assert restored.value == c.value
    fixed = kl_controller(0.3, None, 10)
    assert isinstance(fixed, FixedKLController)
    fixed.update(100.0, 256)
    assert fixed.value == 0.3


def test_running_moments_and_whitening():
    m = RunningMoments()
    m.update(torch.tensor([1.0, 2.0, 3.0]))
    m.update(torch.tensor([4.0, 5.0]))
    assert m.mean == pytest.approx(3.0) and m.std == pytest.approx(math.sqrt(2.5))
    again = RunningMoments()
    again.load_state_dict(m.state_dict())
    assert (again.count, again.mean, again.m2) == (m.count, m.mean, m.m2)
    # [1, 2, 3] (+ a padded 100): mean 2, Bessel variance 1 -> [-1, 0, 1, 0]
    w = masked_whiten(torch.tensor([1.0, 2.0, 3.0, 100.0], dtype=torch.float64),
                      torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64))
    assert close(w, [-1.0, 0.0, 1.0, 0.0], 1e-6)


def test_whitening_over_ranks_equals_whitening_the_whole_batch():
    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=torch.float64)
    m = (torch.rand(6, 5) > 0.3).to(torch.float64)
    whole = masked_whiten(x, m)
    n = float(m.sum())
    mean = float((x * m).sum()) / n
    var = float((((x - mean) ** 2) * m).sum()) / (n - 1)
    assert close(whole, ((x - mean) / math.sqrt(var + 1e-8)) * m, 1e-9)
    # rank 0 holds rows 0-2; the other rank holds rows 3-5 and contributes, in the order
    # masked_whiten sums them: its mask count, its masked sum, its squared deviations
    x1, m1 = x[3:], m[3:]
    other = iter([float(m1.sum()), float((x1 * m1).sum()),
                  float((((x1 - mean) ** 2) * m1).sum())])
    part = masked_whiten(x[:3], m[:3], reduce_sum=lambda v: v + next(other))
    assert close(part, whole[:3], 1e-9)
