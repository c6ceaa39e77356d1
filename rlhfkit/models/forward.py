"""Forward passes shared by every stage: token log-probs of a causal LM, per-token
scalar outputs of a reward/value model, and the score at a chosen token.

Padding may be on either side: position ids are always derived from the attention
mask, so a left-padded row gets the same positions, and the same log-probs, as
the unpadded sequence (docs/ppo.md, "Sampling").
"""
from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

from rlhfkit.losses.common import gather_logprobs


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """attention_mask [B,T] -> position ids [B,T]: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@functools.lru_cache(maxsize=None)
def _forward_params(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def forward_accepts(model: nn.Module, name: str) -> bool:
    """Whether the model's forward (the base model's, under PEFT) takes keyword `name`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in _forward_params(type(base))


def response_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    prompt_length: int, **kwargs):
    """Logits [B,A,V] at the positions that predict the response tokens
    input_ids[:, prompt_length:] (A = T - prompt_length), and the model output.

    Models that accept `logits_to_keep` (every current HF causal LM) project only
    the last A + 1 positions through the LM head: the prompt's logits are never
    used, and the head with its [*, V] softmax is a sizeable share of a small
    model's work."""
    A = input_ids.shape[1] - prompt_length
    keep = {"logits_to_keep": A + 1} if forward_accepts(model, "logits_to_keep") else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions_from_mask(attention_mask),
                use_cache=False, **keep, **kwargs)
    logits = out.logits[:, -(A + 1):-1]  # [B,A,V] position t predicts token t + 1
    return logits, out


def scale_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / T in float32. At T = 1 the division is skipped: x / 1.0 == x exactly, and
    on [B,A,V] logits it is a full pass (and another in backward) for nothing."""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def response_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      prompt_length: int, temperature: float = 1.0) -> torch.Tensor:
    """Log-probs of the response tokens of [left-padded prompt | response] rows.

    input_ids, attention_mask: [B,T] with T = prompt_length + A.
    Returns logprobs [B,A] for tokens input_ids[:, prompt_length:], computed from
    logits / temperature: the same temperature the sampler used, or the KL estimate
    is biased (docs/ppo.md).
    """
    logits, _ = response_logits(model, input_ids, attention_mask, prompt_length)
    logits = scale_logits(logits, temperature)  # [B,A,V] predicts tokens prompt_length..T-1
    return gather_logprobs(logits, input_ids[:, prompt_length:])


def _trunk(model: nn.Module) -> nn.Module:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix)


def last_hidden(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The trunk's final hidden states [B,T,H] of a causal LM or a sequence classifier
    (no LM head, no classification head)."""
    return _trunk(model)(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=positions_from_mask(attention_mask), use_cache=False).last_hidden_state


def token_scalars(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Scalar head applied at every position of a sequence-classification model.

    input_ids, attention_mask [B,T] -> [B,T]. Used for per-token values and for
    reading a reward at an explicit token index.
    """
    from rlhfkit.models.loading import scalar_head

    return scalar_head(model)(last_hidden(model, input_ids, attention_mask)).squeeze(-1).float()


def scores_at(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              index: torch.Tensor | None = None) -> torch.Tensor:
    """Reward read at one token per row: `index` [B], or each row's last real token.

    input_ids, attention_mask [B,T] -> scores [B].
    """
    values = token_scalars(model, input_ids, attention_mask)
    if index is None:
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        index = (positions * attention_mask.long()).argmax(-1)
    return values.gather(1, index.view(-1, 1)).squeeze(1)


def mean_logprob_scores(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        target_mask: torch.Tensor) -> torch.Tensor:
    """Mean log-likelihood of each row's response under a causal LM: SimPO's implicit
    reward without its beta (Meng et al. 2024, Eq. 4),

        s(x, y) = 1/|y| * sum_t log p(y_t | x, y_<t).

    input_ids, attention_mask, target_mask [B,T]; target_mask is 1 at the response
    tokens (the targets, as an SFT loss mask marks them) -> scores [B] in float32.
    A row without targets scores 0. Only the columns from the batch's first target on
    go through the LM head (response_logits): a left-padded PPO batch projects no prompt.
    """
    first = int(target_mask.any(0).long().argmax())  # first column holding any target
    start = max(first, 1)  # nothing predicts column 0
    logits, _ = response_logits(model, input_ids, attention_mask, start)  # [B,T-start,V]
    logprobs = gather_logprobs(logits, input_ids[:, start:])  # [B,T-start] float32
    mask = target_mask[:, start:].to(logprobs.dtype)
    return (logprobs * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def logratio_scores(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    target_mask: torch.Tensor) -> torch.Tensor:
    """Mean log-likelihood ratio of each row's response between a LogRatioRewardModel's
    policy and its frozen reference: a DPO-style implicit reward (Rafailov et al. 2023,
    Eq. 5, r = beta log pi/ref) taken per token, as SimPO takes its mean,

        s(x, y) = 1/|y| * sum_t [log pi(y_t | x, y_<t) - log ref(y_t | x, y_<t)].

    The reference's prior (a low likelihood of capital letters, say) cancels: only what
    training moved counts. Shapes as mean_logprob_scores; the reference adds no gradient."""
    with torch.no_grad():
        ref = mean_logprob_scores(model.reference, input_ids, attention_mask, target_mask)
    return mean_logprob_scores(model.policy, input_ids, attention_mask, target_mask) - ref


# reward_form -> raw score [B] of (model, input_ids, attention_mask, target_mask), before the scale
_SCORES = {
    "head": lambda model, ids, mask, target: scores_at(model, ids, mask),
    "mean_logprob": mean_logprob_scores,
    "logratio": logratio_scores,
}


def reward_scores(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  target_mask: torch.Tensor) -> torch.Tensor:
    """Raw (unnormalised) reward [B] of a reward model of any form (loading.reward_form):
    the scalar head at each row's last real token, scale x mean_logprob_scores, or
    scale x logratio_scores.

    input_ids, attention_mask, target_mask [B,T] (target_mask: 1 at the response tokens).
    """
    from rlhfkit.models.loading import reward_form

    form, scale = reward_form(model)
    scores = _SCORES[form](model, input_ids, attention_mask, target_mask)
    return scores if form == "head" else scale * scores
