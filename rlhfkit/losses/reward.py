"""Reward-model loss: Bradley-Terry over all ranked pairs of a prompt (InstructGPT).

Ouyang et al. 2022, eq. 1:
    loss(theta) = -1/C(K,2) E_{(x, y_w, y_l)} [log sigmoid(r(x, y_w) - r(x, y_l))]
All C(K,2) pairs of one prompt form a single batch element, so each response is
forwarded once and every prompt carries equal weight however many it ranked.

reward_model_loss adds the optional terms: reward centring (Eisenstein et al. 2023,
as TRL's center_rewards_coefficient) and length control after ODIN (Chen et al. 2024).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from rlhfkit.losses.common import tie_half_accuracy


def bradley_terry_pairs(K: int) -> list[tuple[int, int]]:
    """All C(K, 2) pairs (i, j), i ranked better than j, in ranking order.

    (0, 1), (0, 2), ..., (0, K-1), (1, 2), ..., (K-2, K-1).
    """
    return [(i, j) for i in range(K) for j in range(i + 1, K)]


def ranking_loss(
    rewards: torch.Tensor,  # [B, K] scalar rewards, best-ranked response first per prompt
    valid: torch.Tensor,  # [B, K] bool, False for padding slots of prompts with < K responses
    margin: torch.Tensor | None = None,  # [B] required reward gap (K = 2 only)
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """InstructGPT ranking loss (Ouyang et al. 2022, eq. 1), Bradley-Terry per pair.

    loss = mean over prompts b of  1/P_b * sum_{valid (i, j)} -log sigmoid(r_i - r_j - m_b)
    with P_b the number of valid pairs of prompt b (C(K_b, 2) when the valid slots
    are a prefix). Prompts with fewer than two valid responses are left out of
    the mean. ``margin`` is Llama 2's (Touvron et al. 2023, eq. 2) and only has a
    meaning for one pair per prompt, so it requires K = 2.

    Metrics (over all valid pairs pooled): ``loss/reward``, ``rewards/accuracy``
    (r_i > r_j; ties count 0.5), ``rewards/margin`` (mean r_i - r_j, margin not
    subtracted), ``rewards/chosen_mean`` / ``rewards/rejected_mean`` (mean reward of
    the better / worse member of each pair), ``rewards/mean`` / ``rewards/std``
    (over valid responses, for the pre-RL bias), ``pairs`` (count).
    """
    B, K = rewards.shape
    if valid.shape != rewards.shape:
        raise ValueError(f"valid {tuple(valid.shape)} must match rewards {tuple(rewards.shape)}")
    if margin is not None and K != 2:
        raise ValueError(f"margin needs exactly one pair per prompt (K = 2), got K = {K}")
    valid = valid.bool()
    # Padding slots may hold garbage: zero them so no nan reaches a gradient.
    r = torch.where(valid, rewards, torch.zeros_like(rewards))
    better, worse = zip(*bradley_terry_pairs(K)) if K >= 2 else ((), ())
    bi = torch.tensor(better, dtype=torch.long, device=r.device)
    wi = torch.tensor(worse, dtype=torch.long, device=r.device)
    diff = r[:, bi] - r[:, wi]  # [B, P]
    pair_ok = valid[:, bi] & valid[:, wi]  # [B, P]
    logits = diff if margin is None else diff - margin.to(diff.dtype)[:, None]
    nll = torch.where(pair_ok, -F.logsigmoid(logits), torch.zeros_like(logits))
    pairs_b = pair_ok.sum(1)  # [B]
    per_prompt = nll.sum(1) / pairs_b.clamp(min=1)
    has_pairs = pairs_b > 0
    loss = per_prompt.sum() / has_pairs.sum().clamp(min=1)

    n = pair_ok.sum().clamp(min=1)
    okf = pair_ok.float()
    with torch.no_grad():
        metrics = {
            "loss/reward": loss.detach(),
            "rewards/accuracy": (tie_half_accuracy(diff) * okf).sum() / n,
            "rewards/margin": (diff * okf).sum() / n,
            "rewards/chosen_mean": (r[:, bi] * okf).sum() / n,
            "rewards/rejected_mean": (r[:, wi] * okf).sum() / n,
            "rewards/mean": r[valid].mean() if valid.any() else r.new_zeros(()),
            "rewards/std": r[valid].std(unbiased=False) if valid.any() else r.new_zeros(()),
            "pairs": pair_ok.sum().float(),
        }
    return loss, metrics


def pairwise_accuracy_by_gap(
    score_diff: torch.Tensor,  # [N] score(better) - score(worse) for each labelled pair
    bins: Sequence[float] | int,
) -> list[tuple[float, float, float, int]]:
    """Accuracy as a function of |score gap|, for reward-model calibration.

    ``bins``: increasing edges on |score_diff| (e.g. [0, 0.5, 1, 2, inf]); bin k
    is [edge_k, edge_{k+1}), the last one closed. An int n asks for n equal-count
    bins from the quantiles of |score_diff|. A pair is correct when
    score_diff > 0; a tie counts 0.5, as in ``ranking_loss``. Returns one
    ``(gap_lo, gap_hi, accuracy, count)`` per bin; accuracy is nan for an empty bin.
    A calibrated Bradley-Terry model has accuracy near sigmoid(gap) in each bin.
    """
    d = score_diff.detach().flatten().double().cpu()
    gap = d.abs()
    if isinstance(bins, int):
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        if len(gap) == 0:
            return []
        edges = torch.quantile(gap, torch.linspace(0, 1, bins + 1, dtype=torch.float64)).tolist()
    else:
        edges = [float(e) for e in bins]
    if len(edges) < 2 or any(b < a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"bin edges must be increasing and at least two: {edges}")
    correct = tie_half_accuracy(d).double()
    out = []
    for k, (lo, hi) in enumerate(zip(edges, edges[1:])):
        last = k == len(edges) - 2
        in_bin = (gap >= lo) & ((gap <= hi) if last else (gap < hi))
        count = int(in_bin.sum())
        acc = float(correct[in_bin].mean()) if count else math.nan
        out.append((lo, hi, acc, count))
    return out


def _pair_weights(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(better index [P], worse index [P], weight [B, P]) with ranking_loss's weighting:
    1/P_b per valid pair of prompt b, over the prompts that have pairs, summing to 1."""
    K = valid.shape[1]
    better, worse = zip(*bradley_terry_pairs(K)) if K >= 2 else ((), ())
    bi = torch.tensor(better, dtype=torch.long, device=valid.device)
    wi = torch.tensor(worse, dtype=torch.long, device=valid.device)
    ok = (valid[:, bi] & valid[:, wi]).float()  # [B, P]
    per_prompt = ok.sum(1, keepdim=True)  # [B, 1]
    prompts = (per_prompt > 0).sum().clamp(min=1)
    return bi, wi, ok / per_prompt.clamp(min=1) / prompts


