"""Generalised advantage estimation over response tokens."""
from __future__ import annotations

import torch

from rlhfkit.losses.common import check_same_shape, masked_whiten

# Advantages are whitened over the response tokens of a (mini)batch, as in
# lm-human-preferences and the "N+ implementation details" reproduction.
whiten_advantages = masked_whiten


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
