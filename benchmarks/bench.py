"""rlhfkit against TRL on the machine it runs on: PPO (TRL 0.29.1), RLOO / GRPO / SFT / reward model / DPO (TRL 1.16).

    python benchmarks/bench.py [--only ppo|ppo128|ppo15m|rloo|grpo|sft|rm|dpo] [--json FILE] [--quick]

Each benchmark runs rlhfkit and the peer as subprocesses on the same checkpoints,
data, hyperparameters and thread count, alternating rlhfkit/peer/rlhfkit/peer,
and reports the median throughput, the peak RSS of each subprocess, the quality
reached at an equal budget and the ratio rlhfkit / peer. See benchmarks/README.md.
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
sys.path.insert(0, str(HERE))
import flops  # noqa: E402

CACHE = HERE / ".cache"
VENVS = {"trl029": ("0.29.1", HERE / ".venv-trl029"), "trl116": ("1.16.0", HERE / ".venv-trl116")}
TORCH = "torch==2.13.0"
THREADS = 2

# ----------------------------------------------------------------------------- configurations

MODELS = {  # Llama-style, tied embeddings; the vocabulary comes from the shared BPE tokenizer
    "h128": dict(hidden=128, layers=4, heads=4, intermediate=352),      # ~0.9M parameters
    "h384": dict(hidden=384, layers=8, heads=6, intermediate=1024),     # ~15M parameters
}
VOCAB = 512

PPO_BENCHES = {  # name: (model, response_length, total_episodes full, quick, advantage estimator)
    "ppo": ("h128", 32, 1536, 128, "gae"),
    "ppo128": ("h128", 128, 512, 128, "gae"),
    "ppo15m": ("h384", 32, 512, 128, "gae"),
    "rloo": ("h128", 32, 1536, 128, "rloo"),  # against TRL 1.16's RLOOTrainer
    "grpo": ("h128", 32, 1536, 128, "grpo"),  # against TRL 1.16's GRPOTrainer
}
# adam_eps: TRL's AdamW default (1e-8), set in both (rlhfkit's own default is 1e-5, as lm-human-preferences):
# with 1e-5 rlhfkit's updates were smaller and TRL reached a higher mean score at response 128 and 15M
PPO_HPARAMS = dict(rollout_batch_size=64, num_minibatches=1, ppo_epochs=4, temperature=1.0, missing_eos_penalty=1.0,
                   kl_coef=0.02, learning_rate=1e-5, adam_eps=1e-8)
# Critic-free RLOO: K = 4 samples per prompt (16 prompts x 4 per rollout of 64), no value model. TRL's
# RLOOTrainer has no missing-EOS penalty and does not normalise advantages by default: the same in rlhfkit.
RLOO_HPARAMS = dict(samples_per_prompt=4, missing_eos_penalty=0.0, whiten_advantages="none")
# GRPO as TRL 1.16's GRPOTrainer defaults it, with the KL kept on: group-normalised advantages, the DAPO
# token-mean loss (TRL's default loss_type), symmetric clip 0.2, beta x k3 KL in the loss (beta 0.02 as above)
GRPO_HPARAMS = dict(loss_type="dapo", clip_range=0.2, clip_range_high=0.2, kl_placement="loss", kl_estimator="k3")
N_PROMPTS = 512

# ----------------------------------------------------------------------------- synthetic corpus and data

_WORDS = {
    "animal": "cat dog cow pig hen fox owl bee ant rat bat elk yak goat lion wolf bear duck".split(),
    "fruit": "apple banana cherry grape lemon mango melon peach pear plum fig kiwi lime".split(),
    "color": "red blue green pink gray gold black white brown purple yellow cyan teal tan navy".split(),
    "name": "Tavo Mira Jun Ode Lea Sam Ivo Kai Noor Remy Ada Ben".split(),
}
_TEMPLATES = [
    "List two {kind}s.", "Name a {kind} that is not {w}.", "Say hello to {name}.", "What is {a} plus {b}?",
    "Count from {a} to {c}.", "Sort these words: {w}, {x}, {y}.", "Write one sentence about a {w}.",
    "Is {w} a {kind}? Answer yes or no.", "Repeat after me: {w} {x} {y}.",
]


def _prompt(rng: random.Random) -> str:
    kind = rng.choice(list(_WORDS))
    words = rng.sample(_WORDS[kind], 3)
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    return rng.choice(_TEMPLATES).format(kind=kind, w=words[0], x=words[1], y=words[2], name=rng.choice(_WORDS["name"]),
                                         a=a, b=b, c=a + rng.randint(2, 5))


def _answer(rng: random.Random, prompt: str) -> str:
    kind = rng.choice(list(_WORDS))
    return " ".join(rng.sample(_WORDS[kind], rng.randint(2, 6))) + rng.choice([".", "!", ". Done."])


def corpus(n: int = 3000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = _prompt(rng)
        out.append(p + " " + _answer(rng, p))
    return out


def _write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def save_models(directory: Path, tok, m: dict, max_positions: int) -> None:
    """A randomly initialised (fixed seed) Llama policy and a reward/value model of the same
    shape with a scalar head, each with the tokenizer, unless already there."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    if (directory / "reward" / "config.json").exists():
        return
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=m["hidden"], intermediate_size=m["intermediate"],
                      num_hidden_layers=m["layers"], num_attention_heads=m["heads"], num_key_value_heads=m["heads"],
                      max_position_embeddings=max_positions, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(1234)
    LlamaForCausalLM(cfg).save_pretrained(directory / "policy")
    tok.save_pretrained(directory / "policy")
    torch.manual_seed(4321)
    cfg.num_labels = 1
    LlamaForSequenceClassification(cfg).save_pretrained(directory / "reward")
    tok.save_pretrained(directory / "reward")


