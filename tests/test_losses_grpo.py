"""Tier 1: the GRPO family's losses and DAPO's filters against hand-computed numbers.

The shared example: two responses, old log-probs 0 so that each ratio is exp(logprob),
row 0 (advantage +1) has two valid tokens with ratios 1.5 and 0.9, row 1 (advantage -1)
three tokens with ratios 0.5, 1.1 and 1.0. With eps 0.2 the per-token terms
max(-A r, -A clip(r)) are

    row 0:  max(-1.5, -1.2) = -1.2 (clipped, high)   max(-0.9, -0.9) = -0.9
    row 1:  max(0.5, 0.8)   =  0.8 (clipped, low)    1.1                 1.0

so the token sum is 0.8 over 5 tokens.
"""
import math

import pytest
import torch

from rlhfkit.losses.advantages import GROUP_ADVANTAGES, dr_grpo_advantages
from rlhfkit.losses.grpo import (
    POLICY_LOSSES,
    PolicyLossOptions,
    dynamic_sampling_keep,
    micro_batch_weight,
    overlong_penalty,
)

NAN = float("nan")


def example():
    ratios = torch.tensor([[1.5, 0.9, 7.0], [0.5, 1.1, 1.0]])  # 7.0: padding, never counted
    logprobs = ratios.log().requires_grad_(True)
    old = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]) * mask
    return logprobs, old, adv, mask


def loss_of(name, ref=None, **opts):
    logprobs, old, adv, mask = example()
    loss, metrics = POLICY_LOSSES[name](logprobs, old, adv, mask, ref, PolicyLossOptions(**opts))
    return loss, metrics, logprobs


def test_dapo_and_ppo_average_over_all_tokens():
    for name in ("ppo", "dapo"):
        loss, m, logprobs = loss_of(name)
        assert loss.item() == pytest.approx(0.8 / 5)
        assert m["loss/policy"].item() == pytest.approx(0.16)
        assert m["policy/clipfrac"].item() == pytest.approx(2 / 5)
        assert m["policy/clipfrac_low"].item() == pytest.approx(1 / 5)
        assert m["policy/clipfrac_high"].item() == pytest.approx(1 / 5)
        loss.backward()
        # d/dlogp of r = r for row 1's last token (A = -1, unclipped), weighed 1/5; clipped tokens get none
        assert logprobs.grad[1, 2].item() == pytest.approx(1 / 5)
        assert logprobs.grad[0, 0].item() == 0 and logprobs.grad[0, 2].item() == 0


def test_dapo_clip_higher_lets_the_good_token_rise_further():
    loss, m, _ = loss_of("dapo", clip_low=0.2, clip_high=0.6)  # 1.5 is inside [0.8, 1.6]: -1.5, not -1.2
    assert loss.item() == pytest.approx((-1.5 - 0.9 + 0.8 + 1.1 + 1.0) / 5)
    assert m["policy/clipfrac_high"].item() == 0
    assert m["policy/clipfrac_low"].item() == pytest.approx(1 / 5)


def test_grpo_averages_each_response_then_the_responses():
    loss, _, logprobs = loss_of("grpo")
    assert loss.item() == pytest.approx(((-1.2 - 0.9) / 2 + (0.8 + 1.1 + 1.0) / 3) / 2)
    loss.backward()
    assert logprobs.grad[1, 2].item() == pytest.approx(1 / (2 * 3))  # 1/B * 1/|o_1|


def test_dr_grpo_divides_the_token_sum_by_a_constant():
    loss, _, logprobs = loss_of("dr_grpo", max_length=4)
    assert loss.item() == pytest.approx(0.8 / (2 * 4))
    loss.backward()
    assert logprobs.grad[1, 2].item() == pytest.approx(1 / 8)
    with pytest.raises(ValueError, match="max_length"):
        loss_of("dr_grpo")


def test_gspo_uses_one_geometric_mean_ratio_per_response():
    s0, s1 = math.sqrt(1.5 * 0.9), (0.5 * 1.1 * 1.0) ** (1 / 3)  # 1.1619, 0.8193: inside [0.8, 1.2]
    loss, m, _ = loss_of("gspo")
    assert loss.item() == pytest.approx((-s0 + s1) / 2)
    assert m["policy/clipfrac"].item() == 0
    assert m["policy/ratio_mean"].item() == pytest.approx((s0 + s1) / 2)
    loss, m, _ = loss_of("gspo", clip_low=0.1, clip_high=0.1)  # both clipped: -1.1 and 0.9
    assert loss.item() == pytest.approx((-1.1 + 0.9) / 2)
    assert m["policy/clipfrac"].item() == 1
    assert m["policy/clipfrac_low"].item() == pytest.approx(0.5)


