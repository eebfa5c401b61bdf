"""GRPO math against hand-computed literals (method.md section 4)."""

from __future__ import annotations

import math

import pytest
import torch

from rl.grpo import aggregation_units, group_advantages, k3_kl, policy_loss


def test_group_advantages_standardise_each_group_with_unbiased_std():
    # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.5773503; A = +-0.5 / (0.5773503 + 1e-4)
    # group 2: all equal -> zero variance -> A = 0
    out = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0]), group_size=4)
    a = 0.865875
    assert out.advantages.tolist() == pytest.approx([a, -a, -a, a, 0, 0, 0, 0], abs=1e-6)
    assert out.zero_variance_fraction == 0.5


def test_zero_variance_group_is_exactly_zero_despite_rounding():
    # mean(0.1 x 3) is not exactly 0.1 in floating point; A must still be exactly 0
    out = group_advantages(torch.tensor([0.1, 0.1, 0.1, 3.0, 0.0, 0.0]), group_size=3)
    assert out.advantages[:3].tolist() == [0.0, 0.0, 0.0]
    # group 2: mean 1, unbiased std sqrt((4 + 1 + 1) / 2) = sqrt(3); A = (2, -1, -1) / (1.7320508 + 1e-4)
    assert out.advantages[3:].tolist() == pytest.approx([1.154634, -0.577317, -0.577317], abs=1e-6)
    assert out.zero_variance_fraction == 0.5


def test_group_advantages_reject_bad_shapes():
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(5), group_size=2)
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(4), group_size=1)


def _batch():
    """Two responses: A = +1 with ratios (1.5, 0.5, 1.1), A = -1 with ratios (0.5, 1.5) + 1 padding slot.

    Per token -min(rho A, clip(rho, 0.8, 1.2) A):
      A = +1: rho 1.5 -> -1.2 (high clip binds), rho 0.5 -> -0.5 (free), rho 1.1 -> -1.1 (free)
      A = -1: rho 0.5 -> +0.8 (low clip binds), rho 1.5 -> +1.5 (free)
    """
    old = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, 0.0]])
    ratios = torch.tensor([[1.5, 0.5, 1.1], [0.5, 1.5, 1.0]])
    logp = old + ratios.log()
    logp[1, 2] = 3.0  # padding: garbage that the mask must hide
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv = torch.tensor([1.0, -1.0])
    return logp, old, adv, mask


def test_policy_loss_clips_both_sides_seq_mean_token_mean():
    logp, old, adv, mask = _batch()
    loss, stats = policy_loss(logp, old, None, adv, mask, kl_coef=0.0)
    # seq means: (-1.2 - 0.5 - 1.1) / 3 = -0.933333, (0.8 + 1.5) / 2 = 1.15; mean 0.108333
    assert loss.item() == pytest.approx(0.108333, abs=1e-5)
    assert stats["pg_loss"].item() == pytest.approx(0.108333, abs=1e-5)
    assert stats["kl"].item() == 0.0
    assert stats["clip_frac_high"].item() == pytest.approx(1 / 5)
    assert stats["clip_frac_low"].item() == pytest.approx(1 / 5)
    assert stats["clip_frac"].item() == pytest.approx(2 / 5)
    assert stats["ratio_mean"].item() == pytest.approx((1.5 + 0.5 + 1.1 + 0.5 + 1.5) / 5, abs=1e-6)
    assert stats["ratio_max"].item() == pytest.approx(1.5, abs=1e-6)
    assert stats["ratio_min"].item() == pytest.approx(0.5, abs=1e-6)


def test_policy_loss_token_mean_differs_with_unequal_lengths():
    logp, old, adv, mask = _batch()
    loss, _ = policy_loss(logp, old, None, adv, mask, kl_coef=0.0, aggregation="token-mean")
    # (-1.2 - 0.5 - 1.1 + 0.8 + 1.5) / 5 = -0.1
    assert loss.item() == pytest.approx(-0.1, abs=1e-5)
    assert aggregation_units(mask, "token-mean") == 5
    assert aggregation_units(mask, "seq-mean-token-mean") == 2


