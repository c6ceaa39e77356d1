"""The critic-free step's extras, kept out of the PPO loop: the group baseline, the
policy loss chosen by --loss_type, where the KL enters, DAPO's soft overlong penalty on
the scores, and the rows the update keeps (DAPO dynamic sampling, overlong filtering).
The math lives in rlhfkit.losses.grpo and rlhfkit.losses.advantages."""
from __future__ import annotations

import torch

from rlhfkit.generation.rollout import Rollout
from rlhfkit.losses.advantages import GROUP_ADVANTAGES
from rlhfkit.losses.grpo import (
    POLICY_LOSSES,
    PolicyLossOptions,
    dynamic_sampling_keep,
    overlong_keep,
    overlong_penalty,
)


def group_advantages(ro: Rollout, rewards: torch.Tensor, cfg) -> torch.Tensor:
    """[B, A]: each response's group-relative advantage of its return sum_t r_t (rewards
    [B, A], gamma 1) on every one of its tokens; each prompt's K samples sit in adjacent rows."""
    groups = ro.prompt_index.view(-1, cfg.samples_per_prompt)
    if not (groups == groups[:, :1]).all():  # the baseline would mix prompts
        raise RuntimeError("critic-free advantages need each prompt's samples in adjacent rows")
    per_response = GROUP_ADVANTAGES[cfg.advantage_estimator](rewards.sum(1), cfg.samples_per_prompt)  # [B]
    return per_response[:, None] * ro.response_mask.float()


def loss_options(cfg) -> PolicyLossOptions:
    """The policy loss's options from a PPOConfig."""
    return PolicyLossOptions(clip_low=cfg.clip_range, clip_high=cfg.clip_range_high or cfg.clip_range,
                             kl_coef=cfg.kl_coef if cfg.kl_placement == "loss" else 0.0,
                             kl_estimator=cfg.kl_estimator, max_length=cfg.response_length)


def policy_loss(cfg, logprobs, old_logprobs, advantages, mask, ref_logprobs):
    """POLICY_LOSSES[cfg.loss_type] on one micro-batch: (loss, metrics)."""
    return POLICY_LOSSES[cfg.loss_type](logprobs, old_logprobs, advantages, mask, ref_logprobs, loss_options(cfg))


def reward_beta(cfg, beta: float) -> float:
    """The KL coefficient of the reward: beta with --kl_placement reward, else 0."""
    return beta if cfg.kl_placement == "reward" else 0.0


def penalise_overlong(ro: Rollout, cfg) -> dict[str, float]:
    """--overlong penalty: DAPO's soft penalty added to ro.scores in place."""
    if cfg.overlong != "penalty":
        return {}
    penalty = overlong_penalty(ro.response_mask.sum(1), cfg.response_length, cfg.overlong_buffer)
    ro.scores = ro.scores + penalty
    return {"objective/overlong_penalty": float(penalty.mean())}


def keep_rows(ro: Rollout, cfg) -> tuple[Rollout, dict[str, float]]:
    """The rollout rows the update trains on (all of them unless --dynamic_sampling or
    --overlong filter). When nothing is left the
    whole rollout is kept: its advantages are all 0, so the update moves nothing but the
    KL term (if any) and logs as usual."""
    if not cfg.dynamic_sampling and cfg.overlong != "filter":
        return ro, {}
    keep = torch.ones_like(ro.eos, dtype=torch.bool)
    metrics: dict[str, float] = {}
    if cfg.dynamic_sampling:
        varied = dynamic_sampling_keep(ro.scores, cfg.samples_per_prompt)
        keep &= varied
        metrics["filter/varied_groups"] = float(varied.float().mean())
    if cfg.overlong == "filter":
        keep &= overlong_keep(ro.eos)
        metrics["filter/truncated"] = float((~ro.eos).float().mean())
    metrics["filter/kept"] = float(keep.float().mean())
    if not keep.any() or keep.all():
        return ro, metrics
    return ro.select(keep.nonzero().squeeze(1)), metrics
