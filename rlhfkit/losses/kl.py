"""Per-token KL penalty estimators and the KL coefficient controllers."""
from __future__ import annotations

import torch

from rlhfkit.losses.common import check_same_shape

# Estimators of KL(pi || pi_ref) from tokens x ~ pi, written in logr = log(pi_ref(x) / pi(x)).
# Schulman 2020, "Approximating KL divergence" (http://joschu.net/blog/kl-approx.html).


KL_ESTIMATORS = {
    "k1": lambda logr: -logr,  # unbiased, high variance, negative for individual tokens
    # biased but low variance; its expectation is an f-divergence close to KL near pi = pi_ref
    "k2": lambda logr: 0.5 * logr**2,
    # (r - 1) - log r: unbiased, low variance, never negative since log r <= r - 1; expm1 keeps
    # precision for r near 1, where the two terms almost cancel
    "k3": lambda logr: torch.expm1(logr) - logr,
}


def kl_penalty(
    logprobs: torch.Tensor,  # [B, A] log pi(x_t) of the sampled response tokens
    ref_logprobs: torch.Tensor,  # [B, A] log pi_ref(x_t) of the same tokens
    estimator: str = "k1",
) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref), [B, A]; masking is the caller's job.

    With logr = ref_logprobs - logprobs (Schulman 2020):
      k1 = -logr               (= log pi - log pi_ref)
      k2 = logr^2 / 2
      k3 = (exp(logr) - 1) - logr   (>= 0)
    The estimates are valid only for tokens sampled from pi itself, at the same
    temperature; otherwise their mean is biased and can go negative.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; options: {sorted(KL_ESTIMATORS)}")
    check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    return KL_ESTIMATORS[estimator](ref_logprobs - logprobs)


class FixedKLController:
    """A constant KL coefficient beta (InstructGPT: 0.02)."""

    def __init__(self, init_value: float):
        self.value = float(init_value)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt; present so trainers treat both controllers alike."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional controller steering KL toward a target (Ziegler et al. 2019, sec. 2.2).

    e_t = clip(KL_t / target - 1, -0.2, 0.2);  beta_{t+1} = beta_t (1 + K_beta e_t),
    with K_beta = n_steps / horizon (n_steps: episodes in this update).
    lm-human-preferences defaults: target 6 nats, horizon 10,000.
    """

    def __init__(self, init_value: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be positive, got {target}, {horizon}")
        self.value = float(init_value)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        # The clip bounds each step's relative change, so one noisy KL estimate cannot
        # swing beta far.
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.target = float(state.get("target", self.target))
        self.horizon = float(state.get("horizon", self.horizon))
