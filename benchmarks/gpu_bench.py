"""rlhfkit against TRL on one GPU, with a ~0.5B Llama built from a config (no downloads).

    python benchmarks/gpu_bench.py --out DIR [--budget SECONDS] [--tiny]

One prepared script for a short GPU lease (see benchmarks/README.md, "GPU"). In order,
each section skipped when the time budget would not cover it, results written to
DIR/gpu_results.json after every section so that a cut-off run still reports:

1. the card's bf16 matrix-product peak, measured (8192^3 torch.mm, median of 10);
2. generation tokens per second of the policy in bf16: HF `generate` against
   rlhfkit's LocalSampler (KV-cache loop), batch 64 and 256, 128 new tokens;
3. PPO episodes per second, rlhfkit against TRL 0.29.1's PPOTrainer: same
   checkpoints, prompts and hyper-parameters, fp32 weights with bf16 autocast
   in both, model FLOPs utilisation against the measured peak;
4. SFT tokens per second and DPO pairs per second against TRL 1.16, on sequences of
   ~300 tokens (the CPU suite's ~30-token examples would measure kernel launches).

The peers' packages are not on the GPU machine; the lease carries their wheels
(`.whl/`, see benchmarks/README.md) and this script installs them into /tmp with
--no-deps. `--tiny` runs every section on a 2-layer model on the CPU, to check the
script before spending device time.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402
import flops  # noqa: E402

GPU_MODEL = dict(hidden=1024, layers=28, heads=16, intermediate=4096)  # 0.47B parameters (vocabulary 512)
TINY_MODEL = dict(hidden=64, layers=2, heads=4, intermediate=176)
PPO_GPU = dict(rollout_batch_size=64, num_minibatches=1, ppo_epochs=4, temperature=1.0, missing_eos_penalty=1.0,
               kl_coef=0.02, learning_rate=1e-6, response_length=64, total_episodes=256)
SITES = {"common": ("transformers-", "datasets-", "dill-", "multiprocess-"), "trl029": ("trl-0.29.1",),
         "trl116": ("trl-1.16.0",)}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- environment


def install_sites(wheels: Path, target: Path) -> dict[str, str]:
    """pip-install the carried wheels into /tmp site folders: one shared, one per TRL version."""
    sites = {}
    for name, prefixes in SITES.items():
        files = sorted(str(w) for w in wheels.glob("*.whl") if w.name.startswith(prefixes))
        if not files:
            continue
        site = target / name
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(site), *files], check=True)
        sites[name] = str(site)
    return sites


def peer_python(sites: dict, peer: str) -> str:
    """This interpreter with the carried TRL on its path (GPU machine), else the CPU suite's venv (--tiny)."""
    return sys.executable if peer in sites else str(bench.ensure_venv(peer))


def pythonpath(sites: dict, peer: str | None) -> str:
    parts = ([sites[peer]] if peer and peer in sites else []) + ([sites["common"]] if "common" in sites else [])
    return os.pathsep.join([*parts, str(ROOT)])


def bf16_peak(device: str, size: int = 8192, repeats: int = 10) -> dict:
    import torch

    if device != "cuda":
        return {"flops": flops.matmul_peak(2)["flops"], "size": 0, "dtype": "float32 (cpu)"}
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    t = sorted(times)[len(times) // 2]
    return {"flops": 2 * size ** 3 / t, "size": size, "dtype": "bfloat16"}


# ----------------------------------------------------------------------------- assets


def long_rows(rng: random.Random, n: int, words: int, pairs: bool) -> list[dict]:
    """Prompt plus completions of about `words` words (~1.5 tokens each) from the CPU suite's vocabulary."""
    def text() -> str:
        out = []
        while len(out) < words:
            kind = rng.choice(list(bench._WORDS))
            out += rng.sample(bench._WORDS[kind], 3)
        return " " + " ".join(out) + "."

    rows = []
    for _ in range(n):
        p = bench._prompt(rng)
        rows.append({"prompt": p, "chosen": text(), "rejected": text()} if pairs else {"prompt": p, "completion": text()})
    return rows


def build(out: Path, tiny: bool, profile: bool = False) -> dict:
    bench.CACHE = out / "cache"
    paths = bench.build_assets(quick=True)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths["tokenizer"])
    m = TINY_MODEL if tiny else GPU_MODEL
    d = bench.CACHE / "gpu_model"
    bench.save_models(d, tok, m, max_positions=1024)
    paths["gpu"] = {"policy": str(d / "policy"), "reward": str(d / "reward"), "model": m}
    rng = random.Random(17)
    n_sft, n_dpo = (64, 32) if tiny else (256, 128) if profile else (1024, 512)  # profiling: 16 steps
    bench._write_jsonl(bench.CACHE / "sft_long.jsonl", long_rows(rng, n_sft, 200, pairs=False))
    bench._write_jsonl(bench.CACHE / "prefs_long.jsonl", long_rows(rng, n_dpo, 100, pairs=True))
    paths.update(sft_long=str(bench.CACHE / "sft_long.jsonl"), prefs_long=str(bench.CACHE / "prefs_long.jsonl"))
    return paths


