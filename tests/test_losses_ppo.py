"""Tier 1: PPO clipped surrogate and clipped value loss on hand-built numbers."""
import math

import pytest
import torch

from rlhfkit.losses.grpo import POLICY_LOSSES, PolicyLossOptions
from rlhfkit.losses.ppo import explained_variance, ppo_value_loss


def ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_range):
    """The ppo loss type (the token mean of the clipped surrogate), symmetric clip, no KL term."""
    return POLICY_LOSSES["ppo"](logprobs, old_logprobs, advantages, mask, None,
                                PolicyLossOptions(clip_low=clip_range, clip_high=clip_range))


def policy_case():
    # Token-by-token (eps = 0.2), -A*rho vs -A*clip(rho):
    #   A=+1, rho=1.5: -1.5 vs -1.2 -> -1.2 (clipped active)
    #   A=+1, rho=0.5: -0.5 vs -0.8 -> -0.5
    #   A=-1, rho=1.5: +1.5 vs +1.2 -> +1.5
    #   A=-1, rho=0.5: +0.5 vs +0.8 -> +0.8 (clipped active)
    #   A=+2, rho=1.1: -2.2 vs -2.2 -> -2.2 (inside the clip range)
    #   masked token: A=100, rho=3
    ratios = torch.tensor([[1.5, 0.5, 1.5, 0.5, 1.1, 3.0]], dtype=torch.float64)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 2.0, 100.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    logprobs = ratios.log().requires_grad_()
    return logprobs, torch.zeros_like(ratios), adv, mask


def test_policy_loss_by_hand():
    logprobs, old, adv, mask = policy_case()
    loss, m = ppo_policy_loss(logprobs, old, adv, mask, 0.2)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.5 + 0.8 - 2.2) / 5)
    assert m["loss/policy"].item() == pytest.approx(-0.32)
    assert m["policy/clipfrac"].item() == pytest.approx(2 / 5)
    assert m["policy/ratio_mean"].item() == pytest.approx(5.1 / 5)
    r = torch.tensor([1.5, 0.5, 1.5, 0.5, 1.1], dtype=torch.float64)
    assert m["policy/ratio_var"].item() == pytest.approx(r.var().item())
    assert m["policy/approxkl"].item() == pytest.approx((0.5 * r.log() ** 2).mean().item())
    assert all(not v.requires_grad and v.dim() == 0 for v in m.values())
    loss.backward()
    g = logprobs.grad[0]
    # Clipped-active and masked tokens get no gradient; d(-A rho)/dlogp = -A rho / 5 elsewhere.
    assert g[0] == 0 and g[3] == 0 and g[5] == 0
    assert g[1].item() == pytest.approx(-0.5 / 5)
    assert g[2].item() == pytest.approx(1.5 / 5)
    assert g[4].item() == pytest.approx(-2.2 / 5)


def test_first_minibatch_ratio_exactly_one():
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(3, 5, generator=g) - 2
    adv = torch.randn(3, 5, generator=g)
    mask = torch.ones(3, 5)
    loss, m = ppo_policy_loss(logp, logp.clone(), adv, mask, 0.2)
    assert m["policy/ratio_mean"].item() == 1.0
    assert m["policy/ratio_var"].item() == 0.0
    assert m["policy/approxkl"].item() == 0.0
    assert m["policy/clipfrac"].item() == 0.0
    assert loss.item() == pytest.approx(-adv.mean().item())


def test_policy_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape mismatch"):
        ppo_policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3, 1), torch.ones(2, 3), 0.2)


def test_value_loss_by_hand():
    # eps = 0.2; (V - R)^2 vs (V_clip - R)^2 with V_clip = old + clip(V - old, -0.2, 0.2):
    #   old 0, V 1,   R 1:    0    vs (0.2-1)^2 = 0.64  -> 0.64 (clipped active)
    #   old 0, V 1,   R 0:    1    vs 0.04              -> 1
    #   old 0, V 0.1, R 2:    3.61 vs 3.61              -> 3.61
    #   old 0, V -1,  R -0.1: 0.81 vs 0.01              -> 0.81
    values = torch.tensor([[1.0, 1.0, 0.1, -1.0, 7.0]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 5, dtype=torch.float64)
    ret = torch.tensor([[1.0, 0.0, 2.0, -0.1, -7.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss, m = ppo_value_loss(values, old, ret, mask, clip_range=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1 + 3.61 + 0.81) / 4)
    assert m["loss/value"].item() == pytest.approx(0.7575)
    assert m["val/clipfrac"].item() == pytest.approx(0.25)
    assert m["val/mean"].item() == pytest.approx(0.275)
    assert m["val/error"].item() == pytest.approx((0 + 1 + 3.61 + 0.81) / 4)
    loss.backward()
    assert values.grad[0, 0] == 0 and values.grad[0, 4] == 0  # clipped-active and masked


def test_explained_variance():
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0, 99.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    assert explained_variance(r, r, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(r, 2.5), r, mask).item() == pytest.approx(0.0)
    # Residual (0, 0, 0, 1): var 0.1875; Var[R] = 1.25 -> 1 - 0.15.
    v = torch.tensor([[1.0, 2.0, 3.0, 3.0, 0.0]])
    assert explained_variance(v, r, mask).item() == pytest.approx(0.85)
    assert math.isnan(explained_variance(v, torch.ones_like(r), mask).item())
