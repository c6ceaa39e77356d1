"""Policy losses of the critic-free family: GRPO and its fixes (Dr. GRPO, DAPO, GSPO),
one function per variant with one signature, chosen through ``POLICY_LOSSES``; and
DAPO's dynamic-sampling filter and soft overlong penalty (its overlong filter, keeping
the responses that ended with EOS, is one line in rlhfkit/trainers/ppo/dapo_filters.py).

Every variant averages the clipped surrogate of PPO (Schulman et al. 2017, eq. 7;
``clipped_surrogate`` in rlhfkit.losses.ppo, the one place it is written), optionally with an asymmetric clip and a KL term in the loss, and
differs in how per-token terms are averaged into one number:

    per-token   l_t = max(-A rho_t, -A clip(rho_t, 1 - eps_low, 1 + eps_high)) + beta * kl_t
    ppo, dapo   sum_{i,t} m l / sum_{i,t} m               (token mean over the batch)
    bnpo        the same token mean per micro-batch, the micro-batches weighed equally
    grpo        1/B sum_i (sum_t m l / sum_t m)            (mean per sequence, then over sequences)
    dr_grpo     sum_{i,t} m l / (B * L_max)                (a constant normaliser)
    gspo        1/B sum_i max(-A_i s_i, -A_i clip(s_i)),   s_i = exp(mean_t log rho_t)

rho_t = pi(y_t) / pi_old(y_t). ``UNITS`` says whether a variant averages over tokens
or sequences, so that a trainer summing micro-batch losses weighs each micro-batch by
its share of the minibatch's tokens or sequences (``micro_batch_weight``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhfkit.losses.common import check_same_shape, masked_mean, masked_sum
from rlhfkit.losses.kl import kl_penalty
from rlhfkit.losses.ppo import clipped_surrogate, ratio_metrics, token_surrogate


@dataclass(frozen=True)
class PolicyLossOptions:
    clip_low: float = 0.2  # eps_low: the ratio is clipped below at 1 - eps_low
    clip_high: float = 0.2  # eps_high: above at 1 + eps_high (DAPO clip-higher: 0.28)
    kl_coef: float = 0.0  # beta of a KL term in the loss (GRPO: 0.04); 0: none
    kl_estimator: str = "k3"  # the per-token KL estimator of that term (GRPO: k3)
    max_length: int = 0  # L_max of Dr. GRPO's normaliser: the response budget in tokens


def _token_terms(logprobs, old_logprobs, advantages, mask, ref_logprobs, opts: PolicyLossOptions):
    """Per-token clipped surrogate [B, A] (+ beta * kl_t) and the token-level metrics."""
    per_token, metrics = token_surrogate(logprobs, old_logprobs, advantages, mask, opts.clip_low, opts.clip_high)
    return per_token + _kl_term(logprobs, ref_logprobs, mask, opts, metrics), metrics


def _kl_term(logprobs, ref_logprobs, mask, opts: PolicyLossOptions, metrics: dict):
    """beta * kl_t [B, A] (GRPO, Shao et al. 2024 eq. 3-4: k3 of Schulman 2020), or 0."""
    if opts.kl_coef == 0:
        return 0.0
    if ref_logprobs is None:
        raise ValueError("a KL term in the loss needs ref_logprobs")
    check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    kl = kl_penalty(logprobs, ref_logprobs.detach(), opts.kl_estimator)  # [B, A], gradient through logprobs
    metrics["loss/kl"] = masked_mean(kl.detach(), mask)
    return opts.kl_coef * kl


def _finish(loss: torch.Tensor, metrics: dict) -> tuple[torch.Tensor, dict]:
    metrics["loss/policy"] = loss.detach()
    return loss, metrics


def token_mean_loss(
    logprobs: torch.Tensor,  # [B, A] log pi_theta of the sampled tokens
    old_logprobs: torch.Tensor,  # [B, A] log pi_old, from the rollout
    advantages: torch.Tensor,  # [B, A] advantages, no gradient
    mask: torch.Tensor,  # [B, A] 1 on valid response tokens
    ref_logprobs: torch.Tensor | None,  # [B, A] log pi_ref (needed when opts.kl_coef != 0)
    opts: PolicyLossOptions,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DAPO (Yu et al. 2025, eq. 8-10): the token-level mean over the whole batch, so a long
    response weighs by its length, with clip-higher (eps_high > eps_low). With a symmetric
    clip this is PPO's clipped surrogate as rlhfkit has always averaged it (``ppo``)."""
    per_token, metrics = _token_terms(logprobs, old_logprobs, advantages, mask, ref_logprobs, opts)
    return _finish(masked_mean(per_token, mask), metrics)


def sequence_mean_loss(logprobs, old_logprobs, advantages, mask, ref_logprobs, opts: PolicyLossOptions):
    """GRPO (Shao et al. 2024, DeepSeekMath eq. 3): the mean over each response's tokens, then
    over responses, 1/G sum_i 1/|o_i| sum_t l_{i,t}. Shapes as ``token_mean_loss``."""
    per_token, metrics = _token_terms(logprobs, old_logprobs, advantages, mask, ref_logprobs, opts)
    return _finish(masked_mean(per_token, mask, dim=1).mean(), metrics)


