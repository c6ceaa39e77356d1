"""Where a GPU step's time goes: GPU busy time against wall time for the 0.47B model of gpu_bench.py.

    python benchmarks/gpu_profile.py

For a training step (bf16 autocast, fp32 weights, fused AdamW) at two batch sizes and
for one decode step of the KV-cache loop, prints wall milliseconds, the summed CUDA
kernel time from torch.profiler, the kernel count and the share of wall time the GPU
was busy. A busy share far under 1 with time per kernel near the launch cost says the
step is bound by the host launching kernels, not by the GPU.
"""
from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from gpu_bench import GPU_MODEL
from profiling import device_summary


def timed(fn, repeats: int = 5) -> tuple[float, float, int]:
    """(wall seconds per call, CUDA kernel seconds per call, kernels per call)."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t) / repeats
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    busy, kernels = device_summary(prof.key_averages())
    return wall, busy, kernels


def main() -> None:
    m = GPU_MODEL
    cfg = LlamaConfig(vocab_size=512, hidden_size=m["hidden"], intermediate_size=m["intermediate"],
                      num_hidden_layers=m["layers"], num_attention_heads=m["heads"], num_key_value_heads=m["heads"],
                      max_position_embeddings=1024, tie_word_embeddings=True, pad_token_id=1, eos_token_id=0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    rows = []
    for batch, length in ((16, 300), (64, 300)):
        ids = torch.randint(2, 512, (batch, length), device="cuda")

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        wall, busy, n = timed(step)
        flop = 6 * 470e6 * batch * length
        rows.append((f"train step b{batch}x{length}", wall, busy, n, flop / wall / 1e12))
    model.eval()
    bf = model.to(torch.bfloat16)
    for batch in (64, 256):
        ids = torch.randint(2, 512, (batch, 40), device="cuda")
        with torch.no_grad():
            cache = DynamicCache()
            bf(input_ids=ids, use_cache=True, past_key_values=cache)
            tok = torch.randint(2, 512, (batch, 1), device="cuda")

            def decode():
                # one token against a 40-token cache; the cache grows by one per call (as in sampling)
                bf(input_ids=tok, use_cache=True, past_key_values=cache, logits_to_keep=1)

            wall, busy, n = timed(decode, repeats=20)
        rows.append((f"decode step b{batch}", wall, busy, n, 2 * 470e6 * batch / wall / 1e12))
    print(f"{'what':<24}{'wall ms':>9}{'GPU busy ms':>13}{'busy share':>12}{'kernels':>9}{'us/kernel':>11}{'TFLOP/s':>9}")
    for name, wall, busy, n, tflops in rows:
        print(f"{name:<24}{wall * 1e3:>9.1f}{busy * 1e3:>13.1f}{busy / wall:>12.0%}{n:>9}{wall * 1e6 / max(n, 1):>11.1f}"
              f"{tflops:>9.1f}")


if __name__ == "__main__":
    main()
