"""What several processes (accelerate launch) need so that every trainer computes what one
process holding the global batch would: each micro-batch's share of a step's averaging
units, metrics averaged over processes, one gloo group on a machine without CUDA, a stage
end that keeps the process group. PPO's own (whitening, its loss units, per-process
sampling seeds) are in rlhfkit/trainers/ppo/processes.py. With one process every helper
is the plain single-process operation (docs/scale-out.md)."""
from __future__ import annotations

import os
from typing import Any

import torch


def cpu_only_launch() -> bool:
    """Launched as several processes (accelerate launch --multi_gpu, torchrun) on a machine
    without CUDA: join one gloo group. Accelerate would otherwise start every process as a
    run of its own, all writing one output directory. Accelerate 1.16 then runs DDP over
    gloo even when the launch asked for FSDP or DeepSpeed, which it only sets up with CUDA:
    say so rather than let a sharded config pass for tested (docs/scale-out.md)."""
    several = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if several and any(os.environ.get(f"ACCELERATE_USE_{e}", "").lower() == "true" for e in ("FSDP", "DEEPSPEED")):
        import warnings

        warnings.warn("FSDP and DeepSpeed need CUDA: without CUDA the processes run plain DDP over gloo, "
                      "with every parameter replicated", stacklevel=2)
    return several


def end_stage(accelerator) -> None:
    """Accelerator.end_training without its destroy_process_group: the trackers finish, and
    under several processes the next stage of a pipeline (one process runs sft, rm, ppo in
    turn) still has its process group."""
    for tracker in accelerator.trackers:
        tracker.finish()


def step_share(local_units: float, step_units: float, num_processes: int) -> float:
    """Weight of one micro-batch's mean loss in its optimizer step: the micro-batch's share
    of the step's averaging units (tokens, pairs, prompts) over every process, times
    num_processes since DDP averages the processes' gradients. Summing weight x loss over
    the micro-batches gives the mean over the whole step, as one batch on one process would.
    PPO takes the same share in two factors, micro_batch_weight x process_share, because its
    units (tokens or responses) depend on --loss_type."""
    return local_units * num_processes / max(step_units, 1)


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