def build_assets(quick: bool) -> dict:
    """Tokenizer, checkpoints and data sets, built once into benchmarks/.cache."""
    from rlhfkit.data.tokenize import prompt_token_ids
    from rlhfkit.models.tokenizer import train_bpe_tokenizer

    CACHE.mkdir(parents=True, exist_ok=True)
    tok_dir = CACHE / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        tok = train_bpe_tokenizer(corpus(), vocab_size=VOCAB, model_max_length=1024)
        tok.save_pretrained(tok_dir)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert tok.pad_token_id != tok.eos_token_id
    paths: dict = {"tokenizer": str(tok_dir)}
    for name, m in MODELS.items():
        d = CACHE / name
        save_models(d, tok, m, max_positions=512)
        paths[name] = {"policy": str(d / "policy"), "reward": str(d / "reward")}
    rng = random.Random(7)
    prompts = CACHE / "prompts.jsonl"
    if not prompts.exists():
        texts = [_prompt(rng) for _ in range(N_PROMPTS)]
        _write_jsonl(prompts, [{"prompt": t, "input_ids": prompt_token_ids(tok, t)} for t in texts])
    sft, prefs = CACHE / "sft.jsonl", CACHE / "prefs.jsonl"
    if not sft.exists():
        rng = random.Random(11)
        rows = []
        for _ in range(512):
            p = _prompt(rng)
            rows.append({"prompt": p, "completion": " " + _answer(rng, p)})
        _write_jsonl(sft, rows)
    if not prefs.exists():
        rng = random.Random(13)
        rows = []
        for _ in range(512):
            p = _prompt(rng)
            rows.append({"prompt": p, "chosen": " " + _answer(rng, p), "rejected": " " + _answer(rng, p)})
        _write_jsonl(prefs, rows)
    paths.update(prompts=str(prompts), sft=str(sft), prefs=str(prefs))
    return paths


# ----------------------------------------------------------------------------- peers' environments


def ensure_venv(key: str) -> Path:
    """benchmarks/.venv-trlXXX with torch 2.13.0 (CPU wheel) first, then TRL pinned, torch held."""
    version, venv = VENVS[key]
    py = venv / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", f"import trl, torch; assert trl.__version__ == '{version}'"],
                                        capture_output=True).returncode == 0
    if ok:
        return py
    print(f"setting up {venv.name} (torch 2.13.0, trl {version}) ...", flush=True)
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q"]
    subprocess.run([*pip, TORCH], check=True)
    subprocess.run([*pip, f"trl=={version}", TORCH], check=True)  # the torch pin keeps pip from upgrading it
    return py


# ----------------------------------------------------------------------------- running


