"""The Accelerator a stage runs under, and the seeding every stage starts from."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from rlhfkit.trainers.distributed import cpu_only_launch
from rlhfkit.trainers.trackers import check_started, prepare_environment, resolve_trackers
from rlhfkit.trainers.train_config import TrainConfig


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _allow_new_mixed_precision(mixed_precision: str) -> None:
    """Accelerate keeps one process-wide state and refuses a second Accelerator with another
    mixed precision ("AcceleratorState has already been initialized"), which would stop a
    pipeline whose stages differ in precision. Only the precision part is reset: the
    distributed state (PartialState: process group, device) stays as it is."""
    from accelerate.state import AcceleratorState

    shared = getattr(AcceleratorState, "_shared_state", None)  # private: absent in some version, do nothing
    current = shared.get("_mixed_precision") if isinstance(shared, dict) else None
    if current is not None and current != mixed_precision and hasattr(AcceleratorState, "_reset_state"):
        AcceleratorState._reset_state(reset_partial_state=False)


def make_accelerator(cfg: TrainConfig, project_dir: str | Path) -> Accelerator:
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    _allow_new_mixed_precision(cfg.mixed_precision)
    trackers = resolve_trackers(cfg.report_to)  # names checked, packages found: TrainConfig's RULES
    prepare_environment(trackers)
    accelerator = Accelerator(
        gradient_accumulation_steps=1,  # trainers accumulate explicitly, normalising by token counts
        cpu=cpu_only_launch(),
        mixed_precision=cfg.mixed_precision,
        log_with=trackers or None,
        project_dir=str(project_dir),
    )
    if trackers:  # TensorBoard / W&B / ... through Accelerate's trackers; metrics.jsonl is always written
        flat = {k: v for k, v in vars(cfg).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(Path(project_dir).name or "rlhfkit", config=flat)
        check_started(accelerator, trackers)
    set_seed(cfg.seed)
    return accelerator
