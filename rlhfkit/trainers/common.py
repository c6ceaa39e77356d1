"""Glue every trainer shares: the Accelerator, seeding, metrics.jsonl, progress
bars, learning-rate schedules, and atomic resumable checkpoints."""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from rlhfkit.config import option, save_yaml


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
    checkpoint_every: int = option(0, "save a resumable checkpoint every N optimizer steps (0: never mid-run)")
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
        if self.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint so no step appears twice."""
        if not self.is_main or not self.path.exists():
            return
        rows = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and _row_step(line) <= step]
        self.path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")

    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        row = {"stage": self.stage, "step": step, **{k: _to_float(v) for k, v in metrics.items()}}
        if self.is_main:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        if self.accelerator is not None and self.accelerator.trackers:
            self.accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)
        return row


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 1 << 62  # a torn last line from a crash: dropped


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
    (out / "run_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")


def _git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ----------------------------------------------------------------------------- numerical faults

class DivergenceError(RuntimeError):
    """Too many consecutive non-finite steps; the last checkpoint is left intact."""


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
                                  "the last checkpoint is intact (lower the learning rate, or check the data/reward)")
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


# ----------------------------------------------------------------------------- checkpoints

class CheckpointError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    """RNG states in types torch.load(weights_only=True) accepts (no numpy pickles)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_python_rng(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])


def _as_python_rng(state):
    # torch.load(weights_only=True) returns lists where random.setstate needs tuples
    return (state[0], tuple(state[1]), state[2])


class CheckpointManager:
    """Atomic, verified, rotated checkpoints under `<output_dir>/checkpoints/step-N`.

    A checkpoint is written into a temporary directory with a manifest of file
    sizes and SHA-256 sums, then renamed into place, so a crash while saving never
    damages the previous one. Loading verifies the manifest and falls back to the
    newest intact checkpoint, reporting any damaged one by path.
    """

    def __init__(self, output_dir: str | Path, keep: int = 2, is_main: bool = True):
        self.root = Path(output_dir) / "checkpoints"
        self.keep = max(1, keep)
        self.is_main = is_main

    def save(self, step: int, tensors: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]) -> Path | None:
        """tensors: name -> state dict (saved as safetensors); state: everything else
        (optimizer, scheduler, RNG, data position), saved with torch.save and
        loaded back with weights_only=True."""
        if not self.is_main:
            return None
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f".tmp-step-{step:08d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            for name, sd in tensors.items():
                save_file({k: v.detach().cpu().clone() for k, v in sd.items()}, str(tmp / f"{name}.safetensors"))
            torch.save(state, tmp / "state.pt")
            manifest = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())}
            (tmp / "manifest.json").write_text(json.dumps({"step": step, "files": manifest}, indent=1))
            with open(tmp / "manifest.json", "rb+") as f:
                os.fsync(f.fileno())
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            hint = " (disk full: free space or lower keep_checkpoints)" if getattr(e, "errno", None) == 28 else ""
            raise CheckpointError(f"could not write checkpoint {final}: {e}{hint}") from e
        self._rotate()
        return final

    def _rotate(self) -> None:
        done = sorted(self.root.glob("step-*"))
        for old in done[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def verify(self, path: Path) -> str | None:
        """None when intact, else what is wrong."""
        manifest_path = path / "manifest.json"
        if not manifest_path.exists():
            return "no manifest.json (interrupted save?)"
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            return "manifest.json is not valid JSON"
        for name, meta in manifest["files"].items():
            f = path / name
            if not f.exists():
                return f"{name} is missing"
            if f.stat().st_size != meta["bytes"]:
                return f"{name} has {f.stat().st_size} bytes, manifest says {meta['bytes']}"
            if _sha256(f) != meta["sha256"]:
                return f"{name} checksum mismatch"
        return None

    def latest(self, log=print) -> Path | None:
        if not self.root.exists():
            return None
        for path in sorted(self.root.glob("step-*"), reverse=True):
            problem = self.verify(path)
            if problem is None:
                return path
            log(f"warning: checkpoint {path} is damaged ({problem}); falling back to an earlier one")
        return None

    def save_training(self, step: int, accelerator, models: dict[str, torch.nn.Module], optimizer, scheduler,
                      **extra: Any) -> Path | None:
        """Models (safetensors), optimizer, scheduler, RNG states and `extra` state."""
        return self.save(step, {name: accelerator.get_state_dict(m) for name, m in models.items()},
                         {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "rng": rng_state(), **extra})

    def resume_training(self, accelerator, models: dict[str, torch.nn.Module], optimizer, scheduler,
                        stage: str) -> tuple[int, dict[str, Any]]:
        """Restore the newest intact checkpoint into models, optimizer, scheduler and the
        RNGs; returns (its step, its state for extra fields), or (0, {}) when none."""
        path = self.latest(log=accelerator.print)
        if path is None:
            return 0, {}
        tensors, state = self.load(path)
        for name, model in models.items():
            accelerator.unwrap_model(model).load_state_dict(tensors[name], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        accelerator.print(f"resumed {stage} from {path} (step {state['step']})")
        return int(state["step"]), state

    @staticmethod
    def load(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
        from safetensors.torch import load_file

        tensors = {p.stem: load_file(str(p)) for p in path.glob("*.safetensors")}
        state = torch.load(path / "state.pt", weights_only=True)
        return tensors, state
