"""Tier 1: Bradley-Terry ranking loss (InstructGPT eq. 1)."""
import math

import pytest
import torch
import torch.nn.functional as F

from rlhfkit.losses.reward import bradley_terry_pairs, pairwise_accuracy_by_gap, ranking_loss


def test_pairs_in_ranking_order():
    assert bradley_terry_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert bradley_terry_pairs(2) == [(0, 1)]
    assert bradley_terry_pairs(1) == []


def test_k2_equals_neg_logsigmoid_of_difference():
    r = torch.tensor([[1.0, -0.5], [0.2, 0.7]])
    loss, m = ranking_loss(r, torch.ones(2, 2, dtype=torch.bool))
    diff = torch.tensor([1.5, -0.5])
    assert loss.item() == pytest.approx(-F.logsigmoid(diff).mean().item())
    assert m["rewards/accuracy"].item() == 0.5
    assert m["rewards/margin"].item() == pytest.approx(0.5)
    assert m["rewards/chosen_mean"].item() == pytest.approx(0.6)
    assert m["rewards/rejected_mean"].item() == pytest.approx(0.1)


def test_k3_by_hand():
    # Rewards 2, 1, 0: pair gaps 1, 2, 1 -> loss = (2*log(1+e^-1) + log(1+e^-2)) / 3.
    loss, m = ranking_loss(torch.tensor([[2.0, 1.0, 0.0]]), torch.ones(1, 3, dtype=torch.bool))
    expected = (2 * math.log1p(math.exp(-1)) + math.log1p(math.exp(-2))) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert m["rewards/accuracy"].item() == 1.0
    assert m["pairs"].item() == 3


def test_prompts_weigh_equally_and_padding_matches_unpadded():
    g = torch.Generator().manual_seed(0)
    r4 = torch.randn(1, 4, generator=g)
    r2 = torch.randn(1, 2, generator=g)
    loss4, _ = ranking_loss(r4, torch.ones(1, 4, dtype=torch.bool))
    loss2, _ = ranking_loss(r2, torch.ones(1, 2, dtype=torch.bool))
    # Padded batch: prompt 2 has two garbage slots (nan must not leak).
    padded = torch.cat([r4, torch.cat([r2, torch.tensor([[float("nan"), 1e9]])], 1)]).requires_grad_()
    valid = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    loss, m = ranking_loss(padded, valid)
    # Per-prompt means averaged over prompts: 6 pairs of prompt 1 weigh as much as 1 pair of prompt 2.
    assert loss.item() == pytest.approx((loss4.item() + loss2.item()) / 2, rel=1e-6)
    assert m["pairs"].item() == 7
    loss.backward()
    assert torch.isfinite(padded.grad).all()
    assert padded.grad[1, 2:].abs().sum() == 0


def test_prompt_with_one_response_is_left_out():
    r = torch.tensor([[1.0, 0.0], [5.0, 0.0]])
    loss, _ = ranking_loss(r, torch.tensor([[1, 1], [1, 0]], dtype=torch.bool))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1)), rel=1e-6)


def test_margin_llama2():
    # r_w - r_l = 1, margin 1 -> -log sigmoid(0) = log 2.
    loss, _ = ranking_loss(torch.tensor([[1.0, 0.0]]), torch.ones(1, 2, dtype=torch.bool), margin=torch.tensor([1.0]))
    assert loss.item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError):
        ranking_loss(torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool), margin=torch.zeros(1))


def test_ties_count_half():
    _, m = ranking_loss(torch.tensor([[0.3, 0.3]]), torch.ones(1, 2, dtype=torch.bool))
    assert m["rewards/accuracy"].item() == 0.5


def test_gradient_pushes_better_up():
    r = torch.zeros(1, 3, requires_grad=True)
    loss, _ = ranking_loss(r, torch.ones(1, 3, dtype=torch.bool))
    loss.backward()
    # Best response's gradient is negative (descent raises it), worst's positive, middle 0.
    assert r.grad[0, 0] < 0 < r.grad[0, 2]
    assert r.grad[0, 1].item() == pytest.approx(0.0)


def test_accuracy_by_gap():
    d = torch.tensor([0.1, -0.2, 0.3, 1.5, -1.2, 2.5, 0.0])
    rows = pairwise_accuracy_by_gap(d, [0.0, 1.0, 2.0, 3.0])
    # |d| < 1: 0.1 ok, -0.2 wrong, 0.3 ok, 0.0 tie (0.5) -> 2.5/4; [1, 2): 1.5 ok, -1.2 wrong; [2, 3]: 2.5 ok.
    assert rows[0] == (0.0, 1.0, pytest.approx(2.5 / 4), 4)
    assert rows[1] == (1.0, 2.0, 0.5, 2)
    assert rows[2] == (2.0, 3.0, 1.0, 1)
    empty = pairwise_accuracy_by_gap(d, [5.0, 6.0])
    assert empty[0][3] == 0 and math.isnan(empty[0][2])
    quant = pairwise_accuracy_by_gap(torch.arange(1.0, 9.0), 4)
    assert [c for *_, c in quant] == [2, 2, 2, 2]