def run_one(python: str, runner: Path, spec: dict, workdir: Path, env_extra: dict | None = None) -> dict:
    """Run one system once as a subprocess; adds its peak RSS (ru_maxrss). env_extra:
    variables added to the subprocess's environment (the GPU suite's PYTHONPATH)."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = workdir / "spec.json", workdir / "result.json"
    spec_path.write_text(json.dumps(spec))
    if result_path.exists():
        result_path.unlink()
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore", **(env_extra or {})}
    env.pop("VIRTUAL_ENV", None)
    log = open(workdir / "log.txt", "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen([python, str(runner), str(spec_path), str(result_path)], stdout=log,
                            stderr=subprocess.STDOUT, env=env, cwd=str(workdir))
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    log.close()
    if proc.returncode != 0 or not result_path.exists():
        tail = (workdir / "log.txt").read_text()[-3000:]
        raise RuntimeError(f"{runner.name} failed (exit {proc.returncode}) in {workdir}:\n{tail}")
    result = json.loads(result_path.read_text())
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    result["process_seconds"] = wall
    # CPU seconds of the whole subprocess (loading included): on a shared machine the
    # wall-clock throughput swings with other load; work per CPU-second much less so.
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return result


def alternate(name: str, reps: int, rlhfkit_spec: dict, peer_spec: dict, peer_python: Path, out: Path,
              unit: str) -> tuple[dict, dict]:
    runs = {"rlhfkit": [], "peer": []}
    for rep in range(reps):
        for system in ("rlhfkit", "peer"):
            workdir = out / name / f"{system}-{rep}"
            spec = dict(rlhfkit_spec if system == "rlhfkit" else peer_spec, output_dir=str(workdir / "run"))
            python = sys.executable if system == "rlhfkit" else str(peer_python)
            runner = HERE / ("run_rlhfkit.py" if system == "rlhfkit" else "run_trl.py")
            r = run_one(python, runner, spec, workdir)
            runs[system].append(r)
            print(f"  [{name}] {system} rep {rep}: {r[unit]:.4g} {unit}, quality {r.get('quality', float('nan')):.4f}, "
                  f"train {r['train_seconds']:.1f}s, load {r['load_seconds']:.1f}s, "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB, CPU {r['cpu_seconds']:.0f}s / wall {r['process_seconds']:.0f}s",
                  flush=True)
    return runs["rlhfkit"], runs["peer"]


def _params(model_dir: str, scalar: bool) -> dict:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return flops.llama_params(cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"],
                              cfg["intermediate_size"], cfg["num_attention_heads"], cfg.get("num_key_value_heads"),
                              tied=cfg.get("tie_word_embeddings", True), head_outputs=1 if scalar else 0)


def ppo_spec(name: str, paths: dict, episodes: int) -> dict:
    """The spec both runners read for PPO benchmark `name` (task "ppo", or "rloo" when critic-free)."""
    model, response_length, _, _, estimator = PPO_BENCHES[name]
    h = dict(PPO_HPARAMS, response_length=response_length, total_episodes=episodes)
    if estimator != "gae":
        h.update(RLOO_HPARAMS, advantage_estimator=estimator)
    if estimator == "grpo":
        h.update(GRPO_HPARAMS)
    return {"task": "ppo" if estimator == "gae" else estimator, "policy": paths[model]["policy"],
            "reward": paths[model]["reward"], "prompts": paths["prompts"], "hparams": h, "threads": THREADS,
            "seed": 0, "quality_last_steps": 5}


def bench_ppo(name: str, paths: dict, args, peak: dict, out: Path) -> dict:
    model, response_length, full, quick, estimator = PPO_BENCHES[name]
    spec = ppo_spec(name, paths, args.episodes or (quick if args.quick else full))
    h = spec["hparams"]
    critic_free = estimator != "gae"
    peer_key = "trl116" if critic_free else "trl029"
    peer_py = ensure_venv(peer_key)
    ours, peer = alternate(name, args.reps, spec, spec, peer_py, out, "episodes_per_second")
    n_pol = _params(paths[model]["policy"], scalar=False)
    n_rm = _params(paths[model]["reward"], scalar=True)
    prompts = [json.loads(line) for line in Path(paths["prompts"]).read_text().splitlines()]
    p_mean = sum(len(r["input_ids"]) for r in prompts) / len(prompts)
    f = flops.ppo_flops_per_episode(n_pol["total"], 0 if critic_free else n_rm["total"], n_pol["total"],
                                    n_rm["total"], p_mean, response_length, h["ppo_epochs"])
    res = {"rlhfkit": flops.summarise(ours, "episodes_per_second"), "peer": flops.summarise(peer, "episodes_per_second")}
    res["peer"]["name"] = f"trl {peer[0].get('version', VENVS[peer_key][0])}"
    for s in ("rlhfkit", "peer"):
        res[s]["mfu"] = flops.mfu(f["total"], res[s]["throughput"], peak["flops"])
        res[s]["quality_metric"] = ("mean reward-model score over the last 5 rollouts" if critic_free else
                                    "mean objective/scores over the last 5 PPO steps (after the missing-EOS penalty)")
    res["ratio"] = res["rlhfkit"]["throughput"] / res["peer"]["throughput"]
    if not args.quick:
        res["floor"] = matmul_floor(name, spec, out, res["peer"]["throughput"])
    for s, runs in (("rlhfkit", ours), ("peer", peer)):
        res[s]["episodes_per_cpu_second"] = flops.median([r["episodes"] / r["cpu_seconds"] for r in runs])
        # the training loop's own CPU time: the process's less start-up and loading (~4-5 s here)
        res[s]["episodes_per_loop_cpu_second"] = flops.median([r["episodes"] / r["train_cpu_seconds"] for r in runs])
    res["ratio_per_cpu_second"] = res["rlhfkit"]["episodes_per_cpu_second"] / res["peer"]["episodes_per_cpu_second"]
    res["ratio_per_loop_cpu_second"] = (res["rlhfkit"]["episodes_per_loop_cpu_second"]
                                        / res["peer"]["episodes_per_loop_cpu_second"])
    timings: dict[str, float] = {}
    steps = 0
    for r in ours:
        steps += r["steps"]
        for k, v in r["timings"].items():
            timings[k] = timings.get(k, 0.0) + v
    res["rlhfkit"]["phase_seconds_per_step"] = {k: v / max(steps, 1) for k, v in timings.items()}
    res["rlhfkit"]["loop_seconds_per_step"] = sum(r["train_seconds"] for r in ours) / max(steps, 1)
    res["rlhfkit"]["response_length_mean"] = flops.median([r["response_length_mean"] for r in ours])
    res["flops"] = {"per_episode": f, "params_policy": n_pol, "params_value_reward": n_rm,
                    "prompt_tokens_mean": p_mean, "response_tokens": response_length,
                    "N": "all parameters: non-embedding + the (tied) embedding, counted once",
                    "config": h, "model": MODELS[model]}
    res["_phases_text"] = flops.format_phases(timings, steps)
    return res


FLOOR_STEPS = 4  # PPO steps of the profiled run behind matmul_floor


def matmul_floor(name: str, spec: dict, out: Path, peer_throughput: float) -> dict:
    """How fast the step could be if only its matrix products took time.

    One more rlhfkit run of FLOOR_STEPS rollouts of the same spec under torch.profiler
    (profiling.host_seconds; a separate run, not a timing) gives the seconds per episode
    spent in matrix products, in attention and in all ops. rlhfkit computes no forward
    twice, so no implementation of the same PPO over the same padded batches does fewer
    matrix FLOPs (packing away the padding left after rlhfkit drops all-pad columns, 7-10%
    of the positions here, would); at the speed those products reach here, 1 / matmul
    seconds per episode bounds its throughput from above, and that over the peer's
    throughput bounds the ratio any such implementation can reach without faster products."""
    h = dict(spec["hparams"], total_episodes=FLOOR_STEPS * spec["hparams"]["rollout_batch_size"])
    workdir = out / name / "floor"
    workdir.mkdir(parents=True, exist_ok=True)
    profile = workdir / "profile.txt"
    r = run_one(sys.executable, HERE / "run_rlhfkit.py",
                dict(spec, hparams=h, output_dir=str(workdir / "run"), profile=str(profile)), workdir)
    seconds = json.loads(profile.with_suffix(".json").read_text())
    matmul, attention = seconds["matmul_seconds"] / r["episodes"], seconds["attention_seconds"] / r["episodes"]
    floor = {"profiled_episodes": r["episodes"], "matmul_seconds_per_episode": matmul,
             "attention_seconds_per_episode": attention, "op_seconds_per_episode": seconds["op_seconds"] / r["episodes"],
             "ceiling_episodes_per_second": 1 / matmul, "ceiling_ratio": 1 / matmul / peer_throughput,
             "ceiling_ratio_with_attention": 1 / (matmul + attention) / peer_throughput, "profile": str(profile)}
    print(f"  [{name}] floor: matrix products take {1000 * matmul:.1f} ms per episode, attention "
          f"{1000 * attention:.1f} ms (profiled, {r['episodes']} episodes): if nothing else took time, "
          f"{floor['ceiling_episodes_per_second']:.1f} episodes/s = {floor['ceiling_ratio']:.2f}x the peer "
          f"({floor['ceiling_ratio_with_attention']:.2f}x with attention)", flush=True)
    return floor


# The method-specific options that make rlhfkit's and TRL 1.16's SFT / reward / DPO runs the
# same computation: (rlhfkit config, TRL config). Shared by the CPU and the GPU suite.
MATCHED_OPTIONS = {
    "sft": (dict(completion_only_loss=True, disable_dropout=True), dict(completion_only_loss=True, packing=False)),
    "rm": (dict(normalize_on="none"), dict(center_rewards_coefficient=None)),
    "dpo": (dict(beta=0.1, loss="sigmoid", precompute_ref_logprobs=False),
            dict(beta=0.1, loss_type=["sigmoid"], precompute_ref_log_probs=False)),
}


def _tokens_sft(paths, tok) -> int:
    rows = [json.loads(line) for line in Path(paths["sft"]).read_text().splitlines()]
    return sum(len(tok(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"]) + 1 for r in rows)


def bench_simple(name: str, paths: dict, args, peak: dict, out: Path) -> dict:
    """SFT, RM, DPO on the h128 model, one epoch over 512 examples (quick: 64), batch 8, equal steps."""
    from transformers import AutoTokenizer

    model = paths["h128"]["policy"]
    n = 64 if args.quick else 512
    data_src = Path(paths["sft" if name == "sft" else "prefs"])
    data = out / name / "data.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(data_src.read_text().splitlines(keepends=True)[:n]))
    tok = AutoTokenizer.from_pretrained(model)
    common = dict(model=model, data=str(data), per_device_batch_size=8, num_epochs=1.0, max_length=128,
                  eval_fraction=0.0, learning_rate=1e-4, warmup_ratio=0.0, lr_scheduler="linear", num_threads=THREADS,
                  progress=False, log_every=1, seed=0)
    peer_common = dict(per_device_train_batch_size=8, num_train_epochs=1, learning_rate=1e-4,
                       lr_scheduler_type="linear", max_grad_norm=1.0, weight_decay=0.0)
    ours_extra, peer_extra = MATCHED_OPTIONS[name]
    ours_cfg, peer_cfg = dict(common, **ours_extra), dict(peer_common, max_length=128, **peer_extra)
    if name == "sft":
        units, unit = _tokens_sft(paths, tok) * n // 512, "tokens_per_second"
    else:
        units, unit = n, "pairs_per_second"
    if name == "dpo":  # DPO's usual, smaller learning rate, in both
        ours_cfg["learning_rate"] = peer_cfg["learning_rate"] = 5e-6
    ours_spec = {"task": name, "config": ours_cfg, "units": units, "threads": THREADS}
    peer_spec = {"task": name, "model": model, "data": str(data), "peer": peer_cfg, "units": units, "threads": THREADS}
    peer_py = ensure_venv("trl116")
    def ours_for(workdir):
        return dict(ours_spec, config=dict(ours_cfg, output_dir=str(workdir / "run")))

    runs = {"rlhfkit": [], "peer": []}
    for rep in range(args.reps):
        for system in ("rlhfkit", "peer"):
            workdir = out / name / f"{system}-{rep}"
            if system == "rlhfkit":
                spec = dict(ours_for(workdir), output_dir=str(workdir / "run"))
                r = run_one(sys.executable, HERE / "run_rlhfkit.py", spec, workdir)
            else:
                spec = dict(peer_spec, output_dir=str(workdir / "run"))
                r = run_one(str(peer_py), HERE / "run_trl.py", spec, workdir)
            runs[system].append(r)
            print(f"  [{name}] {system} rep {rep}: {r[unit]:.4g} {unit}, final loss {r['quality']:.4f}, "
                  f"train {r['train_seconds']:.1f}s, peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    res = {"rlhfkit": flops.summarise(runs["rlhfkit"], unit), "peer": flops.summarise(runs["peer"], unit)}
    res["peer"]["name"] = f"trl {runs['peer'][0].get('version', '')}"
    n_params = _params(model, scalar=(name == "rm"))["total"]
    if name == "sft":
        per_unit = flops.train_flops_per_token(n_params)
    else:  # a pair: two sequences of about the mean length, DPO adds a reference forward
        rows = [json.loads(line) for line in data.read_text().splitlines()]
        length = sum(len(tok(r["prompt"] + r["chosen"])["input_ids"]) + len(tok(r["prompt"] + r["rejected"])["input_ids"])
                     for r in rows) / len(rows)
        per_unit = flops.train_flops_per_token(n_params, forwards_only=1 if name == "dpo" else 0) * length
    for s in ("rlhfkit", "peer"):
        res[s]["mfu"] = flops.mfu(per_unit, res[s]["throughput"], peak["flops"])
        res[s]["quality_metric"] = "training loss at the last step (equal steps)"
    res["ratio"] = res["rlhfkit"]["throughput"] / res["peer"]["throughput"]
    return res


def main(argv=None) -> dict:
    global THREADS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=[*PPO_BENCHES, "sft", "rm", "dpo"], action="append",
                    help="run only these benchmarks (repeatable); default: all")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--quick", action="store_true", help="tiny budgets (2 PPO steps, 64 examples), 1 repetition")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per system (default 2; --quick: 1)")
    ap.add_argument("--episodes", type=int, default=0, help="override PPO total_episodes")
    ap.add_argument("--out", default=str(HERE / "results"), help="work directory of the runs")
    ap.add_argument("--threads", type=int, default=THREADS, help="torch threads of every run, both systems alike "
                    "(1 when other work shares the cores)")
    args = ap.parse_args(argv)
    THREADS = args.threads
    args.reps = args.reps or (1 if args.quick else 2)
    names = args.only or [*PPO_BENCHES, "sft", "rm", "dpo"]
    out = Path(args.out)
    paths = build_assets(args.quick)
    peak = flops.matmul_peak(THREADS)
    print(f"fp32 matmul peak on {THREADS} threads: {peak['flops'] / 1e9:.1f} GFLOP/s (torch.mm {peak['size']}^2)",
          flush=True)
    results: dict = {"machine": {"matmul_peak_flops": peak["flops"], "matmul_size": peak["size"], "threads": THREADS,
                                 "cpu_count": os.cpu_count()}}
    phases = {}
    for name in names:
        print(f"== {name}", flush=True)
        res = (bench_ppo if name in PPO_BENCHES else bench_simple)(name, paths, args, peak, out)
        if "_phases_text" in res:
            phases[name] = res.pop("_phases_text")
        results[name] = res
        # a second peak measurement after each benchmark shows how noisy the shared machine was
    print()
    print(flops.format_table(results))
    for name, res in results.items():
        if isinstance(res, dict) and "ratio_per_cpu_second" in res:
            print(f"{name}: episodes per CPU-second rlhfkit {res['rlhfkit']['episodes_per_cpu_second']:.3g}, "
                  f"peer {res['peer']['episodes_per_cpu_second']:.3g}, ratio {res['ratio_per_cpu_second']:.3f}")
        if isinstance(res, dict) and "ratio_per_loop_cpu_second" in res:
            print(f"{name}: episodes per CPU-second of the training loop rlhfkit "
                  f"{res['rlhfkit']['episodes_per_loop_cpu_second']:.3g}, peer "
                  f"{res['peer']['episodes_per_loop_cpu_second']:.3g}, ratio {res['ratio_per_loop_cpu_second']:.3f}")
    for name, text in phases.items():
        print(f"\nrlhfkit PPO phases ({name}):\n{text}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