# ----------------------------------------------------------------------------- sections


def bench_generation(paths: dict, device: str, tiny: bool) -> dict:
    """Tokens per second of one policy (bf16 weights on the GPU) under each generation backend."""
    import torch

    from rlhfkit.data.collate import pad_sequences
    from rlhfkit.models.loading import load_causal_lm, load_tokenizer
    from rlhfkit.generation.samplers import make_sampler

    tok = load_tokenizer(paths["gpu"]["policy"])
    model = load_causal_lm(paths["gpu"]["policy"], tok, dtype="bfloat16" if device == "cuda" else "float32")
    model = model.to(device).eval()
    prompts = [json.loads(line)["input_ids"] for line in Path(paths["prompts"]).read_text().splitlines()]
    new_tokens = 16 if tiny else 128
    rows = {}
    for batch in (64, 256):
        ids, mask = pad_sequences(prompts[:batch], tok.pad_token_id, side="left")
        ids, mask = ids.to(device), mask.to(device)
        for backend in ("hf", "local"):
            gen = make_sampler(backend, model, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                                 max_new_tokens=new_tokens, temperature=1.0)
            torch.manual_seed(0)
            gen.generate(ids, mask)  # warm-up: kernels, allocator
            times, steps, lengths = [], [], []
            for _ in range(2):
                if device == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                g = gen.generate(ids, mask)
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
                steps.append(g.response_ids.shape[1])
                lengths.append(float(g.response_mask.sum(1).float().mean()))
            t = min(times)
            rows[f"{backend}_b{batch}"] = {"seconds": t, "decode_steps": max(steps), "batch": batch,
                                           "tokens_per_second": batch * max(steps) / t,
                                           "ms_per_step": 1e3 * t / max(steps), "response_length_mean": lengths[-1]}
            log(f"generation {backend} batch {batch}: {batch * max(steps) / t:,.0f} tokens/s "
                f"({1e3 * t / max(steps):.1f} ms per decode step)")
    for batch in (64, 256):
        rows[f"local_over_hf_b{batch}"] = rows[f"local_b{batch}"]["tokens_per_second"] / rows[f"hf_b{batch}"][
            "tokens_per_second"]
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def pair(name: str, ours: dict, peer: dict, sites: dict, peer_site: str, out: Path, unit: str) -> tuple[dict, dict]:
    """rlhfkit, then the peer, each once in its own subprocess; returns both runner results."""
    results = {}
    for system, spec, runner, site in (("rlhfkit", ours, "run_rlhfkit.py", None), ("peer", peer, "run_trl.py", peer_site)):
        workdir = out / name / system
        spec = dict(spec, output_dir=str(workdir / "run"))
        if "config" in spec:  # rlhfkit's SFT/RM/DPO runner reads its output_dir from the trainer config
            spec["config"] = dict(spec["config"], output_dir=spec["output_dir"])
        python = sys.executable if site is None else peer_python(sites, site)
        r = bench.run_one(python, HERE / runner, spec, workdir, env_extra={"PYTHONPATH": pythonpath(sites, site)})
        results[system] = r
        log(f"[{name}] {system}: {r[unit]:.4g} {unit}, quality {r.get('quality', float('nan')):.4f}, "
            f"train {r['train_seconds']:.1f}s, load {r['load_seconds']:.1f}s")
    return results["rlhfkit"], results["peer"]