def test_policy_loss_gradient_is_zero_where_the_clip_binds():
    logp, old, adv, mask = _batch()
    logp = logp.clone().requires_grad_(True)
    loss, _ = policy_loss(logp, old, None, adv, mask, kl_coef=0.0)
    loss.backward()
    # d/dlogp of -rho A / (n_tokens_of_seq * n_seqs) where free; 0 where the clip binds or padding
    expected = torch.tensor([[0.0, -0.5 / 6, -1.1 / 6], [0.0, 1.5 / 4, 0.0]])
    assert torch.allclose(logp.grad, expected, atol=1e-6)


def test_k3_kl_literals():
    logp = torch.zeros(3)
    ref = torch.tensor([math.log(2.0), 0.0, math.log(0.5)])
    # exp(d) - d - 1: 2 - ln2 - 1 = 0.306853, 0, 0.5 + ln2 - 1 = 0.193147
    assert k3_kl(logp, ref).tolist() == pytest.approx([0.306853, 0.0, 0.193147], abs=1e-6)


def test_policy_loss_adds_beta_times_k3_kl():
    logp, old, adv, mask = _batch()
    ref = logp.clone()
    ref[0] += torch.tensor([math.log(2.0), 0.0, math.log(0.5)])  # KL 0.306853, 0, 0.193147
    ref[1] += torch.tensor([math.log(2.0), math.log(2.0), 0.0])  # KL 0.306853, 0.306853, (padding)
    loss, stats = policy_loss(logp, old, ref, adv, mask, kl_coef=0.1)
    kl_seq = ((0.306853 + 0.193147) / 3 + 0.306853) / 2  # 0.236760
    assert stats["kl"].item() == pytest.approx(kl_seq, abs=1e-5)
    assert stats["kl_token_mean"].item() == pytest.approx((0.306853 * 3 + 0.193147) / 5, abs=1e-5)
    assert loss.item() == pytest.approx(0.108333 + 0.1 * kl_seq, abs=1e-5)

    loss_tok, stats_tok = policy_loss(logp, old, ref, adv, mask, kl_coef=0.1, aggregation="token-mean")
    assert loss_tok.item() == pytest.approx(-0.1 + 0.1 * (0.306853 * 3 + 0.193147) / 5, abs=1e-5)


def test_kl_coef_zero_ignores_ref():
    logp, old, adv, mask = _batch()
    with_none, _ = policy_loss(logp, old, None, adv, mask, kl_coef=0.0)
    with_ref, _ = policy_loss(logp, old, logp - 5.0, adv, mask, kl_coef=0.0)
    assert with_none.item() == with_ref.item()
    with pytest.raises(ValueError):
        policy_loss(logp, old, None, adv, mask, kl_coef=0.01)


def test_zero_advantage_gives_zero_policy_gradient_loss():
    logp, old, _, mask = _batch()
    loss, stats = policy_loss(logp, old, None, torch.zeros(2), mask, kl_coef=0.0)
    assert loss.item() == 0.0
    assert stats["clip_frac"].item() == 0.0


def test_behaviour_weight_is_truncated_and_multiplies_the_clipped_term():
    from rl.grpo import behaviour_weights

    old = torch.tensor([[-1.0, -2.0, -0.5]])
    behav = torch.tensor([[-1.0, -3.0, -0.2]])
    w = behaviour_weights(old, behav, cap=2.0)
    assert torch.allclose(w, torch.tensor([[1.0, 2.0, math.exp(-0.3)]]))  # exp(1) = 2.72 truncated to C = 2
    logp = torch.tensor([[-0.9, -2.1, -0.4]], requires_grad=True)
    mask = torch.ones(1, 3)
    adv = torch.tensor([1.5])
    plain, _ = policy_loss(logp, old, None, adv, mask, kl_coef=0.0)
    weighted, _ = policy_loss(logp, old, None, adv, mask, kl_coef=0.0, behaviour_weight=w)
    rho = torch.exp(logp - old)
    per_token = -torch.minimum(rho * 1.5, rho.clamp(0.8, 1.2) * 1.5)
    assert torch.allclose(weighted, (per_token * w).mean())
    assert torch.equal(plain, policy_loss(logp, old, None, adv, mask, kl_coef=0.0, behaviour_weight=None)[0])
    assert not torch.allclose(plain, weighted)
