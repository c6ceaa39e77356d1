"""Advantages over response tokens: GAE with a learned critic, or a group baseline
from K samples per prompt (RLOO, GRPO) without one."""
from __future__ import annotations

import torch

from rlhfkit.losses.common import check_same_shape


@torch.no_grad()
def gae_advantages(
    rewards: torch.Tensor,  # [B, A] per-token rewards (KL penalty, plus the score at the last token)
    values: torch.Tensor,  # [B, A] value estimates V(s_t) before emitting token t
    mask: torch.Tensor,  # [B, A] 1 on valid response tokens: a prefix of each row (right-padded)
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2016, eq. 16); returns ``(advantages, returns)``, both [B, A].

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = sum_{l=0}^{L-1-t} (gamma * lam)^l * delta_{t+l}
                = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t   (the value target; TD(lambda) return)

    L is the row's number of valid tokens: the episode ends at EOS or truncation,
    so V_L = 0 and nothing flows back across the end. Both outputs are 0 at
    masked positions and carry no gradient (they are targets). Masked inputs may
    hold anything. Gamma 1, lambda 0.95 are the RLHF defaults.
    """
    check_same_shape(rewards=rewards, values=values, mask=mask)
    valid = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    # Zeroing the padded suffix makes its deltas 0 and V beyond the end 0, so the
    # backward recursion below needs no per-row lengths.
    r = torch.where(valid, rewards.to(values.dtype), zero)
    v = torch.where(valid, values, zero)
    A = r.shape[1]
    next_value = torch.zeros_like(v[:, 0])
    running = torch.zeros_like(v[:, 0])
    reversed_adv = []
    for t in reversed(range(A)):
        delta = r[:, t] + gamma * next_value - v[:, t]
        running = delta + gamma * lam * running
        reversed_adv.append(running)
        next_value = v[:, t]
    advantages = torch.stack(reversed_adv[::-1], dim=1)
    advantages = torch.where(valid, advantages, zero)
    returns = torch.where(valid, advantages + v, zero)
    return advantages, returns


# ----------------------------------------------------------------------------- critic-free
# K responses are sampled per prompt, in K consecutive rows; the other responses to the
# same prompt are the baseline, so no value model is trained. Each response's
# advantage is one number, given to every one of its tokens.

def rloo_advantages(
    rewards: torch.Tensor,  # [B] sequence rewards, B = prompts x K, each prompt's K rows adjacent
    group_size: int,  # K >= 2
) -> torch.Tensor:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024, eq. 5): [B]

        A_i = R_i - 1/(K-1) * sum_{j != i} R_j

    An unbiased baseline: R_j for j != i does not depend on sample i."""
    R = _groups(rewards, group_size)  # [B/K, K]
    baseline = (R.sum(1, keepdim=True) - R) / (group_size - 1)
    return (R - baseline).reshape(-1)


def grpo_advantages(
    rewards: torch.Tensor,  # [B] as above
    group_size: int,  # K >= 2
    eps: float = 1e-4,
) -> torch.Tensor:
    """Group-relative advantage (Shao et al. 2024, DeepSeekMath, section 4.1.2): [B]

        A_i = (R_i - mean(R_group)) / (std(R_group) + eps)

    std is the unbiased sample standard deviation; eps keeps a group of equal rewards
    at advantage 0 (no gradient) instead of 0/0."""
    R = _groups(rewards, group_size)
    return ((R - R.mean(1, keepdim=True)) / (R.std(1, keepdim=True) + eps)).reshape(-1)


def dr_grpo_advantages(
    rewards: torch.Tensor,  # [B] as above
    group_size: int,  # K >= 2
) -> torch.Tensor:
    """Dr. GRPO's advantage (Liu et al. 2025, eq. 3): [B]

        A_i = R_i - mean(R_group)

    without GRPO's division by the group's std, which up-weights prompts that are too easy
    or too hard (a question-level difficulty bias)."""
    R = _groups(rewards, group_size)
    return (R - R.mean(1, keepdim=True)).reshape(-1)


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if group_size < 2:
        raise ValueError(f"a group baseline needs at least 2 samples per prompt, got {group_size}")
    if rewards.dim() != 1 or rewards.shape[0] % group_size:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)} do not split into groups of {group_size}")
    return rewards.detach().view(-1, group_size)


GROUP_ADVANTAGES = {"rloo": rloo_advantages, "grpo": grpo_advantages, "dr_grpo": dr_grpo_advantages}
