"""Supervised fine-tuning: next-token negative log-likelihood on the answer tokens."""
from __future__ import annotations

import torch

from rlhfkit.losses.common import gather_logprobs, masked_mean


def masked_nll_loss(
    logits: torch.Tensor,  # [B, T, V] causal-LM logits; position t predicts input_ids[t + 1]
    input_ids: torch.Tensor,  # [B, T] token ids
    loss_mask: torch.Tensor,  # [B, T] 1 where the *target* token input_ids[t] is trained on
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean next-token NLL over the counted target tokens of the whole batch.

    -log p(input_ids[t] | input_ids[:t]) for every t >= 1 with loss_mask[t] = 1,
    averaged over all counted tokens of the batch (a token mean, so long answers
    weigh more than short ones, as in nanoGPT and HF's causal-LM loss).
    ``loss_mask[:, 0]`` is ignored: nothing predicts the first token.
    Gradient accumulation weighs each micro-batch's mean by its share of the step's
    tokens (rlhfkit.trainers.distributed.step_share).

    Metrics: ``loss/nll`` (the loss), ``tokens``.
    """
    if input_ids.shape != loss_mask.shape or logits.shape[:2] != input_ids.shape:
        raise ValueError(
            f"shape mismatch: logits {tuple(logits.shape)}, input_ids "
            f"{tuple(input_ids.shape)}, loss_mask {tuple(loss_mask.shape)}"
        )
    # Shift: logits[:, t] scores input_ids[:, t + 1].
    logprobs = gather_logprobs(logits[:, :-1], input_ids[:, 1:])  # [B, T-1]
    mask = loss_mask[:, 1:].to(logprobs.dtype)  # [B, T-1]
    nll = -logprobs
    loss = masked_mean(nll, mask)
    tokens = mask.sum()
    metrics = {
        "loss/nll": loss.detach(),
        "tokens": tokens.detach(),
    }
    return loss, metrics
