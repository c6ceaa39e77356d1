"""The policy and its value function behind one module, so PPO's score and update
phases need not know which layout is in use:

- separate: a value model of its own (AutoModelForSequenceClassification), by
  default initialised from the reward model (InstructGPT, the N+ details);
- shared: a zero-initialised scalar head on the policy's last hidden state
  (lm-human-preferences), one forward pass for log-probs and values;
- none: the policy alone, for critic-free estimators (RLOO, GRPO) whose baseline
  is the other samples of the same prompt; values are then None.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from rlhfkit.models.forward import last_hidden, response_logits, scale_logits, token_scalars


class ActorCritic(nn.Module):
    def __init__(self, policy: nn.Module, value_model: nn.Module | None = None, critic: bool = True):
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        if value_model is None and critic:
            hidden = policy.config.get_text_config().hidden_size
            self.value_head = nn.Linear(hidden, 1)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        else:
            self.value_head = None

    @property
    def shared(self) -> bool:
        return self.value_head is not None

    @property
    def has_critic(self) -> bool:
        return self.value_model is not None or self.value_head is not None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int,
                temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids, attention_mask [b,P+A] -> (response logits / T [b,A,V] float32,
        values [b,A]: the value before emitting each response token, None without a critic)."""
        P = prompt_length
        if not self.shared:  # the policy's pass, then the value model's (if any)
            return (self.policy_logits(input_ids, attention_mask, P, temperature),
                    self.values(input_ids, attention_mask, P) if self.has_critic else None)
        logits, out = response_logits(self.policy, input_ids, attention_mask, P, output_hidden_states=True)
        return scale_logits(logits, temperature), self._head_values(out.hidden_states[-1][:, P - 1:-1])

    def policy_logits(self, input_ids, attention_mask, prompt_length: int, temperature: float) -> torch.Tensor:
        """Response logits / T [b,A,V] from the policy alone."""
        logits, _ = response_logits(self.policy, input_ids, attention_mask, prompt_length)
        return scale_logits(logits, temperature)

    def values(self, input_ids, attention_mask, prompt_length: int) -> torch.Tensor:
        """Values [b,A] alone: the separate value model's, or the head's on the policy trunk
        (its pass stops before the LM head, whose logits the sampler already had)."""
        P = prompt_length
        if self.shared:
            return self._head_values(last_hidden(self.policy, input_ids, attention_mask)[:, P - 1:-1])
        return token_scalars(self.value_model, input_ids, attention_mask)[:, P - 1:-1]

    def _head_values(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [b,A,H] of the policy trunk -> values [b,A] in float32."""
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()

    def critic_parameters(self) -> list[nn.Parameter]:
        module = self.value_head if self.shared else self.value_model
        return list(module.parameters()) if module is not None else []

    def reference_context(self):
        """Adapter disabled: the LoRA policy's own base weights are the reference."""
        if hasattr(self.policy, "disable_adapter"):
            return self.policy.disable_adapter()
        return contextlib.nullcontext()
