"""Reward-model loss: Bradley-Terry over all ranked pairs of a prompt (InstructGPT).

Ouyang et al. 2022, eq. 1:
    loss(theta) = -1/C(K,2) E_{(x, y_w, y_l)} [log sigmoid(r(x, y_w) - r(x, y_l))]
All C(K,2) pairs of one prompt form a single batch element, so each response is
forwarded once and every prompt carries equal weight however many it ranked.
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
