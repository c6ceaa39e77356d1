"""What torch.compile would buy the PPO update on the CPU it runs on, and what it costs.

    python benchmarks/compile_probe.py [--model h128|h384] [--lengths 50 150] [--iters 5] [--rounds 5]

The PPO step is ~80% update (4 epochs of policy and value forward+backward), which
runs at HF Llama's eager speed; a 2x speed-up needs faster passes. This
times one policy forward+backward (token log-probs of a 64-sequence batch, the
PPO update's shape) eagerly and under `torch.compile(dynamic=False)`, on the
benchmark suite's random Llama, and prints the first-call (compile) seconds, the
steady-state milliseconds (median of alternating rounds) and the achieved fraction
of the measured matmul peak. Inductor caches its kernels on disk (under /tmp), so only
the first run on a machine shows the cold compilation time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from rlhfkit.losses.common import gather_logprobs, masked_mean

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the suite's assets)
import flops  # noqa: E402  (the matmul peak)


def token_logprob_step(model, ids: torch.Tensor, mask: torch.Tensor) -> None:
    """Forward, the next tokens' log-probs as the PPO update takes them, backward (grads accumulate)."""
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # [B, T, V]
    logprobs = gather_logprobs(logits[:, :-1], ids[:, 1:])  # [B, T-1]
    (-masked_mean(logprobs, mask[:, 1:].float())).backward()


def seconds_per_step(model, ids, mask, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        token_logprob_step(model, ids, mask)
    return (time.perf_counter() - start) / iters


def compare(systems: dict, ids, mask, iters: int, rounds: int) -> dict:
    """First-call seconds (compilation, for a compiled model) and the median over `rounds`
    of the mean step time, the systems alternating so that machine noise hits all of them."""
    first = {}
    for name, model in systems.items():
        start = time.perf_counter()
        token_logprob_step(model, ids, mask)
        first[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(rounds):
        for name, model in systems.items():
            times[name].append(seconds_per_step(model, ids, mask, iters))
    return {name: (first[name], sorted(t)[len(t) // 2]) for name, t in times.items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="h128", choices=sorted(bench.MODELS))
    ap.add_argument("--lengths", type=int, nargs="+", default=[50, 150])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=5, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median round counts")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    path = bench.build_assets(quick=False)[args.model]["policy"]
    peak = flops.matmul_peak(args.threads)["flops"]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    params = sum(p.numel() for p in model.parameters())
    compiled = torch.compile(model, dynamic=False)
    gen = torch.Generator().manual_seed(0)
    results = {"model": args.model, "params": params, "matmul_peak_flops": peak, "lengths": {}}
    print(f"{args.model}: {params / 1e6:.2f}M parameters, matmul peak {peak / 1e9:.0f} GFLOP/s, "
          f"batch {args.batch}, {args.threads} threads")
    for length in args.lengths:
        ids = torch.randint(0, model.config.vocab_size, (args.batch, length), generator=gen)
        mask = torch.ones_like(ids)
        mask[:, : length // 10] = 0  # left padding, as PPO's prompts have
        step_flops = 6 * params * args.batch * length  # forward + backward, attention ignored
        row = {}
        measured = compare({"eager": model, "compiled": compiled}, ids, mask, args.iters, args.rounds)
        for name, (first, steady) in measured.items():
            row[name] = {"first_call_s": first, "steady_ms": 1000 * steady, "mfu": step_flops / steady / peak}
        row["speedup"] = row["eager"]["steady_ms"] / row["compiled"]["steady_ms"]
        results["lengths"][length] = row
        print(f"T={length}: eager {row['eager']['steady_ms']:.0f} ms ({row['eager']['mfu']:.0%} of peak), "
              f"compiled {row['compiled']['steady_ms']:.0f} ms ({row['compiled']['mfu']:.0%}), "
              f"{row['speedup']:.2f}x; compiling took {row['compiled']['first_call_s']:.1f} s")
    return results


if __name__ == "__main__":
    main()
