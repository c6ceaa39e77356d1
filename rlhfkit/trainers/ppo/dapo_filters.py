"""DAPO's changes to a PPO step's rollout (Yu et al. 2025), which run only with --overlong
penalty (a soft penalty on the scores) or --dynamic_sampling / --overlong filter (the rows
the update keeps). The math lives in rlhfkit.losses.grpo."""
from __future__ import annotations

import torch

from rlhfkit.generation.rollout import Rollout
from rlhfkit.losses.grpo import dynamic_sampling_keep, overlong_penalty


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
        keep &= ro.eos.bool()  # DAPO (sec. 3.4): a response cut at the length limit is not judged
        metrics["filter/truncated"] = float((~ro.eos).float().mean())
    metrics["filter/kept"] = float(keep.float().mean())
    if not keep.any() or keep.all():
        return ro, metrics
    return ro.select(keep.nonzero().squeeze(1)), metrics