def bench_ppo(paths: dict, sites: dict, peak: float, out: Path, device: str, tiny: bool) -> dict:
    h = dict(PPO_GPU, total_episodes=128 if tiny else PPO_GPU["total_episodes"],
             response_length=16 if tiny else PPO_GPU["response_length"])
    spec = {"task": "ppo", "policy": paths["gpu"]["policy"], "reward": paths["gpu"]["reward"],
            "prompts": paths["prompts"], "hparams": h, "threads": bench.THREADS, "seed": 0, "quality_last_steps": 2,
            "device": device, "mixed_precision": "bf16" if device == "cuda" else "no"}
    ours, peer = pair("ppo", spec, spec, sites, "trl029", out, "episodes_per_second")
    n_pol = bench._params(paths["gpu"]["policy"], scalar=False)["total"]
    n_rm = bench._params(paths["gpu"]["reward"], scalar=True)["total"]
    prompts = [json.loads(line) for line in Path(paths["prompts"]).read_text().splitlines()]
    p_mean = sum(len(r["input_ids"]) for r in prompts) / len(prompts)
    f = flops.ppo_flops_per_episode(n_pol, n_rm, n_pol, n_rm, p_mean, h["response_length"], h["ppo_epochs"])
    res = {"config": h, "params_policy": n_pol, "flops_per_episode": f["total"]}
    for s, r in (("rlhfkit", ours), ("peer", peer)):
        res[s] = {k: r[k] for k in ("episodes_per_second", "train_seconds", "load_seconds", "quality", "steps")}
        res[s]["mfu"] = flops.mfu(f["total"], r["episodes_per_second"], peak)
    steps = max(ours["steps"], 1)
    res["rlhfkit"]["phase_seconds_per_step"] = {k: v / steps for k, v in ours.get("timings", {}).items()}
    res["ratio"] = ours["episodes_per_second"] / peer["episodes_per_second"]
    return res


