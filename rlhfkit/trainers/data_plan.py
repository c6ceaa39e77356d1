"""Deterministic data order shared by the trainers.

The whole run's batch order is computed up front from the seed: a list with one
entry per optimizer step, each a list of micro-batches of example indices. A
resumed run therefore continues exactly where it stopped by skipping to its step
number; no sampler state needs saving.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any


def load_records(loader: Callable[..., Any], path: str, columns, on_error: str, accelerator=None,
                 split: str | None = None) -> list:
    """Call a data loader (`split`: a DatasetDict's split, None for the loader's default);
    with on_error="skip", print how much was skipped and why."""
    records = loader(path, columns=columns, on_error=on_error, split=split or None)
    report = getattr(records, "skipped", None)
    if report:
        (accelerator.print if accelerator else print)(f"{path}: {report.summary()}")
    return records


def train_and_eval_records(loader: Callable[..., Any], cfg, columns, accelerator=None) -> tuple[list, list]:
    """(training records, held-out records) of a dataset stage: the training split of
    cfg.data; held out, cfg.eval_data if given, else cfg.data's dataset_test_split if
    given, else a seeded eval_fraction of the training records."""
    records = load_records(loader, cfg.data, columns, cfg.on_error, accelerator, split=cfg.dataset_train_split)
    if cfg.eval_data:
        return records, load_records(loader, cfg.eval_data, columns, cfg.on_error, accelerator)
    if cfg.dataset_test_split:
        return records, load_records(loader, cfg.data, columns, cfg.on_error, accelerator, split=cfg.dataset_test_split)
    return split_holdout(records, cfg.eval_fraction, cfg.seed)


def split_holdout(records: Sequence, fraction: float, seed: int) -> tuple[list, list]:
    """Seeded random split into (train, held-out); at least one held-out record
    when fraction > 0 and there are two or more records."""
    if fraction <= 0 or len(records) < 2:
        return list(records), []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(fraction * len(records))))
    held = set(order[:n_eval])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def optimization(cfg, model, n_examples: int, accelerator, lengths=None, params=None):
    """AdamW over the trainable parameters, the run's step plan and its learning-rate
    schedule (warmup, then cfg.lr_scheduler); model and optimizer prepared by
    Accelerate. `lengths` (tokens per example) is used when cfg.group_by_length;
    `params`, parameter groups with their own "lr", replace model.parameters().
    Returns (model, optimizer, scheduler, plan)."""
    import torch

    from rlhfkit.trainers.optim import lr_schedule, make_adam

    optimizer = make_adam(model.parameters() if params is None else params, lr=cfg.learning_rate,
                          weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
    plan = run_plan(cfg, n_examples, accelerator.num_processes, lengths)
    if not plan:
        raise ValueError("the plan has no optimizer steps (num_epochs too small for the data?); nothing would be trained")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_schedule(cfg.lr_scheduler, len(plan), int(cfg.warmup_ratio * len(plan))))
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, optimizer, scheduler, plan


def run_plan(cfg, n_examples: int, num_processes: int = 1, lengths=None) -> list[list[list[int]]]:
    """The step plan of a dataset stage: num_epochs passes, or, with max_steps, exactly
    max_steps optimizer steps over as many passes as they take (TrainingArguments' max_steps)."""
    args = (n_examples, cfg.per_device_batch_size * num_processes, cfg.gradient_accumulation_steps)
    grouped = lengths if getattr(cfg, "group_by_length", False) else None
    if not getattr(cfg, "max_steps", 0):
        return step_plan(*args, cfg.num_epochs, cfg.seed, grouped)
    per_epoch = len(step_plan(*args, 1.0, cfg.seed))
    return step_plan(*args, float(math.ceil(cfg.max_steps / per_epoch)), cfg.seed, grouped)[: cfg.max_steps]


GROUP_WINDOW = 50  # micro-batches whose examples are sorted together when grouping by length


def step_plan(n_examples: int, micro_batch_size: int, accumulation: int, num_epochs: float,
              seed: int, lengths: Sequence[int] | None = None) -> list[list[list[int]]]:
    """[optimizer step][micro-batch][example index]: a fresh seeded permutation per
    epoch, cut into micro-batches; a fractional last epoch is truncated. The last
    micro-batch of an epoch may be short; nothing is dropped.

    With `lengths`, each window of GROUP_WINDOW micro-batches of the permutation is
    sorted by length before it is cut, and the epoch's micro-batches are then
    shuffled (the megabatch scheme of length-grouped samplers): every example is
    still seen once per epoch, with much less padding per micro-batch."""
    if n_examples == 0:
        raise ValueError("no training examples")
    if micro_batch_size < 1 or accumulation < 1 or not num_epochs > 0:  # the configs refuse these first
        raise ValueError(f"a step plan needs a batch size >= 1, accumulation >= 1 and num_epochs > 0; got "
                         f"{micro_batch_size}, {accumulation}, {num_epochs}")
    micro: list[list[int]] = []
    n_total = int(math.ceil(num_epochs * n_examples))
    epoch = 0
    while sum(len(m) for m in micro) < n_total:
        order = list(range(n_examples))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        order = order[: n_total - sum(len(m) for m in micro)]
        if lengths is None:
            micro.extend(order[i:i + micro_batch_size] for i in range(0, len(order), micro_batch_size))
        else:
            window = GROUP_WINDOW * micro_batch_size
            batches = []
            for w in range(0, len(order), window):
                chunk = sorted(order[w:w + window], key=lambda i: -lengths[i])
                batches.extend(chunk[i:i + micro_batch_size] for i in range(0, len(chunk), micro_batch_size))
            random.Random(seed * 1_000_003 + epoch + 7_777).shuffle(batches)
            micro.extend(batches)
        epoch += 1
    return [micro[i:i + accumulation] for i in range(0, len(micro), accumulation)]


def episode_prompts(n_prompts: int, step: int, local: int, rank: int, seed: int, k: int = 1,
                    world: int = 1) -> list[int]:
    """PPO's prompt indices for one process at one step, each repeated k times in a row
    (the `local` // k prompts of the step): a seeded permutation per pass over the
    prompts, so a resumed run sees exactly the prompts it would have. Under `world`
    processes the step's prompts are one sequence cut into contiguous shards, shard
    `rank` to this process: no two processes draw the same prompt, and together they draw
    what one process would (the same global batch)."""
    import torch

    local //= k
    start = (step * world + rank) * local  # prompts every process consumed before this shard
    perms: dict[int, list[int]] = {}
    out = []
    for e in range(start, start + local):
        cycle, pos = divmod(e, n_prompts)
        if cycle not in perms:
            gen = torch.Generator().manual_seed(seed * 7919 + cycle * 31)
            perms[cycle] = torch.randperm(n_prompts, generator=gen).tolist()
        out.extend([perms[cycle][pos]] * k)
    return out
