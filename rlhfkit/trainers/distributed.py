"""What several processes (accelerate launch) need so that they compute what one process
holding the global batch would: whitening with the global batch's statistics, each
process's share of a loss's averaging units, metrics averaged over processes, one gloo
group on a machine without CUDA. With one process every helper is the plain
single-process operation (docs/scale-out.md)."""
from __future__ import annotations

import os
from typing import Any

import torch

from rlhfkit.losses.common import masked_whiten
from rlhfkit.losses.grpo import UNITS


def cpu_only_launch() -> bool:
    """Launched as several processes (accelerate launch --multi_gpu, torchrun) on a machine
    without CUDA: join one gloo group. Accelerate would otherwise start every process as a
    run of its own, all writing one output directory. Accelerate 1.16 then runs DDP over
    gloo even when the launch asked for FSDP or DeepSpeed, which it only sets up with CUDA:
    say so rather than let a sharded config pass for tested (docs/scale-out.md)."""
    several = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if several and any(os.environ.get(f"ACCELERATE_USE_{e}", "").lower() == "true" for e in ("FSDP", "DEEPSPEED")):
        import warnings

        warnings.warn("FSDP and DeepSpeed need CUDA: on this CPU-only machine the processes run plain DDP over gloo, "
                      "with every parameter replicated", stacklevel=2)
    return several


def end_stage(accelerator) -> None:
    """Accelerator.end_training without its destroy_process_group: the trackers finish, and
    under several processes the next stage of a pipeline (one process runs sft, rm, ppo in
    turn) still has its process group."""
    for tracker in accelerator.trackers:
        tracker.finish()


def global_whiten(accelerator):
    """masked_whiten with the statistics of every process's rows: the global batch's, as one
    process holding it would compute them (one process: masked_whiten itself)."""
    if accelerator.num_processes == 1:
        return masked_whiten

    def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
        w = mask.to(x.dtype)  # [B, A]
        n, total = accelerator.reduce(torch.stack([w.sum(), (x * w).sum()]), "sum")
        mean = total / n.clamp(min=1)
        var = accelerator.reduce(((x - mean) ** 2 * w).sum(), "sum") / (n - 1).clamp(min=1)  # unbiased, as masked_var
        out = (x - mean) * torch.rsqrt(var + eps) + (0 if shift_mean else mean)
        return torch.where(w != 0, out, torch.zeros_like(out))
    return whiten


def process_share(accelerator, loss_type: str, minibatch_mask: torch.Tensor) -> float:
    """num_processes x this process's share of the global minibatch's averaging units
    (tokens or responses, rlhfkit.losses.grpo.UNITS). DDP averages the processes'
    gradients, so a loss scaled by this factor makes the step the one-process step on the
    global minibatch. 1 on one process. minibatch_mask: [B, A] this process's rows."""
    if accelerator.num_processes == 1:
        return 1.0
    units = minibatch_mask.sum() if UNITS[loss_type] == "token" else torch.tensor(minibatch_mask.shape[0])
    local = units.float().to(minibatch_mask.device)
    total = accelerator.reduce(local.clone(), "sum")
    return float(accelerator.num_processes * local / total.clamp(min=1))


def step_share(local_units: float, step_units: float, num_processes: int) -> float:
    """Weight of one micro-batch's mean loss in its optimizer step: the micro-batch's share
    of the step's averaging units (tokens, pairs, prompts) over every process, times
    num_processes since DDP averages the processes' gradients. Summing weight x loss over
    the micro-batches gives the mean over the whole step, as one batch on one process would.
    PPO takes the same share in two factors, micro_batch_weight x process_share, because its
    units (tokens or responses) depend on --loss_type."""
    return local_units * num_processes / max(step_units, 1)


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


def mean_over_processes(metrics: dict[str, Any], to_float) -> dict[str, Any]:
    """Each number averaged over the processes that have it (every process must call this,
    as MetricsLogger.log is called); other values (flags, lists) are this process's. A
    per-process mean over equal shards is the global mean; a per-process std or max is
    not the global one, only its average."""
    from accelerate.utils import gather_object

    numbers = {k: float(to_float(v)) for k, v in metrics.items()
               if not isinstance(v, bool) and isinstance(to_float(v), (int, float))}
    gathered = gather_object([numbers])
    out = dict(metrics)
    for key in numbers:
        values = [d[key] for d in gathered if key in d]
        out[key] = sum(values) / len(values)
    return out