def bench_simple(name: str, paths: dict, sites: dict, peak: float, out: Path, device: str,
                 profile_dir: Path | None = None) -> dict:
    """SFT or DPO against TRL 1.16; with profile_dir, each system's training runs under
    torch.profiler and writes profile_<name>_<system>.txt there (a separate, slower run)."""
    from transformers import AutoTokenizer

    model = paths["gpu"]["policy"]
    data = paths["sft_long" if name == "sft" else "prefs_long"]
    rows = [json.loads(line) for line in Path(data).read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(model)
    batch = 16 if name == "sft" else 8
    common = dict(model=model, data=data, per_device_batch_size=batch, num_epochs=1.0, max_length=512,
                  eval_fraction=0.0, learning_rate=1e-5, warmup_ratio=0.0, lr_scheduler="linear",
                  num_threads=bench.THREADS, progress=False, log_every=1, seed=0,
                  mixed_precision="bf16" if device == "cuda" else "no")
    peer_common = dict(per_device_train_batch_size=batch, num_train_epochs=1, learning_rate=1e-5,
                       lr_scheduler_type="linear", max_grad_norm=1.0, weight_decay=0.0, max_length=512)
    ours_extra, peer_extra = bench.MATCHED_OPTIONS[name]
    ours_cfg, peer_cfg = dict(common, **ours_extra), dict(peer_common, **peer_extra)
    if name == "sft":
        tokens = sum(len(tok(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"]) + 1 for r in rows)
        units, unit = tokens, "tokens_per_second"
        per_unit = flops.train_flops_per_token(bench._params(model, scalar=False)["total"])
    else:
        units, unit = len(rows), "pairs_per_second"
        length = sum(len(tok(r["prompt"] + r["chosen"])["input_ids"]) + len(tok(r["prompt"] + r["rejected"])["input_ids"])
                     for r in rows) / len(rows)
        per_unit = flops.train_flops_per_token(bench._params(model, scalar=False)["total"], forwards_only=1) * length
    ours_spec = {"task": name, "config": ours_cfg, "units": units, "threads": bench.THREADS}
    peer_spec = {"task": name, "model": model, "data": data, "peer": peer_cfg, "units": units,
                 "threads": bench.THREADS, "device": device}
    if profile_dir is not None:
        ours_spec["profile"] = str(profile_dir / f"profile_{name}_rlhfkit.txt")
        peer_spec["profile"] = str(profile_dir / f"profile_{name}_trl.txt")
    ours, peer = pair(name, ours_spec, peer_spec, sites, "trl116", out, unit)
    results = {}
    for system, r in (("rlhfkit", ours), ("peer", peer)):
        results[system] = {k: r[k] for k in (unit, "train_seconds", "load_seconds", "quality", "steps")}
        results[system]["mfu"] = flops.mfu(per_unit, r[unit], peak)
        log(f"[{name}] {system}: MFU {results[system]['mfu']:.1%}")
    results["ratio"] = results["rlhfkit"][unit] / results["peer"][unit]
    results["unit"] = unit
    return results


# ----------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="results directory (gpu_results.json)")
    ap.add_argument("--work", help="checkpoints and run directories (default OUT/work)")
    ap.add_argument("--budget", type=float, default=480, help="seconds; a section that would overrun is skipped")
    ap.add_argument("--tiny", action="store_true", help="2-layer model on the CPU: check the script, not the GPU")
    ap.add_argument("--wheels", default=str(ROOT / ".whl"), help="folder of the peers' carried wheels")
    ap.add_argument("--only", action="append", choices=["generation", "ppo", "sft", "dpo"])
    ap.add_argument("--profile", action="store_true", help="SFT/DPO under torch.profiler, tables into --out "
                    "(a diagnosis: throughput figures of such a run are not timings)")
    args = ap.parse_args(argv)
    t_start = float(os.environ.setdefault("RLHFKIT_GPU_T0", str(time.time())))  # survives the restart below
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    wheels, site_root = Path(args.wheels), Path("/tmp/rlhfkit-gpu-sites")
    if not args.tiny and wheels.exists() and not os.environ.get("RLHFKIT_GPU_SITES"):
        # install the carried wheels, then restart this script with them on the path, so the
        # generation section (in this process) runs the same transformers as the subprocesses
        sites = install_sites(wheels, site_root)
        env = {**os.environ, "RLHFKIT_GPU_SITES": json.dumps(sites), "PYTHONPATH": pythonpath(sites, None)}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    sites = json.loads(os.environ.get("RLHFKIT_GPU_SITES", "{}"))
    import torch
    import transformers

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    bench.THREADS = 2 if device == "cpu" else 8
    results: dict = {"machine": {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                                 "torch": torch.__version__, "transformers": transformers.__version__,
                                 "python": sys.version.split()[0]}}
    save = out / "gpu_results.json"

    def write() -> None:
        save.write_text(json.dumps(results, indent=2))

    results["machine"]["peer_sites"] = sites
    peak = bf16_peak(device)
    results["machine"]["peak"] = peak
    log(f"{results['machine']['device']}: measured matmul peak {peak['flops'] / 1e12:.1f} TFLOP/s ({peak['dtype']})")
    paths = build(work, args.tiny, args.profile)
    profile_dir = out if args.profile else None
    results["model"] = {**paths["gpu"]["model"], "params": bench._params(paths["gpu"]["policy"], scalar=False)}
    log(f"model {paths['gpu']['model']}: {results['model']['params']['total'] / 1e6:.0f}M parameters "
        f"({time.time() - t_start:.0f}s elapsed)")
    write()
    # rough costs of each section on an H100 (seconds), to skip what the budget cannot cover
    sections = [("generation", 60, lambda: bench_generation(paths, device, args.tiny)),
                ("ppo", 150, lambda: bench_ppo(paths, sites, peak["flops"], work, device, args.tiny)),
                ("sft", 90, lambda: bench_simple("sft", paths, sites, peak["flops"], work, device, profile_dir)),
                ("dpo", 90, lambda: bench_simple("dpo", paths, sites, peak["flops"], work, device, profile_dir))]
    for name, cost, fn in sections:
        if args.only and name not in args.only:
            continue
        left = args.budget - (time.time() - t_start)
        if left < cost:
            results[name] = {"skipped": f"{left:.0f}s of the budget left, section needs ~{cost}s"}
            log(f"skip {name}: {left:.0f}s left")
            continue
        log(f"== {name}")
        try:
            results[name] = fn()
        except Exception as e:  # one failed section must not lose the others' figures
            results[name] = {"error": f"{type(e).__name__}: {str(e)[-2000:]}"}
            log(f"{name} failed: {type(e).__name__}: {str(e)[-2000:]}")
        write()
    results["seconds"] = time.time() - t_start
    write()
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1)[:6000])
    return results


if __name__ == "__main__":
    main()
