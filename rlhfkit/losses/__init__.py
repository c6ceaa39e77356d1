"""Loss functions: pure, tensors in, ``(loss, metrics)`` out; torch is the only import.

Metrics are dicts of detached scalar tensors keyed from the project vocabulary
(``loss/policy``, ``policy/clipfrac``, ``rewards/accuracy``, ...).
"""
from rlhfkit.losses.advantages import (
    GROUP_ADVANTAGES,
    gae_advantages,
    grpo_advantages,
    rloo_advantages,
)
from rlhfkit.losses.common import (
    check_same_shape,
    entropy_from_logits,
    gather_logprobs,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    tie_half_accuracy,
)
from rlhfkit.losses.dpo import DPO_LOSSES, DPOLossConfig, PreferenceLogps, dpo_loss
from rlhfkit.losses.kl import KL_ESTIMATORS, AdaptiveKLController, FixedKLController, kl_penalty
from rlhfkit.losses.ppo import clipped_surrogate, explained_variance, ppo_value_loss
from rlhfkit.losses.reward import bradley_terry_pairs, pairwise_accuracy_by_gap, ranking_loss
from rlhfkit.losses.sft import masked_nll_loss

__all__ = [
    "DPO_LOSSES",
    "GROUP_ADVANTAGES",
    "KL_ESTIMATORS",
    "AdaptiveKLController",
    "DPOLossConfig",
    "FixedKLController",
    "PreferenceLogps",
    "bradley_terry_pairs",
    "check_same_shape",
    "clipped_surrogate",
    "dpo_loss",
    "entropy_from_logits",
    "explained_variance",
    "gae_advantages",
    "gather_logprobs",
    "grpo_advantages",
    "kl_penalty",
    "masked_mean",
    "masked_nll_loss",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "pairwise_accuracy_by_gap",
    "ppo_value_loss",
    "ranking_loss",
    "rloo_advantages",
    "tie_half_accuracy",
]
