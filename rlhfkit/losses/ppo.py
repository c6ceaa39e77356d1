"""PPO's clipped surrogate, which every policy loss type averages, and the clipped value
loss (Schulman et al. 2017)."""
from __future__ import annotations

import torch

from rlhfkit.losses.common import check_same_shape, masked_mean, masked_var


def clipped_surrogate(
    ratio: torch.Tensor,  # [B, A] per token, or [B] per response: pi_theta / pi_old
    advantages: torch.Tensor,  # the same shape: the advantage of each ratio, no gradient
    clip_low: float,  # eps_low: the ratio is clipped below at 1 - eps_low
    clip_high: float,  # eps_high: above at 1 + eps_high (PPO: eps_high = eps_low)
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped surrogate of PPO (Schulman et al. 2017, eq. 7), negated for descent, one
    term per ratio; every policy loss type (``rlhfkit.losses.grpo.POLICY_LOSSES``) is an
    average of these terms:

        l = max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high))

    Returns (l, active): active (bool, no gradient) where the clipped term is the larger
    one, the term whose gradient is 0. The max is the pessimistic bound: moving rho outside
    the clip range can't help."""
    advantages = advantages.detach()  # a fixed target of the update
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    return torch.maximum(unclipped, clipped), (clipped > unclipped).detach()


def token_surrogate(
    logprobs: torch.Tensor,  # [B, A] log pi_theta(a_t | s_t) under the policy being trained
    old_logprobs: torch.Tensor,  # [B, A] log pi_old of the same tokens, from the rollout
    advantages: torch.Tensor,  # [B, A] (whitened) advantages, no gradient
    mask: torch.Tensor,  # [B, A] 1 on valid response tokens
    clip_low: float,
    clip_high: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The per-token clipped surrogate [B, A] and its metrics over the valid tokens:
    ``policy/clipfrac`` (the clipped term active), split into ``_low`` (rho < 1) and
    ``_high`` (rho > 1); ``policy/approxkl`` = mean 0.5 (log rho)^2 (k2 of Schulman 2020;
    0 on the first minibatch); ``policy/ratio_mean``; ``policy/ratio_var``;
    ``policy/ratio_max_dev`` (see ``ratio_metrics``)."""
    check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    log_ratio = logprobs - old_logprobs.detach()  # old log-probs are a fixed target of the update
    ratio = torch.exp(log_ratio)
    per_token, active = clipped_surrogate(ratio, advantages, clip_low, clip_high)
    return per_token, ratio_metrics(ratio, active, mask, log_ratio, mask)


@torch.no_grad()
def ratio_metrics(ratio, active, mask, token_log_ratio, token_mask) -> dict[str, torch.Tensor]:
    """The clipped surrogate's metrics. ratio, active, mask: the surrogate's terms ([B, A]
    per token, or [B] per response) and which count; token_log_ratio, token_mask [B, A]:
    log rho_t of every token. ``policy/ratio_max_dev`` is max |rho_t - 1| over the valid
    tokens: at the first minibatch of an update it shows how far the old log-probs are
    from the ones the update computes (float rounding when the sampler's and the update's
    passes agree)."""
    token_dev = (torch.exp(token_log_ratio) - 1.0).abs()
    return {
        "policy/clipfrac": masked_mean(active.float(), mask),
        "policy/clipfrac_low": masked_mean((active & (ratio < 1.0)).float(), mask),
        "policy/clipfrac_high": masked_mean((active & (ratio > 1.0)).float(), mask),
        "policy/approxkl": masked_mean(0.5 * token_log_ratio**2, token_mask),
        "policy/ratio_mean": masked_mean(ratio, mask),
        "policy/ratio_var": masked_var(ratio, mask),
        "policy/ratio_max_dev": torch.where(token_mask != 0, token_dev, torch.zeros_like(token_dev)).max(),
    }


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
