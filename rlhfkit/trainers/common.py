"""Glue every trainer shares: the Accelerator, seeding, metrics.jsonl, progress
bars, learning-rate schedules, the options every stage has (validated at
construction), and (from rlhfkit.trainers.checkpoint) resumable checkpoints."""
from __future__ import annotations

import difflib
import math
import random
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from accelerate import Accelerator

from rlhfkit.config import check_options, option, save_yaml
from rlhfkit.io import JsonlFile, write_json
from rlhfkit.trainers.checkpoint import (  # noqa: F401  (re-exported: trainers and tests import them from here)
    RESUME_MODES,
    CheckpointError,
    CheckpointManager,
    _row_step,
    rng_state,
    set_rng_state,
)
from rlhfkit.trainers.distributed import cpu_only_launch, mean_over_processes

# Schedules after warmup. transformers.get_scheduler knows more names; these are the ones
# lr_schedule implements ("constant" keeps the warmup, as constant_with_warmup does).
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # rlhfkit.models.loading.DTYPES


@dataclass
class TrainConfig:
    """Options every training stage shares."""

    output_dir: str = option("runs/out", "directory for the trained model, metrics.jsonl and checkpoints")
    seed: int = option(0, "random seed (data order, initialisation, sampling)")
    learning_rate: float = option(1e-4, "peak learning rate (AdamW)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    adam_eps: float = option(1e-8, "AdamW epsilon")
    warmup_ratio: float = option(0.0, "fraction of optimizer steps spent warming up linearly")
    max_grad_norm: float = option(1.0, "gradient clipping threshold (<= 0 disables)")
    per_device_batch_size: int = option(8, "examples per forward pass on each process")
    gradient_accumulation_steps: int = option(1, "forward passes accumulated per optimizer step")
    num_epochs: float = option(1.0, "passes over the training data (fractions allowed)")
    group_by_length: bool = option(False, "batch examples of similar length together (sorted within windows of "
                                   "50 batches of a random order, batches then shuffled): less padding, same data")
    max_length: int = option(512, "longest tokenised sequence; longer records are an error (or skipped with on_error=skip)")
    eval_fraction: float = option(0.05, "share of records held out for validation when no eval file is given")
    eval_every: int = option(0, "evaluate every N optimizer steps (0: at the end of training only)")
    log_every: int = option(10, "write metrics every N optimizer steps")
    checkpoint_every: int = option(0, "save a resumable checkpoint every N optimizer steps (0: by time only)")
    checkpoint_minutes: float = option(5.0, "also save a resumable checkpoint when this many minutes have passed "
                                       "since the last one (0: by steps only), so a kill loses at most that much")
    resume: str = option("auto", "auto: resume from the newest checkpoint when it was made with the same options "
                         "and data, else refuse and name what changed; force: resume from it anyway, with this "
                         "run's options applied (learning rate, schedule, ...)")
    keep_checkpoints: int = option(2, "how many recent checkpoints to keep on disk")
    dtype: str = option("float32", "model weights dtype: float32, bfloat16 or float16")
    mixed_precision: str = option("no", "Accelerate mixed precision: no, bf16 or fp16")
    gradient_checkpointing: bool = option(False, "recompute activations in backward to save memory")
    report_to: list[str] = option([], "Accelerate trackers, e.g. tensorboard, wandb")
    on_error: str = option("raise", "bad data records: raise (default) or skip and report counts")
    trust_remote_code: bool = option(False, "allow model code from the checkpoint (off: safer)")
    progress: bool = option(True, "show a progress bar")
    num_threads: int = option(0, "torch CPU threads (0: torch's default)")
    max_nonfinite_steps: int = option(3, "skip a step whose loss or gradient is not finite; stop after this many in a row")

    # Checked at construction (rlhfkit.config.check_options); subclasses add theirs.
    RULES: ClassVar[dict] = {
        "learning_rate": "> 0", "weight_decay": ">= 0", "adam_eps": "> 0", "warmup_ratio": "[0, 1]",
        "max_grad_norm": "finite", "per_device_batch_size": ">= 1", "gradient_accumulation_steps": ">= 1",
        "num_epochs": "> 0", "max_length": ">= 2", "eval_fraction": "[0, 1)", "eval_every": ">= 0",
        "log_every": ">= 1", "checkpoint_every": ">= 0", "checkpoint_minutes": ">= 0", "keep_checkpoints": ">= 1",
        "dtype": DTYPE_NAMES, "mixed_precision": ("no", "bf16", "fp16", "fp8"), "on_error": ("raise", "skip"),
        "num_threads": ">= 0", "max_nonfinite_steps": ">= 1", "resume": RESUME_MODES,
        "lr_scheduler": lambda v: _scheduler_problem(v), "lora_r": ">= 1", "lora_alpha": "> 0",
    }

    def __post_init__(self) -> None:
        check_options(self)


def _scheduler_problem(name: str) -> str | None:
    if name in SCHEDULERS:
        return None
    from transformers import SchedulerType

    known = "a transformers schedule rlhfkit does not implement" if name in {t.value for t in SchedulerType} \
        else "not a learning-rate schedule"
    close = difflib.get_close_matches(str(name), SCHEDULERS, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"lr_scheduler {name!r} is {known}; choose one of {', '.join(SCHEDULERS)}{hint}"


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
    accelerator = Accelerator(
        gradient_accumulation_steps=1,  # trainers accumulate explicitly, normalising by token counts
        cpu=cpu_only_launch(),
        mixed_precision=cfg.mixed_precision,
        log_with=cfg.report_to or None,
        project_dir=str(project_dir),
    )
    if cfg.report_to:  # TensorBoard / W&B through Accelerate's trackers; metrics.jsonl is always written
        flat = {k: v for k, v in vars(cfg).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(Path(project_dir).name or "rlhfkit", config=flat)
    set_seed(cfg.seed)
    return accelerator


def lr_schedule(kind: str, total_steps: int, warmup_steps: int, min_ratio: float = 0.0):
    """Multiplier of the peak learning rate at each optimizer step: linear warmup,
    then cosine ("cosine") or linear ("linear") decay to min_ratio, or "constant"."""
    if kind not in SCHEDULERS:
        raise ValueError(f"unknown learning-rate schedule {kind!r}; choose one of {', '.join(SCHEDULERS)}")

    def multiplier(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if kind == "cosine":
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if kind == "linear":
            return min_ratio + (1 - min_ratio) * (1 - progress)
        return 1.0
    return multiplier


class MetricsLogger:
    """Appends one JSON object per logged step to metrics.jsonl and forwards the
    same numbers to Accelerate's trackers (TensorBoard, W&B) when configured."""

    def __init__(self, path: str | Path, accelerator: Accelerator | None = None, stage: str = ""):
        self.path = Path(path)
        self.accelerator = accelerator
        self.stage = stage
        self.is_main = accelerator is None or accelerator.is_main_process
        self.file = JsonlFile(self.path, log=accelerator.print if accelerator is not None else print)
        if self.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    # name, rows, truncate, filter: what a CheckpointManager records and restores
    @property
    def name(self) -> str:
        return self.file.name

    @property
    def rows(self) -> int:
        return self.file.rows

    def truncate(self, rows: int) -> None:
        if self.is_main:
            self.file.truncate(rows)

    def filter(self, keep) -> None:
        if self.is_main:
            self.file.filter(keep)

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` so no step appears twice."""
        self.filter(lambda line: _row_step(line) <= step)

    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Append one row; a non-finite value is written as null (strict JSON) and said so."""
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            metrics = mean_over_processes(metrics, _to_float)
        row = {"stage": self.stage, "step": step, **{k: _to_float(v) for k, v in metrics.items()}}
        if self.is_main:
            self.file.append(row)
        if self.accelerator is not None and self.accelerator.trackers:
            self.accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)
        return row




def _to_float(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def progress_bar(total: int, desc: str, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=True)


@contextmanager
def timer(timings: dict[str, float], name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[f"timing/{name}"] = timings.get(f"timing/{name}", 0.0) + time.perf_counter() - start


def mean_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Average a list of metric dicts key by key (tensors or floats)."""
    out: dict[str, float] = {}
    for key in rows[0] if rows else []:
        vals = [_to_float(r[key]) for r in rows if key in r]
        out[key] = float(np.mean(vals))
    return out


def write_run_info(output_dir: str | Path, cfg: Any) -> None:
    """The resolved config, package versions and git revision, for reproducibility."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    import accelerate
    import transformers

    import rlhfkit

    info = {"rlhfkit": rlhfkit.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "python": sys.version.split()[0], "git_revision": _git_revision(),
            "argv": sys.argv}
    write_json(out / "run_info.json", info, indent=2)


def _git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ----------------------------------------------------------------------------- numerical faults

class DivergenceError(RuntimeError):
    """Too many consecutive non-finite steps; no checkpoint is written from them."""


class NonFiniteGuard:
    """Skips optimizer steps whose loss or gradients are not finite and stops the run
    after `max_consecutive` in a row, saying what diverged."""

    def __init__(self, max_consecutive: int, stage: str, log=print):
        self.max_consecutive, self.stage, self.log = max(1, max_consecutive), stage, log
        self.consecutive = 0
        self.skipped = 0

    def step_ok(self, step: int, losses: dict[str, float], named_parameters, grad_norm=None) -> bool:
        """True when every loss and gradient is finite; otherwise count, log, maybe raise.
        Call after backward, before optimizer.step(). `grad_norm` (the total norm
        from clipping) saves the per-tensor scan: it is finite exactly when every
        gradient is, so parameters are only named when it is not."""
        bad_losses = [k for k, v in losses.items() if not math.isfinite(v)]
        bad_params = []
        if not bad_losses and (grad_norm is None or not math.isfinite(float(grad_norm))):
            bad_params = _nonfinite_grads(named_parameters)
            if not bad_params and grad_norm is not None:  # finite gradients whose norm overflowed
                bad_params = ["(gradient norm overflows float32)"]
        if not bad_losses and not bad_params:
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        what = (f"non-finite {', '.join(bad_losses)}" if bad_losses
                else f"non-finite gradients in {', '.join(bad_params[:3])}{' ...' if len(bad_params) > 3 else ''}")
        self.log(f"{self.stage}: step {step}: {what}; step skipped ({self.consecutive} in a row)")
        if self.consecutive >= self.max_consecutive:
            raise DivergenceError(f"{self.stage} diverged at step {step}: {what} for {self.consecutive} steps in a row; "
                                  "no checkpoint was written from the diverged steps (lower the learning rate, or check the "
                                  "data/reward)")
        return False


def _nonfinite_grads(named_parameters) -> list[str]:
    return [name for name, p in named_parameters if p.grad is not None and not torch.isfinite(p.grad).all()]


def clip_gradients(accelerator, parameters, max_grad_norm: float) -> torch.Tensor:
    """Clip to `max_grad_norm` (<= 0: measure only) and return the total gradient
    norm before clipping: one fused pass that also tells NonFiniteGuard whether
    any gradient is non-finite (a non-finite norm leaves the step to be skipped)."""
    params = [p for p in parameters if p.grad is not None]
    if max_grad_norm > 0:
        return accelerator.clip_grad_norm_(params, max_grad_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in params]) if params else torch.zeros(())


def apply_step(accelerator, model, optimizer, scheduler, guard: NonFiniteGuard, step: int,
               losses: dict[str, float], max_grad_norm: float) -> dict[str, float]:
    """The end of every optimizer step: clip (the norm also tells the guard whether
    any gradient is non-finite), then step the optimizer and schedule, or skip a
    non-finite step. Gradients are zeroed either way. Returns the step's metrics:
    lr and grad_norm, or lr and skipped_nonfinite (the running count)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grad_norm = clip_gradients(accelerator, [p for _, p in named], max_grad_norm)
    ok = guard.step_ok(step, losses, named, grad_norm)
    if ok:
        optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    lr = scheduler.get_last_lr()[0]
    return {"lr": lr, "grad_norm": float(grad_norm)} if ok else {"lr": lr, "skipped_nonfinite": guard.skipped}


def make_adam(params, *, lr: float, eps: float, weight_decay: float = 0.0, decoupled: bool = True):
    """Adam (PPO, weight decay 0) or AdamW, fused into one kernel per step where the
    build supports it (CPU and CUDA in current torch; about 3x faster than the
    per-tensor loop on small models, same update rule). `params`: tensors, or param
    groups (dicts with "params" and their own options, e.g. "lr")."""
    items = list(params)
    if items and isinstance(items[0], dict):
        params = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in items]
        params = [g for g in params if g["params"]]
        flat = [p for g in params for p in g["params"]]
    else:
        params = flat = [p for p in items if p.requires_grad]
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    kwargs = dict(lr=lr, eps=eps, weight_decay=weight_decay)
    fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in flat)
    if fusable:
        try:
            return cls(params, fused=True, **kwargs)
        except (RuntimeError, TypeError):  # e.g. a dtype or device the fused kernel lacks
            pass
    return cls(params, **kwargs)