def centering_penalty(
    rewards: torch.Tensor,  # [B, K] scalar rewards
    valid: torch.Tensor,  # [B, K] bool
) -> torch.Tensor:
    """Eisenstein et al. 2023's auxiliary loss, as TRL's RewardTrainer adds it with
    ``center_rewards_coefficient``: (r(x, y_w) + r(x, y_l))^2, here averaged like
    ranking_loss (per prompt over its valid pairs, then over prompts). Bradley-Terry
    sees only differences, so nothing else pins the rewards' level; this keeps it near 0.
    For K = 2 it is TRL's mean((r_chosen + r_rejected)^2). Returns a scalar."""
    valid = valid.bool()
    r = torch.where(valid, rewards, torch.zeros_like(rewards))
    bi, wi, weight = _pair_weights(valid)
    return ((r[:, bi] + r[:, wi]) ** 2 * weight).sum()


@torch.no_grad()
def fit_length_term(
    rewards: torch.Tensor,  # [B, K] scalar rewards (the quality part)
    lengths: torch.Tensor,  # [B, K] response lengths (tokens)
    valid: torch.Tensor,  # [B, K] bool
    steps: int = 10,
    ridge: float = 0.1,
) -> torch.Tensor:
    """w minimising the Bradley-Terry loss of r + w * length over the batch's pairs
    (ranking_loss's weights), by Newton's method on this one convex variable: the
    length head of ODIN (Chen et al. 2024, sec. 4) reduced to the one feature it is
    meant to capture, and fitted exactly instead of learnt. A small ridge on w (in
    units of the pairs' RMS length difference) keeps it finite when length alone
    separates every pair. Returns a scalar tensor (no gradient)."""
    valid = valid.bool()
    r = torch.where(valid, rewards, torch.zeros_like(rewards)).float()
    lengths = torch.where(valid, lengths, torch.zeros_like(lengths)).float()
    bi, wi, weight = _pair_weights(valid)
    d = r[:, bi] - r[:, wi]  # [B, P]
    e = lengths[:, bi] - lengths[:, wi]  # [B, P]
    scale = ((e ** 2 * weight).sum()).sqrt().clamp(min=1e-6)  # RMS length difference
    e = e / scale
    w = torch.zeros((), dtype=torch.float32, device=r.device)
    for _ in range(steps):
        z = d + w * e
        p = torch.sigmoid(-z)  # d/dz of -log sigmoid(z) is -p
        grad = -(weight * e * p).sum() + ridge * w
        hess = (weight * e ** 2 * p * (1 - p)).sum() + ridge
        w = w - grad / hess
    return w / scale


