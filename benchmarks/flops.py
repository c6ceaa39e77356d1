"""FLOP accounting, matmul peak and the results table of benchmarks/bench.py.

Pure Python except `matmul_peak` (torch); imported by tests/test_benchmarks.py.
"""
from __future__ import annotations

import math
import statistics
import time

# ----------------------------------------------------------------------------- parameters


def llama_params(vocab: int, hidden: int, layers: int, intermediate: int, heads: int | None = None,
                 kv_heads: int | None = None, tied: bool = True, head_outputs: int = 0) -> dict[str, int]:
    """Parameter count of a Llama-style decoder (no biases, RMSNorm with a weight).

    `head_outputs` > 0 adds a bias-free scalar/score head (sequence classifier);
    with tied=False and head_outputs == 0 an untied LM head of vocab x hidden is added.
    Returns {"embedding", "non_embedding", "total"}; the embedding is counted once
    (tied: it is also the output projection, so its matmul is real work).
    """
    heads = heads or max(1, hidden // 64)
    kv_heads = kv_heads or heads
    head_dim = hidden // heads
    attn = hidden * hidden * 2 + 2 * hidden * kv_heads * head_dim  # q, o + k, v
    mlp = 3 * hidden * intermediate  # gate, up, down
    norms = 2 * hidden
    per_layer = attn + mlp + norms
    non_embedding = layers * per_layer + hidden  # + final norm
    if head_outputs:
        non_embedding += hidden * head_outputs
    elif not tied:
        non_embedding += vocab * hidden
    embedding = vocab * hidden
    return {"embedding": embedding, "non_embedding": non_embedding, "total": embedding + non_embedding}


# ----------------------------------------------------------------------------- FLOPs


def ppo_flops_per_episode(n_policy: int, n_value: int, n_ref: int, n_reward: int, prompt_tokens: float,
                          response_tokens: float, ppo_epochs: int) -> dict[str, float]:
    """Model FLOPs of one PPO episode (one prompt, one sampled response).

    - generation: 2N per token of the policy (prompt prefill + each sampled token);
    - scoring: one forward (2N per token) of the reference, the value model and the
      reward model over prompt + response (the old policy log-probs come with
      generation, so a recomputation is not counted as useful work);
    - update: forward + backward (6N per token) of the policy and the value model,
      `ppo_epochs` times.
    Attention's sequence-length-dependent FLOPs are ignored (small at these lengths).
    """
    T = prompt_tokens + response_tokens
    gen = 2 * n_policy * T
    score = 2 * (n_ref + n_value + n_reward) * T
    upd = 6 * (n_policy + n_value) * T * ppo_epochs
    return {"generate": gen, "score": score, "update": upd, "total": gen + score + upd}


def train_flops_per_token(n_params: int, forwards_only: int = 0) -> float:
    """6N per trained token (+2N for each extra no-grad forward, e.g. a DPO reference)."""
    return 6 * n_params + 2 * n_params * forwards_only


def mfu(flops_per_unit: float, units_per_second: float, peak_flops: float) -> float:
    if not peak_flops or not units_per_second:
        return float("nan")
    return flops_per_unit * units_per_second / peak_flops


def matmul_peak(threads: int = 2, sizes=(1024, 1536, 2048), repeats: int = 5) -> dict:
    """Best fp32 torch.mm FLOP/s over square sizes on `threads` threads."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    best, best_n = 0.0, 0
    try:
        for n in sizes:
            a, b = torch.randn(n, n), torch.randn(n, n)
            torch.mm(a, b)  # warm-up
            for _ in range(repeats):
                t = time.perf_counter()
                torch.mm(a, b)
                dt = time.perf_counter() - t
                f = 2 * n ** 3 / dt
                if f > best:
                    best, best_n = f, n
    finally:
        torch.set_num_threads(old)
    return {"flops": best, "size": best_n, "threads": threads}


# ----------------------------------------------------------------------------- summaries


def median(values):
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(vals) if vals else float("nan")


def standard_error(values: list[float]) -> float:
    """Standard error of the mean of per-step scores: how far apart two systems' quality
    can be by sampling alone (the benchmark's PPO steps show no trend on random models)."""
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")


def summarise(runs: list[dict], unit_key: str) -> dict:
    """Median over repetitions of one system's runner results."""
    out = {
        "throughput": median([r[unit_key] for r in runs]),
        "unit": unit_key,
        "quality": median([r.get("quality") for r in runs]),
        "quality_se": median([r.get("quality_se") for r in runs]),
        "peak_rss_mib": max(r.get("peak_rss_mib", 0.0) for r in runs),
        "train_seconds": median([r.get("train_seconds") for r in runs]),
        "load_seconds": median([r.get("load_seconds") for r in runs]),
        "repetitions": [{k: v for k, v in r.items() if k != "timings"} for r in runs],
    }
    return out


def _fmt(v, spec=".3g"):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def format_table(results: dict) -> str:
    """Plain-text table: one row per (benchmark, system)."""
    header = ["benchmark", "system", "throughput", "unit", "quality", "peak RSS MiB", "MFU", "ratio"]
    rows = [header]
    for name, res in results.items():
        if not isinstance(res, dict) or "rlhfkit" not in res:
            continue
        for system in ("rlhfkit", "peer"):
            s = res.get(system) or {}
            label = s.get("name", system)
            rows.append([
                name, label, _fmt(s.get("throughput"), ".4g"), s.get("unit", ""),
                _fmt(s.get("quality"), ".4f") + (f" ± {s['quality_se']:.3f}" if _fmt(s.get("quality_se")) != "-" else ""),
                _fmt(s.get("peak_rss_mib"), ".0f"),
                _fmt(s.get("mfu") * 100, ".2f") + "%" if s.get("mfu") is not None and not math.isnan(s["mfu"]) else "-",
                _fmt(res.get("ratio"), ".3f") if system == "rlhfkit" else "",
            ])
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_phases(timings: dict[str, float], steps: int) -> str:
    """rlhfkit's per-phase PPO timers: seconds per step and share of the step."""
    phases = {k.split("/", 1)[1]: v for k, v in timings.items() if k.startswith("timing/") and k != "timing/step"}
    total = sum(phases.values()) or 1.0
    lines = [f"{'phase':<16}{'s/step':>9}{'share':>8}"]
    for k, v in sorted(phases.items(), key=lambda kv: -kv[1]):
        lines.append(f"{k:<16}{v / max(steps, 1):>9.3f}{100 * v / total:>7.1f}%")
    lines.append(f"{'sum':<16}{total / max(steps, 1):>9.3f}{100.0:>7.1f}%")
    return "\n".join(lines)
