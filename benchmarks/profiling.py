"""Optional torch.profiler around a benchmark runner's training call.

Imported by run_rlhfkit.py and run_trl.py alike (no rlhfkit import here). With spec
"profile": PATH the call runs under the profiler (slower: a separate run, not a
timing) and PATH gets the wall time, the device's busy time, the aten-op and kernel
counts and the top ops by host and by device time; PATH with suffix .json the wall
time and the seconds in matrix products, attention and all ops (host_seconds).
"""
from __future__ import annotations

import json
import time
from pathlib import Path


def device_summary(averages) -> tuple[float, int]:
    """(seconds the device was busy, kernels launched) from a profile's key_averages()."""
    busy = sum(getattr(e, "self_device_time_total", 0.0) for e in averages) / 1e6  # microseconds -> seconds
    kernels = sum(e.count for e in averages if getattr(e, "self_device_time_total", 0.0) > 0)
    return busy, kernels


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def host_seconds(averages) -> dict[str, float]:
    """Seconds of the profiled run inside matrix products, inside attention kernels and in
    all ops, from the ops' own (self) times: on a CPU an op's time is the wall time it held
    the calling thread, whatever its intra-op thread count. The matrix products' share is
    a floor for any implementation of the same computation at that matmul speed."""
    def seconds(keep) -> float:
        return sum(e.self_cpu_time_total for e in averages if keep(e.key)) / 1e6  # microseconds -> seconds
    return {"matmul_seconds": seconds(lambda k: k in MATMUL_OPS),
            "attention_seconds": seconds(lambda k: "scaled_dot_product" in k or "flash_attention" in k),
            "op_seconds": seconds(lambda k: k.startswith("aten::"))}


def maybe_profiled(spec: dict, fn):
    path = spec.get("profile")
    if not path:
        return fn()
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        result = fn()
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - start
    averages = prof.key_averages()
    busy, kernels = device_summary(averages)
    aten = sum(e.count for e in averages if e.key.startswith("aten::"))
    lines = [f"wall {wall:.2f} s under the profiler; device busy {busy:.2f} s; aten ops {aten}; kernels {kernels}",
             averages.table(sort_by="self_cpu_time_total", row_limit=25)]
    if cuda:
        lines.append(averages.table(sort_by="self_device_time_total", row_limit=15))
    Path(path).write_text("\n".join(lines))
    Path(path).with_suffix(".json").write_text(json.dumps({"wall_seconds": wall, **host_seconds(averages)}))
    return result
