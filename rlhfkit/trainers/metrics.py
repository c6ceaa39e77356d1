"""What a run reports as it goes: metrics.jsonl rows (also sent to Accelerate's
trackers), the progress bar, phase timings, and averages of metric rows."""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from rlhfkit.io import JsonlFile
from rlhfkit.trainers.distributed import mean_over_processes


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
