"""Tier 1: GAE against a plain per-row reference loop; the critic-free group baselines by hand."""
import pytest
import torch

from rlhfkit.losses.advantages import gae_advantages, grpo_advantages, rloo_advantages


def reference_gae(rewards, values, lengths, gamma, lam):
    B, A = rewards.shape
    adv = torch.zeros(B, A, dtype=torch.float64)
    for b in range(B):
        L = lengths[b]
        for t in range(L):
            total = 0.0
            for l in range(L - t):
                v_next = values[b, t + l + 1].item() if t + l + 1 < L else 0.0
                delta = rewards[b, t + l].item() + gamma * v_next - values[b, t + l].item()
                total += (gamma * lam) ** l * delta
            adv[b, t] = total
    ret = adv + torch.where(torch.arange(A)[None] < torch.tensor(lengths)[:, None], values.double(), 0.0)
    return adv, ret


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_matches_reference_loop(gamma, lam):
    g = torch.Generator().manual_seed(int(gamma * 100 + lam * 10))
    B, A = 6, 9
    rewards = torch.randn(B, A, generator=g, dtype=torch.float64)
    values = torch.randn(B, A, generator=g, dtype=torch.float64)
    lengths = torch.randint(0, A + 1, (B,), generator=g).tolist()
    lengths[0] = A  # one full row: nothing to bootstrap past the end
    mask = torch.arange(A)[None] < torch.tensor(lengths)[:, None]
    # Garbage in padding must not matter.
    rewards = torch.where(mask, rewards, 1e6)
    values = torch.where(mask, values, float("nan"))
    adv, ret = gae_advantages(rewards, values, mask, gamma, lam)
    ref_adv, ref_ret = reference_gae(rewards, values, lengths, gamma, lam)
    assert torch.allclose(adv, ref_adv, atol=1e-10)
    assert torch.allclose(ret, ref_ret, atol=1e-10)
    assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()


def test_by_hand_no_discount():
    # gamma = lam = 1, one row of 3 tokens, score 1 at the end, V = (0.5, 0.5, 0.5):
    # deltas: 0 + 0.5 - 0.5 = 0, 0, 1 + 0 - 0.5 = 0.5 -> A = (0.5, 0.5, 0.5); R = 1 everywhere.
    adv, ret = gae_advantages(
        torch.tensor([[0.0, 0.0, 1.0, 0.0]]), torch.tensor([[0.5, 0.5, 0.5, 9.0]]),
        torch.tensor([[1, 1, 1, 0]]), 1.0, 1.0,
    )
    assert adv.tolist() == [[0.5, 0.5, 0.5, 0.0]]
    assert ret.tolist() == [[1.0, 1.0, 1.0, 0.0]]


def test_lambda_zero_is_one_step_td():
    # lam = 0: A_t = delta_t = r_t + gamma V_{t+1} - V_t.
    adv, _ = gae_advantages(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]]), torch.ones(1, 2), 0.5, 0.0)
    assert adv.tolist() == [[1.0 + 0.5 * 4.0 - 3.0, 2.0 - 4.0]]


def test_outputs_carry_no_gradient():
    values = torch.randn(2, 3, requires_grad=True)
    adv, ret = gae_advantages(torch.randn(2, 3), values, torch.ones(2, 3), 1.0, 0.95)
    assert not adv.requires_grad and not ret.requires_grad


# ----------------------------------------------------------------------------- critic-free


def test_rloo_by_hand():
    # two prompts, K = 3: each sample minus the mean of the other two
    rewards = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    expected = torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5, 0 - 1.5, 0 - 1.5, 3 - 0.0])
    assert torch.allclose(rloo_advantages(rewards, 3), expected)


def test_rloo_is_a_rescaled_group_centering():
    """A_i = K/(K-1) (R_i - mean_group): zero mean in every group."""
    rewards = torch.randn(8 * 4, generator=torch.Generator().manual_seed(0))
    adv = rloo_advantages(rewards, 4)
    groups = rewards.view(8, 4)
    assert torch.allclose(adv.view(8, 4), 4 / 3 * (groups - groups.mean(1, keepdim=True)), atol=1e-6)
    assert torch.allclose(adv.view(8, 4).sum(1), torch.zeros(8), atol=1e-5)


def test_grpo_by_hand_and_equal_rewards_give_zero():
    rewards = torch.tensor([1.0, 3.0, 0.5, 0.5])
    adv = grpo_advantages(rewards, 2)
    std = torch.tensor([1.0, 3.0]).std()  # unbiased: sqrt(2)
    assert torch.allclose(adv[:2], torch.tensor([-1.0, 1.0]) / (std + 1e-4))
    assert torch.equal(adv[2:], torch.zeros(2))  # no spread, no signal (and no 0/0)


@pytest.mark.parametrize("fn", [rloo_advantages, grpo_advantages])
def test_group_baselines_refuse_bad_groups_and_carry_no_gradient(fn):
    with pytest.raises(ValueError, match="at least 2"):
        fn(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="groups of 3"):
        fn(torch.zeros(4), 3)
    rewards = torch.randn(6, requires_grad=True)
    assert not fn(rewards, 2).requires_grad
