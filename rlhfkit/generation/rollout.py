"""The typed record of one PPO batch, filled phase by phase:
rollout -> score -> shape_rewards -> advantages (lm-human-preferences' step())."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Rollout:
    # rollout phase
    prompt_ids: torch.Tensor  # [B,P] left-padded prompt tokens
    prompt_mask: torch.Tensor  # [B,P]
    response_ids: torch.Tensor  # [B,A] sampled tokens, pad after the first EOS
    response_mask: torch.Tensor  # [B,A] 1 on tokens up to and including the first EOS
    eos: torch.Tensor  # [B] bool: the response ended with EOS
    prompt_index: torch.Tensor  # [B] index of each row's prompt record
    # the old policy's log-probs at the sampling temperature: the sampler's (rollout phase),
    # or recomputed in the score phase (--old_logprobs recompute)
    logprobs: torch.Tensor | None = None  # [B,A]
    # score phase
    ref_logprobs: torch.Tensor | None = None  # [B,A] reference log-probs, same temperature
    values: torch.Tensor | None = None  # [B,A] value estimate before emitting each response token
    scores: torch.Tensor | None = None  # [B] reward (after the missing-EOS penalty)
    # shape_rewards phase
    kl: torch.Tensor | None = None  # [B,A] per-token KL estimate to the reference (0 after EOS)
    rewards: torch.Tensor | None = None  # [B,A] -beta*kl, plus the score on the last response token
    # advantages phase
    advantages: torch.Tensor | None = None  # [B,A] GAE advantages (0 after EOS)
    returns: torch.Tensor | None = None  # [B,A] advantages + values

    @property
    def sequences(self) -> torch.Tensor:  # [B,P+A]
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:  # [B,P+A]
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    @property
    def prompt_length(self) -> int:
        return self.prompt_ids.shape[1]

    def select(self, index: torch.Tensor) -> Rollout:
        """Rows `index` [b] of every tensor field (a minibatch)."""
        return Rollout(**{f.name: (getattr(self, f.name)[index] if getattr(self, f.name) is not None else None)
                          for f in fields(self)})


def pad_to_length(x: torch.Tensor, length: int, value) -> torch.Tensor:
    """Right-pad the last dimension of x [B,n] to `length`."""
    if x.shape[1] >= length:
        return x
    return torch.cat([x, x.new_full((x.shape[0], length - x.shape[1]), value)], dim=1)


def concat_rollouts(parts: list[Rollout], pad_id: int) -> Rollout:
    """Join rollouts generated in chunks: prompts re-left-padded, responses right-padded."""
    P = max(r.prompt_ids.shape[1] for r in parts)
    A = max(r.response_ids.shape[1] for r in parts)

    def left(x, value):
        return torch.cat([x.new_full((x.shape[0], P - x.shape[1]), value), x], dim=1)

    out = {}
    for f in fields(Rollout):
        vals = [getattr(r, f.name) for r in parts]
        if vals[0] is None:
            out[f.name] = None
        elif f.name == "prompt_ids":
            out[f.name] = torch.cat([left(v, pad_id) for v in vals])
        elif f.name == "prompt_mask":
            out[f.name] = torch.cat([left(v, 0) for v in vals])
        elif vals[0].dim() == 2:
            fill = pad_id if f.name == "response_ids" else 0
            out[f.name] = torch.cat([pad_to_length(v, A, fill) for v in vals])
        else:
            out[f.name] = torch.cat(vals)
    return Rollout(**out)
