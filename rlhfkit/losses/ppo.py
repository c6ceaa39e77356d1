"""PPO clipped surrogate and clipped value losses (Schulman et al. 2017)."""
from __future__ import annotations

import torch

from rlhfkit.losses.common import check_same_shape, masked_mean, masked_var


def ppo_policy_loss(
    logprobs: torch.Tensor,  # [B, A] log pi_theta(a_t | s_t) under the policy being trained
    old_logprobs: torch.Tensor,  # [B, A] log pi_old of the same tokens, from the rollout
    advantages: torch.Tensor,  # [B, A] (whitened) advantages, no gradient
    mask: torch.Tensor,  # [B, A] 1 on valid response tokens
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate objective (Schulman et al. 2017, eq. 7), negated for descent.

        rho_t = exp(log pi_theta - log pi_old)
        L = mean_t max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps))

    The mean is over all valid tokens of the batch (a token mean). Metrics: ``loss/policy``; ``policy/clipfrac``, the
    fraction of valid tokens where the clipped term is the active (larger) one;
    ``policy/approxkl`` = mean 0.5 (log rho)^2 (k2 of Schulman 2020; 0 on the
    first minibatch); ``policy/ratio_mean``; ``policy/ratio_var``.
    """
    check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    # Old log-probs and advantages are fixed targets of this update.
    advantages = advantages.detach()
    log_ratio = logprobs - old_logprobs.detach()
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    # The max is the pessimistic bound: moving rho outside [1-eps, 1+eps] can't help.
    per_token = torch.maximum(unclipped, clipped)
    loss = masked_mean(per_token, mask)
    with torch.no_grad():
        metrics = {
            "loss/policy": loss.detach(),
            "policy/clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "policy/approxkl": masked_mean(0.5 * log_ratio**2, mask),
            "policy/ratio_mean": masked_mean(ratio, mask),
            "policy/ratio_var": masked_var(ratio, mask),
        }
    return loss, metrics


def ppo_value_loss(
    values: torch.Tensor,  # [B, A] V_theta(s_t) under the value model being trained
    old_values: torch.Tensor,  # [B, A] V_old(s_t) from the rollout
    returns: torch.Tensor,  # [B, A] value targets (GAE returns), no gradient
    mask: torch.Tensor,  # [B, A] 1 on valid response tokens
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss, 0.5 * mean_t max((V - R)^2, (V_clip - R)^2).

    V_clip = V_old + clip(V - V_old, -eps, eps). Not in the PPO paper's equations;
    it is the OpenAI baselines ppo2 / lm-human-preferences choice that the RLHF
    references keep. Metrics: ``loss/value``; ``val/clipfrac`` (fraction of valid
    tokens where the clipped error is the larger); ``val/mean``; ``val/error``
    (mean unclipped squared error).
    """
    check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    old_values, returns = old_values.detach(), returns.detach()
    values_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    err_unclipped = (values - returns) ** 2
    err_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err_unclipped, err_clipped), mask)
    with torch.no_grad():
        metrics = {
            "loss/value": loss.detach(),
            "val/clipfrac": masked_mean((err_clipped > err_unclipped).float(), mask),
            "val/mean": masked_mean(values, mask),
            "val/error": masked_mean(err_unclipped, mask),
        }
    return loss, metrics


@torch.no_grad()
def explained_variance(
    values: torch.Tensor,  # [B, A] value predictions
    returns: torch.Tensor,  # [B, A] value targets
    mask: torch.Tensor,  # [B, A] 1 on valid response tokens
) -> torch.Tensor:
    """1 - Var[R - V] / Var[R] over valid tokens, a scalar (``val/explained_variance``).

    1 is a perfect value function, 0 no better than a constant, below 0 worse.
    nan when Var[R] = 0 (undefined).
    """
    check_same_shape(values=values, returns=returns, mask=mask)
    var_returns = masked_var(returns, mask, unbiased=False)
    var_residual = masked_var(returns - values, mask, unbiased=False)
    nan = torch.full_like(var_returns, float("nan"))
    return torch.where(var_returns > 0, 1 - var_residual / var_returns, nan)