def constant_norm_loss(logprobs, old_logprobs, advantages, mask, ref_logprobs, opts: PolicyLossOptions):
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-like training", eq. 3): no 1/|o_i|
    (which favours long wrong answers and short right ones); the token sum is divided by
    the constant B * L_max instead. Pair with the ``dr_grpo`` advantage (no std division).
    Shapes as ``token_mean_loss``."""
    if opts.max_length <= 0:
        raise ValueError("dr_grpo needs opts.max_length, the response budget in tokens")
    per_token, metrics = _token_terms(logprobs, old_logprobs, advantages, mask, ref_logprobs, opts)
    return _finish(masked_sum(per_token, mask) / (mask.shape[0] * opts.max_length), metrics)


def sequence_ratio_loss(logprobs, old_logprobs, advantages, mask, ref_logprobs, opts: PolicyLossOptions):
    """GSPO (Zheng et al. 2025, eq. 5-7): one importance ratio per response, the geometric
    mean of its token ratios, clipped per response:

        s_i = (pi(y_i) / pi_old(y_i))^(1/|y_i|) = exp(1/|y_i| sum_t log rho_t)
        L   = 1/B sum_i max(-A_i s_i, -A_i clip(s_i, 1 - eps_low, 1 + eps_high))

    A_i is the mean of row i's advantages (one number per response in the critic-free
    path). The paper clips at eps 3e-4 / 4e-4: pass them as clip_low / clip_high. A KL
    term, when asked for, is averaged per response and added. ``policy/clipfrac`` counts
    responses. Shapes as ``token_mean_loss``."""
    check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    log_ratio = logprobs - old_logprobs.detach()  # [B, A]
    seq_log_ratio = masked_mean(log_ratio, mask, dim=1)  # [B]
    s = torch.exp(seq_log_ratio)
    adv = masked_mean(advantages.detach(), mask, dim=1)  # [B]
    per_seq, active = clipped_surrogate(s, adv, opts.clip_low, opts.clip_high)  # [B]
    metrics = ratio_metrics(s, active, torch.ones_like(s), log_ratio, mask)  # clipfrac counts responses
    kl = _kl_term(logprobs, ref_logprobs, mask, opts, metrics)
    if not isinstance(kl, float):
        per_seq = per_seq + masked_mean(kl, mask, dim=1)
    return _finish(per_seq.mean(), metrics)


POLICY_LOSSES = {
    "ppo": token_mean_loss,
    "dapo": token_mean_loss,
    "bnpo": token_mean_loss,  # TRL's bnpo: the token mean of each micro-batch ("local batch"), see UNITS
    "grpo": sequence_mean_loss,
    "dr_grpo": constant_norm_loss,
    "gspo": sequence_ratio_loss,
}
# bnpo weighs micro-batches by their rows like the sequence means: with equal micro-batches each counts
# 1/n, so its result depends on the micro-batch size (one row each: the grpo loss), as TRL's does.
UNITS = {"ppo": "token", "dapo": "token", "bnpo": "sequence", "grpo": "sequence", "dr_grpo": "sequence",
         "gspo": "sequence"}


def micro_batch_weight(
    loss_type: str,
    part_mask: torch.Tensor,  # [b, A] response mask of the micro-batch
    minibatch_mask: torch.Tensor,  # [B, A] response mask of the whole minibatch
) -> torch.Tensor:
    """Share of the minibatch's averaging units (tokens or sequences) in one micro-batch:
    summing weight * loss over micro-batches gives the minibatch loss exactly."""
    if UNITS[loss_type] == "token":
        return part_mask.sum() / minibatch_mask.sum().clamp(min=1)
    return torch.tensor(part_mask.shape[0] / minibatch_mask.shape[0], device=part_mask.device)


# ----------------------------------------------------------------------------- DAPO's filters

@torch.no_grad()
def dynamic_sampling_keep(
    scores: torch.Tensor,  # [B] sequence rewards, each prompt's K rows adjacent
    group_size: int,  # K
) -> torch.Tensor:
    """DAPO dynamic sampling (Yu et al. 2025, eq. 11): keep the groups whose rewards are not
    all equal; a group of equal rewards has group-relative advantage 0 and only dilutes the
    batch. Returns [B] bool, the same for every row of a group."""
    if scores.dim() != 1 or scores.shape[0] % group_size:
        raise ValueError(f"scores of shape {tuple(scores.shape)} do not split into groups of {group_size}")
    R = scores.view(-1, group_size)
    varied = (R != R[:, :1]).any(1)  # [B/K]
    return varied.repeat_interleave(group_size)


@torch.no_grad()
def overlong_penalty(
    lengths: torch.Tensor,  # [B] response lengths in tokens (EOS included)
    max_length: int,  # L_max, the response budget
    buffer: int,  # L_cache, the soft-penalty interval before L_max
) -> torch.Tensor:
    """DAPO soft overlong punishment (Yu et al. 2025, eq. 13), [B], added to the reward:

        0                                  if |y| <= L_max - L_cache
        ((L_max - L_cache) - |y|) / L_cache  if L_max - L_cache < |y| <= L_max
        -1                                 if |y| > L_max
    """
    if not 0 < buffer <= max_length:
        raise ValueError(f"overlong buffer must be in (0, max_length], got {buffer} (max_length {max_length})")
    y = lengths.float()
    start = max_length - buffer
    penalty = ((start - y) / buffer).clamp(max=0.0)
    return torch.where(y > max_length, torch.full_like(y, -1.0), penalty)
