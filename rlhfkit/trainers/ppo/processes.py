"""What several processes (accelerate launch) need for a PPO step to be the one a single
process holding the global batch would take: whitening with the global batch's statistics,
each process's share of the loss's averaging units, the global mean KL, and a sampling
stream per process. With one process every helper is the plain single-process operation
(docs/scale-out.md)."""
from __future__ import annotations

import functools

import torch

from rlhfkit.losses.common import masked_whiten
from rlhfkit.losses.grpo import UNITS
from rlhfkit.trainers.distributed import step_share


def global_whiten(accelerator):
    """masked_whiten with the statistics of every process's rows: the global batch's, as one
    process holding it would compute them (one process: masked_whiten itself)."""
    if accelerator.num_processes == 1:
        return masked_whiten
    return functools.partial(masked_whiten, reduce=lambda t: accelerator.reduce(t, "sum"))


def process_share(accelerator, loss_type: str, minibatch_mask: torch.Tensor) -> float:
    """num_processes x this process's share of the global minibatch's averaging units
    (tokens or responses, rlhfkit.losses.grpo.UNITS). DDP averages the processes'
    gradients, so a loss scaled by this factor makes the step the one-process step on the
    global minibatch. 1 on one process. minibatch_mask: [B, A] this process's rows."""
    if accelerator.num_processes == 1:
        return 1.0
    units = minibatch_mask.sum() if UNITS[loss_type] == "token" else torch.tensor(minibatch_mask.shape[0])
    local = units.float().to(minibatch_mask.device)
    return step_share(float(local), float(accelerator.reduce(local.clone(), "sum")), accelerator.num_processes)


def global_mean(accelerator, value: float) -> float:
    """The mean of a number over processes (every process must call it)."""
    if accelerator.num_processes == 1:
        return value
    return accelerator.reduce(torch.tensor(float(value), device=accelerator.device), "mean").item()


def seed_per_process(accelerator, seed: int) -> None:
    """Give each process its own sampling stream (they would otherwise draw the same
    responses to different prompts with the same random numbers). No-op on one process."""
    if accelerator.num_processes > 1:
        torch.manual_seed(seed + 1_000_003 * accelerator.process_index)
