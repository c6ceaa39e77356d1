"""Deterministic data order of the dataset stages (sft, rm, dpo).

The whole run's batch order is a function of the seed: a sequence with one entry
per optimizer step, each a list of micro-batches of example indices, drawn an epoch
at a time as the steps ask for it. A resumed run therefore continues exactly where
it stopped by skipping to its step number; no sampler state needs saving.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from rlhfkit.data.loading import load_records
from rlhfkit.trainers.train_config import MAX_STEPS


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
    when fraction > 0 and there are two or more records, and at least one left to train
    on (else an error naming eval_fraction)."""
    if fraction <= 0 or len(records) < 2:
        return list(records), []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(fraction * len(records))))
    if n_eval >= len(records):
        raise ValueError(f"--eval_fraction {fraction:g} holds out {n_eval} of the {len(records)} records, leaving "
                         "none to train on; lower --eval_fraction, or pass --eval_data")
    held = set(order[:n_eval])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def training_plan(cfg, n_examples: int, accelerator, lengths=None):
    """The step plan of a dataset stage (run_plan), announced; an error when it has no
    optimizer step. `lengths` (tokens per example) is used when cfg.group_by_length."""
    plan = run_plan(cfg, n_examples, accelerator.num_processes, lengths)
    if not plan:
        raise ValueError("the plan has no optimizer steps (num_epochs too small for the data?); nothing would be trained")
    per_step = cfg.per_device_batch_size * accelerator.num_processes * cfg.gradient_accumulation_steps
    accelerator.print(f"plan: {len(plan)} optimizer steps of up to {per_step} examples "
                      f"({cfg.num_epochs:g} epoch(s) over {n_examples} examples)")
    return plan


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


class StepPlan(Sequence):
    """[optimizer step][micro-batch][example index], computed one epoch at a time when a
    step asks for it: its cost is that of the steps that run, not of num_epochs x records
    (see step_plan). Indexing returns a list of micro-batches; equality is by content."""

    def __init__(self, n_examples: int, micro_batch_size: int, accumulation: int, num_epochs: float, seed: int,
                 lengths: Sequence[int] | None = None):
        self.n, self.mb, self.accumulation, self.seed, self.lengths = (n_examples, micro_batch_size, accumulation,
                                                                       seed, lengths)
        n_total = math.ceil(num_epochs * n_examples)  # an exact int, however large num_epochs is
        self.full_epochs, self.last_epoch_examples = divmod(n_total, n_examples)
        self.per_epoch = -(-n_examples // micro_batch_size)  # micro-batches in a whole epoch (windows are whole batches)
        self.micro_total = self.full_epochs * self.per_epoch + -(-self.last_epoch_examples // micro_batch_size)
        self.steps = -(-self.micro_total // accumulation)
        self._cache: dict[int, list[list[int]]] = {}

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step):
        if isinstance(step, slice):
            return [self[i] for i in range(*step.indices(self.steps))]
        if step < 0:
            step += self.steps
        if not 0 <= step < self.steps:
            raise IndexError(f"step {step} out of range for a plan of {self.steps} steps")
        first = step * self.accumulation
        return [self._micro(j) for j in range(first, min(first + self.accumulation, self.micro_total))]

    def __eq__(self, other) -> bool:
        if isinstance(other, (StepPlan, list)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"StepPlan({self.steps} steps of {self.accumulation} x {self.mb} examples)"

    def _micro(self, j: int) -> list[int]:
        epoch, k = divmod(j, self.per_epoch)
        return self._epoch(epoch)[k]

    def _epoch(self, epoch: int) -> list[list[int]]:
        if epoch not in self._cache:
            count = self.n if epoch < self.full_epochs else self.last_epoch_examples
            self._cache = {epoch: self._epoch_batches(epoch, count)}  # the steps run in order: one epoch kept
        return self._cache[epoch]

    def _epoch_batches(self, epoch: int, count: int) -> list[list[int]]:
        """One epoch's micro-batches: a seeded permutation, its first `count` examples."""
        order = list(range(self.n))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        order = order[:count]
        mb = self.mb
        if self.lengths is None:
            return [order[i:i + mb] for i in range(0, len(order), mb)]
        window = GROUP_WINDOW * mb
        batches = []
        for w in range(0, len(order), window):
            chunk = sorted(order[w:w + window], key=lambda i: -self.lengths[i])
            batches.extend(chunk[i:i + mb] for i in range(0, len(chunk), mb))
        random.Random(self.seed * 1_000_003 + epoch + 7_777).shuffle(batches)
        return batches


def step_plan(n_examples: int, micro_batch_size: int, accumulation: int, num_epochs: float,
              seed: int, lengths: Sequence[int] | None = None) -> StepPlan:
    """[optimizer step][micro-batch][example index]: a fresh seeded permutation per
    epoch, cut into micro-batches; a fractional last epoch is truncated. The last
    micro-batch of an epoch may be short; nothing is dropped.

    With `lengths`, each window of GROUP_WINDOW micro-batches of the permutation is
    sorted by length before it is cut, and the epoch's micro-batches are then
    shuffled (the megabatch scheme of length-grouped samplers): every example is
    still seen once per epoch, with much less padding per micro-batch.

    The plan is a lazy sequence (StepPlan): its length is arithmetic and each epoch's
    order is drawn when its first step is asked for, so starting costs the same at
    1 epoch as at 10^6; more than MAX_STEPS steps is refused."""
    if n_examples == 0:
        raise ValueError("no training examples")
    if micro_batch_size < 1 or accumulation < 1 or not num_epochs > 0:  # the configs refuse these first
        raise ValueError(f"a step plan needs a batch size >= 1, accumulation >= 1 and num_epochs > 0; got "
                         f"{micro_batch_size}, {accumulation}, {num_epochs}")
    approx_steps = num_epochs * n_examples / micro_batch_size / accumulation  # a float: inf when absurd
    if not approx_steps <= MAX_STEPS:
        how_many = f"about {approx_steps:.3g}" if math.isfinite(approx_steps) else "uncountably many"
        raise ValueError(f"num_epochs {num_epochs:g} over {n_examples} examples makes {how_many} optimizer steps, "
                         f"more than {MAX_STEPS:.0e} (a million steps a second would take "
                         f"{approx_steps / 1e6 / 3.15e7:.3g} years); lower --num_epochs")
    plan = StepPlan(n_examples, micro_batch_size, accumulation, num_epochs, seed, lengths)
    return plan