def test_centering_penalty_is_trls_for_pairs_and_pulls_the_level_to_zero():
    from rlhfkit.losses.reward import centering_penalty, reward_model_loss

    r = torch.tensor([[1.0, 0.5], [3.0, -1.0]])
    valid = torch.ones(2, 2, dtype=torch.bool)
    # K = 2: TRL's mean((r_chosen + r_rejected)^2) = (1.5^2 + 2^2) / 2
    assert centering_penalty(r, valid).item() == pytest.approx((2.25 + 4.0) / 2)
    # K = 3 with a padded slot: per prompt over its valid pairs, then over prompts
    r3 = torch.tensor([[1.0, 2.0, float("nan")]])
    assert centering_penalty(r3, torch.tensor([[1, 1, 0]], dtype=torch.bool)).item() == pytest.approx(9.0)
    # a shift of every reward leaves Bradley-Terry unchanged, and centring then brings the level back to 0
    shifted = (torch.tensor([[1.0, 0.0, -1.0]] * 4) + 5.0).requires_grad_()
    opt = torch.optim.SGD([shifted], lr=0.05)
    for _ in range(1000):
        loss, m = reward_model_loss(shifted, torch.ones(4, 3, dtype=torch.bool), center_coef=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(shifted.mean().item()) < 0.05 and m["rewards/accuracy"].item() == 1.0
    assert m["loss/total"].item() > m["loss/reward"].item() - 1e-6


def test_fitted_length_term_recovers_the_labelers_length_weight():
    """Pairs ranked by quality + 0.5 x length (in logits per token): the fitted w is ~0.5."""
    from rlhfkit.losses.reward import fit_length_term

    g = torch.Generator().manual_seed(0)
    B = 4000
    quality = torch.randn(B, 2, generator=g)
    lengths = torch.randint(1, 8, (B, 2), generator=g).float()
    utility = quality + 0.5 * lengths
    # a Bradley-Terry labeler: the first is preferred with probability sigmoid(u_0 - u_1)
    first_wins = torch.rand(B, generator=g) < torch.sigmoid(utility[:, 0] - utility[:, 1])
    order = torch.where(first_wins[:, None], torch.tensor([0, 1]), torch.tensor([1, 0]))
    r, n = quality.gather(1, order), lengths.gather(1, order)  # best first
    w = fit_length_term(r, n, torch.ones(B, 2, dtype=torch.bool), ridge=1e-4)
    assert w.item() == pytest.approx(0.5, abs=0.05)


def test_length_debias_keeps_length_out_of_the_reward():
    """A linear reward r = a * quality + b * length trained on labels that count length
    beyond quality: plain Bradley-Terry puts length into r (b > 0); with the fitted
    length term and the correlation penalty r keeps quality and drops length."""
    from rlhfkit.losses.reward import length_correlation, reward_model_loss

    g = torch.Generator().manual_seed(1)
    B = 256
    quality = torch.randn(B, 2, generator=g)
    lengths = torch.randint(1, 20, (B, 2), generator=g).float()
    u = quality + 0.3 * lengths  # what the labeler saw
    order = torch.where((u[:, 0] > u[:, 1])[:, None], torch.tensor([0, 1]), torch.tensor([1, 0]))
    q, n = quality.gather(1, order), lengths.gather(1, order)  # best first
    valid = torch.ones(B, 2, dtype=torch.bool)
    features = torch.stack([q, n / 10], -1)  # [B, 2, 2]

    def train(length_debias):
        theta = torch.zeros(2, requires_grad=True)
        opt = torch.optim.Adam([theta], lr=0.05)
        for _ in range(300):
            loss, _ = reward_model_loss(features @ theta, valid, lengths=n, length_debias=length_debias)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return theta.detach()

    plain, debiased = train(0.0), train(1.0)
    assert plain[1] > 0.5 and length_correlation(features @ plain, n, valid).item() > 0.5
    assert abs(length_correlation(features @ debiased, n, valid).item()) < 0.1
    # quality is still learnt: r orders the pairs by quality more often than plain Bradley-Terry's r does
    by_quality = lambda theta: ((features @ theta).diff(dim=1) < 0).eq(q.diff(dim=1) < 0).float().mean().item()
    assert debiased[0] > 0.5 and by_quality(debiased) > by_quality(plain) + 0.1
    with pytest.raises(ValueError, match="lengths"):
        reward_model_loss(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), length_debias=1.0)
