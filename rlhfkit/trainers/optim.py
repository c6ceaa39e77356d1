"""The optimizer side of training: Adam(W) and the learning-rate schedule, built and
prepared for every stage (prepared_optimizer); gradient clipping, and skipping (then
stopping on) steps whose loss or gradients are not finite."""
from __future__ import annotations

import math

import torch

from rlhfkit.trainers.errors import DivergenceError

# Schedules after warmup. transformers.get_scheduler knows more names; these are the ones
# lr_schedule implements ("constant" keeps the warmup, as constant_with_warmup does).
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")


def lr_schedule(kind: str, total_steps: int, warmup_steps: int):
    """Multiplier of the peak learning rate at each optimizer step: linear warmup,
    then cosine ("cosine") or linear ("linear") decay to 0, or "constant".

    Not transformers.get_scheduler: its warmup multiplier is step / warmup, so its first
    optimizer step has learning rate 0 and trains nothing, where this one's is 1 / warmup
    (ours(s) == theirs(s + 1) during warmup); and its linear decay, (total - step) /
    (total - warmup), differs from 1 - progress in the last bit at some steps. After
    warmup, cosine and constant are the same bit for bit (tests/test_trainer_common.py);
    switching would change every run with a warmup, and resumed runs' numbers."""
    if kind not in SCHEDULERS:
        raise ValueError(f"unknown learning-rate schedule {kind!r}; choose one of {', '.join(SCHEDULERS)}")

    def multiplier(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if kind == "linear":
            return 1 - progress
        return 1.0
    return multiplier


def make_adam(params, *, lr: float, eps: float, weight_decay: float = 0.0, decoupled: bool = True):
    """Adam (PPO, weight decay 0) or AdamW, fused into one kernel per step where the
    build supports it (CPU and CUDA in current torch; about 3x faster than the
    per-tensor loop on small models, same update rule). `params`: tensors, or param
    groups (dicts with "params" and their own options, e.g. "lr")."""
    items = list(params)
    groups = items if items and isinstance(items[0], dict) else [{"params": items}]
    params = [g for g in ({**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups) if g["params"]]
    flat = [p for g in params for p in g["params"]]
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    kwargs = dict(lr=lr, eps=eps, weight_decay=weight_decay)
    fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in flat)
    if fusable:
        try:
            return cls(params, fused=True, **kwargs)
        except (RuntimeError, TypeError):  # e.g. a dtype or device the fused kernel lacks
            pass
    return cls(params, **kwargs)


def prepared_optimizer(accelerator, model, params, cfg, total_steps: int, schedule: str,
                       warmup_steps: int | None = None, decoupled: bool = True):
    """Adam(W) over `params` (tensors, or groups with their own "lr") with cfg's learning
    rate, eps and weight decay; the learning-rate schedule over total_steps (warmup_steps,
    by default cfg.warmup_ratio of them, then `schedule`); model and optimizer prepared
    by Accelerate. Returns (model, optimizer, scheduler)."""
    if warmup_steps is None:
        warmup_steps = int(cfg.warmup_ratio * total_steps)
    optimizer = make_adam(params, lr=cfg.learning_rate, eps=cfg.adam_eps, weight_decay=cfg.weight_decay,
                          decoupled=decoupled)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(schedule, total_steps, warmup_steps))
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, optimizer, scheduler


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
