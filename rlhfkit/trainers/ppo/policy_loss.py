"""The policy loss of every PPO update, GAE or critic-free: the clipped surrogate averaged
as --loss_type says (rlhfkit.losses.grpo.POLICY_LOSSES), with its clip range and the KL
term --kl_placement loss puts in it; and the KL coefficient that --kl_placement leaves in
the reward."""
from __future__ import annotations

from rlhfkit.losses.grpo import POLICY_LOSSES, PolicyLossOptions


def policy_loss(cfg, logprobs, old_logprobs, advantages, mask, ref_logprobs):
    """POLICY_LOSSES[cfg.loss_type] on one micro-batch, with the PPOConfig's clip range and KL
    term: (loss, metrics)."""
    opts = PolicyLossOptions(clip_low=cfg.clip_range, clip_high=cfg.clip_range_high or cfg.clip_range,
                             kl_coef=cfg.kl_coef if cfg.kl_placement == "loss" else 0.0,
                             kl_estimator=cfg.kl_estimator, max_length=cfg.response_length)
    return POLICY_LOSSES[cfg.loss_type](logprobs, old_logprobs, advantages, mask, ref_logprobs, opts)


def reward_kl_coef(cfg, beta: float) -> float:
    """The KL coefficient of the reward: beta with --kl_placement reward, else 0 (the KL is
    then in the loss, or only measured)."""
    return beta if cfg.kl_placement == "reward" else 0.0