def length_correlation(
    rewards: torch.Tensor,  # [B, K] scalar rewards
    lengths: torch.Tensor,  # [B, K] response lengths (tokens)
    valid: torch.Tensor,  # [B, K] bool
) -> torch.Tensor:
    """Pearson correlation of reward and length over the batch's valid responses
    (differentiable in the rewards): ODIN's length loss on the quality head
    (Chen et al. 2024, sec. 4) penalises its absolute value. 0 when either side
    is constant. Returns a scalar."""
    valid = valid.bool()
    r = rewards[valid].float()  # [N]
    n = lengths[valid].float()  # [N]
    if r.numel() < 2:
        return rewards.new_zeros(())
    rc, nc = r - r.mean(), n - n.mean()
    # eps inside the root: at constant rewards (a new model) sqrt'(0) would make the gradient nan
    denom = (rc.pow(2).sum() * nc.pow(2).sum() + 1e-12).sqrt()
    return (rc * nc).sum() / denom


def reward_model_loss(
    rewards: torch.Tensor,  # [B, K] scalar rewards, best-ranked response first per prompt
    valid: torch.Tensor,  # [B, K] bool
    lengths: torch.Tensor | None = None,  # [B, K] response lengths (tokens); needed when length_debias > 0
    margin: torch.Tensor | None = None,  # [B] (K = 2 only), as in ranking_loss
    center_coef: float = 0.0,
    length_debias: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reward model's training loss: ranking_loss, plus optionally

    - length control in the spirit of ODIN (Chen et al. 2024): the Bradley-Terry
      loss is taken on r + w * length, with w fitted on the batch (fit_length_term),
      so that the labelers' length preference is explained by the length term rather
      than learnt by r; and length_debias * |corr(r, length)| pushes what is left of
      length out of r. r alone is the reward that is saved and scored.
    - reward centring (Eisenstein et al. 2023; TRL's center_rewards_coefficient):
      center_coef * centering_penalty(r).

    The metrics are ranking_loss's on r alone, plus ``loss/total`` and, when used,
    ``loss/length_corr``, ``rewards/length_weight`` and ``loss/centering``."""
    loss, metrics = ranking_loss(rewards, valid, margin=margin)
    if length_debias > 0:
        if lengths is None:
            raise ValueError("length_debias needs the responses' lengths")
        w = fit_length_term(rewards.detach(), lengths, valid)
        loss, _ = ranking_loss(rewards + w * lengths.to(rewards.dtype), valid, margin=margin)
        rho = length_correlation(rewards, lengths, valid)
        loss = loss + length_debias * rho.abs()
        metrics["loss/length_corr"] = rho.detach()
        metrics["rewards/length_weight"] = w
    if center_coef > 0:
        penalty = centering_penalty(rewards, valid)
        loss = loss + center_coef * penalty
        metrics["loss/centering"] = penalty.detach()
    metrics["loss/total"] = loss.detach()
    return loss, metrics