def test_kl_in_the_loss_adds_beta_k3_on_every_token():
    logprobs, _, _, _ = example()
    ref = logprobs.detach() + math.log(2)  # log r = log 2 on every token: k3 = 2 - 1 - log 2
    k3 = 1 - math.log(2)
    loss, m, _ = loss_of("dapo", ref=ref, kl_coef=0.5)
    assert loss.item() == pytest.approx(0.16 + 0.5 * k3)
    assert m["loss/kl"].item() == pytest.approx(k3)
    loss, _, _ = loss_of("grpo", ref=ref, kl_coef=0.5)
    assert loss.item() == pytest.approx(((-2.1) / 2 + 2.9 / 3) / 2 + 0.5 * k3)
    loss, _, _ = loss_of("gspo", ref=ref, kl_coef=0.5)
    assert loss.item() == pytest.approx((-math.sqrt(1.35) + 0.55 ** (1 / 3)) / 2 + 0.5 * k3)
    _, m, _ = loss_of("dapo")
    assert "loss/kl" not in m  # no KL term asked for
    with pytest.raises(ValueError, match="ref_logprobs"):
        loss_of("dapo", kl_coef=0.1)


@pytest.mark.parametrize("name", sorted(set(POLICY_LOSSES) - {"bnpo"}))
def test_micro_batch_weights_sum_to_the_minibatch_loss(name):
    logprobs, old, adv, mask = example()
    opts = PolicyLossOptions(max_length=3)
    full, _ = POLICY_LOSSES[name](logprobs, old, adv, mask, None, opts)
    total = 0.0
    for rows in ([0], [1]):
        part, _ = POLICY_LOSSES[name](logprobs[rows], old[rows], adv[rows], mask[rows], None, opts)
        total = total + part * micro_batch_weight(name, mask[rows], mask)
    assert total.item() == pytest.approx(full.item())


def test_bnpo_is_the_token_mean_per_micro_batch():
    logprobs, old, adv, mask = example()
    opts = PolicyLossOptions()
    whole, _ = POLICY_LOSSES["bnpo"](logprobs, old, adv, mask, None, opts)
    assert whole.item() == pytest.approx(0.16)  # one micro-batch: dapo's token mean
    total = 0.0
    for rows in ([0], [1]):  # one row per micro-batch: the grpo loss
        part, _ = POLICY_LOSSES["bnpo"](logprobs[rows], old[rows], adv[rows], mask[rows], None, opts)
        total = total + part * micro_batch_weight("bnpo", mask[rows], mask)
    grpo, _ = POLICY_LOSSES["grpo"](logprobs, old, adv, mask, None, opts)
    assert total.item() == pytest.approx(grpo.item())


def test_dr_grpo_advantage_drops_the_std():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    assert dr_grpo_advantages(r, 4).tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0])
    assert GROUP_ADVANTAGES["dr_grpo"] is dr_grpo_advantages
    grpo = GROUP_ADVANTAGES["grpo"](r, 4)  # the same direction, divided by the group's std 0.5
    assert grpo[0].item() == pytest.approx(0.75 / (0.5 + 1e-4))


def test_dynamic_sampling_keeps_only_groups_with_different_scores():
    scores = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.7])
    keep = dynamic_sampling_keep(scores, 3)
    assert keep.tolist() == [False] * 3 + [True] * 3 + [False] * 3 + [True] * 3
    with pytest.raises(ValueError):
        dynamic_sampling_keep(scores, 5)


def test_overlong_soft_penalty():
    # L_max 10, L_cache 4: free up to 6 tokens, then a linear fall to -1 at 10, -1 beyond
    lengths = torch.tensor([3, 6, 7, 8, 10, 11])
    assert overlong_penalty(lengths, 10, 4).tolist() == pytest.approx([0, 0, -0.25, -0.5, -1, -1])
    with pytest.raises(ValueError):
        overlong_penalty(lengths, 10, 0)


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_every_loss_type_has_the_one_surrogates_gradient(name):
    """Each loss type is an average of losses.ppo.clipped_surrogate's terms: written out here
    from that function alone, its gradient is the loss type's on a random case."""
    from rlhfkit.losses.common import masked_mean, masked_sum
    from rlhfkit.losses.ppo import clipped_surrogate

    g = torch.Generator().manual_seed(3)
    B, A, low, high = 4, 6, 0.2, 0.28
    old = torch.randn(B, A, generator=g, dtype=torch.float64) - 2
    logprobs = (old + 0.3 * torch.randn(B, A, generator=g, dtype=torch.float64)).requires_grad_(True)
    adv = torch.randn(B, A, generator=g, dtype=torch.float64)
    mask = torch.ones(B, A, dtype=torch.float64)
    mask[0, 4:], mask[2, 1:] = 0, 0
    loss, _ = POLICY_LOSSES[name](logprobs, old, adv, mask, None, PolicyLossOptions(low, high, max_length=A))
    (got,) = torch.autograd.grad(loss, logprobs)
    ref = logprobs.detach().clone().requires_grad_(True)
    if name == "gspo":
        s = torch.exp(masked_mean(ref - old, mask, dim=1))
        want = clipped_surrogate(s, masked_mean(adv, mask, dim=1), low, high)[0].mean()
    else:
        per_token = clipped_surrogate(torch.exp(ref - old), adv, low, high)[0]
        want = {"ppo": masked_mean(per_token, mask), "dapo": masked_mean(per_token, mask),
                "bnpo": masked_mean(per_token, mask), "grpo": masked_mean(per_token, mask, dim=1).mean(),
                "dr_grpo": masked_sum(per_token, mask) / (B * A)}[name]
    (expected,) = torch.autograd.grad(want, ref)
    assert torch.allclose(got, expected, rtol=0, atol=1e-15)
    assert got.abs().sum() > 0
