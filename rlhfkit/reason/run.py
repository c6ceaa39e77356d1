"""`rlhfkit world reason --out DIR`: RL with a verifier as the only reward, in a world
where written working helps and can be checked exactly.

    data  -> base (a tiny Llama pretrained from scratch on worked problems in a sloppy hand)
          -> sft  (a few hundred demonstrations, some with slips)
          -> rl   (GRPO-family RL from the SFT policy, reward = rlhfkit.rewards.verifiers:answer_reward)
          -> eval (pass@1, pass@k from n samples, greedy accuracy, faithfulness of the working)

Each stage writes a `.done` marker; rerunning the command skips finished stages and
resumes an interrupted one from its checkpoint (like `rlhfkit run`). The results go to
report.json: models.base, models.sft and models.rl, each with pass_at_1, pass_at_k
{k: rate}, right_answer_wrong_working, wrong_answer_right_working, seconds (its
training stage) and eval_seconds; seconds per stage; and the response length and
accuracy over RL training (rl_training). docs/reasoning.md has the measured figures.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

from rlhfkit.config import option, save_yaml
from rlhfkit.io import write_json, write_jsonl
from rlhfkit.pipeline import run_stage
from rlhfkit.reason.tasks import Problem, sample_problem, sloppy_working, times_table

# The RL algorithms --algo names: (what it is, its options of rlhfkit ppo). All share the
# world's learning rate, batch, group size and epochs, so that they differ only by these.
RL_ALGOS = {
    "grpo": ("GRPO, Shao et al. 2024: group mean/std advantage, mean over each response's tokens",
             {"advantage_estimator": "grpo", "loss_type": "grpo"}),
    "dr_grpo": ("Dr. GRPO, Liu et al. 2025: no std division, token sum over a constant",
                {"advantage_estimator": "dr_grpo", "loss_type": "dr_grpo"}),
    # the soft penalty's buffer is the last 8 of the 48 tokens: a right response takes about 35
    "dapo": ("DAPO, Yu et al. 2025: token mean, clip-higher 0.28, dynamic sampling, soft overlong penalty",
             {"advantage_estimator": "grpo", "loss_type": "dapo", "clip_range_high": 0.28, "dynamic_sampling": True,
              "overlong": "penalty", "overlong_buffer": 8}),
    "gspo": ("GSPO, Zheng et al. 2025: one sequence-level ratio per response, clip 3e-4 / 4e-4",
             {"advantage_estimator": "grpo", "loss_type": "gspo", "clip_range": 3e-4, "clip_range_high": 4e-4}),
    "rloo": ("RLOO, Ahmadian et al. 2024: leave-one-out baseline, token mean",
             {"advantage_estimator": "rloo", "loss_type": "ppo"}),
    "ppo": ("PPO with a learned value function (GAE), one response per prompt",
            {"advantage_estimator": "gae", "loss_type": "ppo", "samples_per_prompt": 1,
             "whiten_advantages": "minibatch"}),
}


ALGO_HELP = ("RL algorithm, or several comma-separated, each an RL stage from the same SFT policy: "
             + ", ".join(f"{name} ({what})" for name, (what, _) in RL_ALGOS.items()))


def parse_algos(algo: str) -> list[str]:
    """The comma-separated --algo, checked against RL_ALGOS."""
    names = [a.strip() for a in algo.split(",") if a.strip()]
    unknown = [a for a in names if a not in RL_ALGOS]
    if unknown or not names:
        raise ValueError(f"--algo: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(RL_ALGOS)}")
    return names


@dataclass
class ReasonConfig:
    """The reasoning world: multi-digit addition and multiplication by one digit with the
    working written out, a tiny model pretrained from scratch, SFT on a few hundred
    demonstrations, then RL with the answer checker as the only reward."""

    output_dir: str = option("runs/reason", "run directory (rerun the same command to resume)")
    seed: int = option(0, "seed of the problems, the models and every stage")
    digits_min: int = option(3, "fewest digits of the first operand")
    digits_max: int = option(3, "most digits of the first operand")
    pretrain_problems: int = option(12000, "worked problems in the base model's text, written by a sloppy hand")
    pretrain_slip_rate: float = option(0.15, "chance that the pretraining text's writer slips on a step")
    pretrain_times_tables: int = option(1600, "times tables in the base model's text (multipliers 2-9 in turn, carries "
                                        "0-8, 0-9 times each), written as the steps write them: without them the "
                                        "base rarely writes a right product")
    pretrain_epochs: float = option(2.0, "passes over the pretraining text")
    pretrain_batch: int = option(16, "pretraining sequences per step (small batches learn more per FLOP here)")
    pretrain_learning_rate: float = option(2e-3, "peak pretraining learning rate (cosine decay)")
    demonstrations: int = option(400, "SFT demonstrations")
    demo_slip_rate: float = option(0.05, "chance that a demonstrator slips on a step")
    sft_epochs: float = option(2.0, "passes over the demonstrations")
    rl_prompts: int = option(4000, "RL problems (answers known to the verifier, disjoint from the evaluation)")
    rl_mul_share: float = option(0.0, "share of multiplications among the RL prompts, made by repeating the "
                                 "drawn ones (0: as drawn, about a fifth: the pretraining text holds most)")
    eval_problems: int = option(200, "held-out problems for the evaluation")
    eval_samples: int = option(16, "samples per problem (n of the pass@k estimator; k up to n)")
    passk_per_family: int = option(16, "evaluation problems of each family on which the pass@k curves are drawn "
                                   "(the first ones of the evaluation set)")
    passk_samples: int = option(256, "samples per problem of the pass@k curves (k = 1 .. this)")
    hidden: int = option(64, "model width")
    layers: int = option(4, "transformer layers")
    heads: int = option(4, "attention heads")
    rl_episodes: int = option(65536, "RL responses sampled over the whole run (512 steps of --rl_batch 128)")
    rl_batch: int = option(128, "responses per RL step (rl_batch / rl_group_size prompts)")
    rl_group_size: int = option(8, "responses per prompt (the GRPO group)")
    rl_learning_rate: float = option(2e-4, "RL learning rate (4e-4 stopped learning once the base knew its times "
                                     "tables: batch accuracy 0.5 -> 0.3 by step 100, KL 2-4 nats)")
    rl_warmup_ratio: float = option(0.05, "share of the RL steps warming the learning rate up linearly")
    rl_epochs: int = option(1, "passes over each RL batch")
    algo: str = option("grpo", ALGO_HELP)
    seeds: list[int] = option([], "run the whole recipe once per seed, e.g. 0,1,2 (default: --seed alone); with "
                              "several seeds or algorithms each run goes to seed<s>/ and sweep.json/sweep.md give "
                              "every figure as the mean over seeds with its 95% interval")
    rl_kl_coef: float = option(0.0, "KL coefficient to the SFT policy (in the loss, k3)")
    response_length: int = option(48, "most response tokens")
    num_threads: int = option(0, "torch CPU threads (0: torch's default)")
    progress: bool = option(False, "progress bars")


PASS_KS = (1, 2, 4, 8, 16)


def _unique_problems(rng: random.Random, n: int, cfg: ReasonConfig, taken: set) -> list[Problem]:
    out = []
    while len(out) < n:
        p = sample_problem(rng, (cfg.digits_min, cfg.digits_max))
        if p.prompt not in taken:
            taken.add(p.prompt)
            out.append(p)
    return out


def _mix(problems: list[Problem], mul_share: float, seed: int) -> list[Problem]:
    """The same number of problems with a share mul_share of multiplications, the drawn
    multiplications repeated in turn (0: the problems as drawn). Only the RL prompts are
    mixed, so the other sets, the pretraining text and the models stay as they are. Only 7,200
    multiplications exist (100-999 times 2-9); the pretraining text takes 4,600 of them and
    the unique draws then favour additions: at seed 0 the RL problems drawn hold 22%
    multiplications (the demonstrations 26%, the evaluation 47%)."""
    if not mul_share:
        return problems
    muls, adds = [p for p in problems if p.op == "mul"], [p for p in problems if p.op == "add"]
    n_mul = min(len(problems), round(mul_share * len(problems)))
    if not muls or len(adds) < len(problems) - n_mul:
        raise ValueError(f"cannot make a share {mul_share} of multiplications from {len(muls)} of {len(problems)}")
    mixed = [muls[i % len(muls)] for i in range(n_mul)] + adds[:len(problems) - n_mul]
    random.Random(seed).shuffle(mixed)
    return mixed


def data_paths(data: Path) -> dict[str, str]:
    """The data stage's files: pretraining text, demonstrations, RL prompts, evaluation
    problems, and the untrained model (init)."""
    paths = {k: str(data / f"{k}.jsonl") for k in ("pretrain", "sft", "rl_prompts", "eval")}
    paths["init"] = str(data / "init")
    return paths


def make_data(cfg: ReasonConfig, data: Path) -> dict[str, str]:
    """Pretraining text, demonstrations, RL prompts (with answers) and evaluation problems,
    four disjoint sets of problems; the tokenizer and the untrained model. Deterministic."""
    paths = data_paths(data)
    data.mkdir(parents=True, exist_ok=True)
    rng, taken = random.Random(cfg.seed), set()
    evals = _unique_problems(rng, cfg.eval_problems, cfg, taken)
    pre = _unique_problems(rng, cfg.pretrain_problems, cfg, taken)
    demos = _unique_problems(rng, cfg.demonstrations, cfg, taken)
    rl = _mix(_unique_problems(rng, cfg.rl_prompts, cfg, taken), cfg.rl_mul_share, cfg.seed)
    write_jsonl(Path(paths["eval"]), [{"op": p.op, "a": p.a, "b": p.b} for p in evals])
    texts = [p.prompt + sloppy_working(p, rng, cfg.pretrain_slip_rate) for p in pre]
    # the tables draw nothing from rng, so every other file is the same with or without them
    texts += [times_table(2 + i % 8, i // 8 % 9) for i in range(cfg.pretrain_times_tables)]
    write_jsonl(Path(paths["pretrain"]), [{"text": t} for t in texts])
    write_jsonl(Path(paths["sft"]), [{"prompt": p.prompt, "completion": sloppy_working(p, rng, cfg.demo_slip_rate)}
                                      for p in demos])
    write_jsonl(Path(paths["rl_prompts"]), [{"prompt": p.prompt, "answer": str(p.answer)} for p in rl])
    _init_model(cfg, Path(paths["init"]), [p.prompt + sloppy_working(p, rng, 0.0) for p in pre[:2000]])
    return paths


def _init_model(cfg: ReasonConfig, directory: Path, texts: list[str]) -> None:
    """A byte-level tokenizer (digits one per token, a few merges) and a random tiny Llama."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhfkit.models.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer(texts, vocab_size=300, model_max_length=128)
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.hidden * 3,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=128, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=None))
    model.save_pretrained(directory)
    tok.save_pretrained(directory)


def stage_configs(cfg: ReasonConfig, out: Path, paths: dict, algo: str = "grpo", rl_dir: str = "rl"):
    """The base, SFT and RL stage configs (the library's own trainers); RL as RL_ALGOS[algo]."""
    from rlhfkit.trainers.ppo.config import PPOConfig
    from rlhfkit.trainers.sft import SFTConfig

    common = {"seed": cfg.seed, "num_threads": cfg.num_threads, "progress": cfg.progress, "max_length": 128,
                  "eval_fraction": 0.0, "disable_dropout": True, "lr_scheduler": "cosine", "log_every": 20}
    base = SFTConfig(model=paths["init"], data=paths["pretrain"], output_dir=str(out / "base"),
                     learning_rate=cfg.pretrain_learning_rate, warmup_ratio=0.02,
                     per_device_batch_size=cfg.pretrain_batch,
                     num_epochs=cfg.pretrain_epochs, checkpoint_every=100, **common)
    sft = SFTConfig(model=str(out / "base"), data=paths["sft"], output_dir=str(out / "sft"), learning_rate=3e-4,
                    per_device_batch_size=16, num_epochs=cfg.sft_epochs, **common)
    rl_options = {"samples_per_prompt": cfg.rl_group_size, "whiten_advantages": "none", **RL_ALGOS[algo][1]}
    rl = PPOConfig(model=str(out / "sft"), prompts=paths["rl_prompts"], output_dir=str(out / rl_dir), seed=cfg.seed,
                   reward_functions=["rlhfkit.rewards.verifiers:answer_reward"],
                   kl_placement="loss" if cfg.rl_kl_coef else "none", kl_coef=cfg.rl_kl_coef, kl_estimator="k3",
                   total_episodes=cfg.rl_episodes, rollout_batch_size=cfg.rl_batch,
                   per_device_train_batch_size=cfg.rl_batch, generation_batch_size=cfg.rl_batch,
                   ppo_epochs=cfg.rl_epochs, learning_rate=cfg.rl_learning_rate, warmup_ratio=cfg.rl_warmup_ratio,
                   adam_eps=1e-8, response_length=cfg.response_length, missing_eos_penalty=0.0,
                   max_prompt_length=32, num_threads=cfg.num_threads, progress=cfg.progress, log_every=4,
                   checkpoint_every=16, num_samples_logged=2, **rl_options)
    return base, sft, rl


def _evaluate(cfg: ReasonConfig, name: str, model_dir: Path, problems: list[Problem], out: Path) -> dict:
    from rlhfkit.reason.evaluate import evaluate_policy

    path = out / f"eval_{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    start = time.perf_counter()
    result = evaluate_policy(str(model_dir), problems, cfg.eval_samples, PASS_KS, cfg.response_length,
                             seed=cfg.seed)
    result["eval_seconds"] = time.perf_counter() - start
    write_json(path, result, indent=2)
    return result


def _pass_at_k_curves(cfg: ReasonConfig, name: str, model_dir: Path, problems: list[Problem], out: Path) -> dict:
    """The model's pass@k curves on the fixed subset, cached in passk_<name>.json."""
    from rlhfkit.reason.evaluate import fixed_subset, pass_at_k_curves

    path = out / f"passk_{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    start = time.perf_counter()
    result = pass_at_k_curves(str(model_dir), fixed_subset(problems, cfg.passk_per_family), cfg.passk_samples,
                              cfg.response_length, seed=cfg.seed)
    result["seconds"] = time.perf_counter() - start
    write_json(path, result, indent=2)
    return result


def _rl_curve(metrics: Path) -> list[dict]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    return [{"step": r["step"], "episodes": r["episodes"], "response_length": r["response/length"],
             "length_right": r.get("response/length_scored_positive"),
             "length_wrong": r.get("response/length_scored_nonpositive"),
             "accuracy": r.get("objective/scores_answer_reward"), "kl": r["objective/kl"]} for r in rows]


def run_reason(cfg: ReasonConfig) -> Path:
    """One run (one seed, one algorithm) into --out; several seeds or algorithms into
    --out/seed<s>/ (base and SFT shared by the algorithms of a seed) with a sweep report."""
    import torch

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    algos, seeds = parse_algos(cfg.algo), list(cfg.seeds) or [cfg.seed]
    out = Path(cfg.output_dir)
    if len(algos) == 1 and len(seeds) == 1:
        run_one(replace(cfg, seed=seeds[0], seeds=[], algo=algos[0]), out, algos[0], "rl")
        return out
    from rlhfkit.reason.sweep import write_sweep

    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    reports = {}
    for seed in seeds:
        for algo in algos:
            seed_cfg = replace(cfg, seed=seed, seeds=[], algo=algo, output_dir=str(out / f"seed{seed}"))
            reports[algo, seed] = run_one(seed_cfg, out / f"seed{seed}", algo, f"rl_{algo}")
    write_sweep(reports, algos, seeds, out)
    return out


def run_one(cfg: ReasonConfig, out: Path, algo: str, rl_dir: str) -> dict:
    """data -> base -> SFT -> RL (algo, into out/rl_dir) -> evaluations; writes and returns the
    report (report.json for rl_dir "rl", else report_<algo>.json)."""
    from rlhfkit.trainers.ppo.trainer import train_ppo
    from rlhfkit.trainers.sft import train_sft

    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / ("config.yaml" if rl_dir == "rl" else f"config_{algo}.yaml"))
    paths = data_paths(out / "data")  # a stage like the others: a finished one is skipped
    seconds = {"data": run_stage("data", out / "data", lambda _cfg: make_data(cfg, out / "data"), None)}
    base, sft, rl = stage_configs(cfg, out, paths, algo, rl_dir)
    seconds["base"] = run_stage("base", out / "base", train_sft, base)
    seconds["sft"] = run_stage("sft", out / "sft", train_sft, sft)
    seconds["rl"] = run_stage(rl_dir, out / rl_dir, train_ppo, rl)
    problems = [Problem(**json.loads(line)) for line in Path(paths["eval"]).read_text().splitlines()]
    models, curves = {}, {}
    for name, directory in (("base", "base"), ("sft", "sft"), ("rl", rl_dir)):
        models[name] = _evaluate(cfg, directory, out / directory, problems, out)
        curves[name] = _pass_at_k_curves(cfg, directory, out / directory, problems, out)
        seconds[f"eval_{name}"] = models[name]["eval_seconds"] + curves[name]["seconds"]
        models[name]["seconds"] = seconds[name]  # training the model (its stage), as eval_seconds is evaluating it
    report = build_report(algo, models, curves, _rl_curve(out / rl_dir / "metrics.jsonl"), seconds)
    name = "report" if rl_dir == "rl" else f"report_{algo}"
    write_json(out / f"{name}.json", report, indent=2)
    plot_pass_at_k(report, out / f"{name.replace('report', 'pass_at_k')}.png")
    (out / f"{name}.md").write_text(report_markdown(report, f"{name.replace('report', 'pass_at_k')}.png"))
    print(summary(report))
    return report


def build_report(algo: str, models: dict, curves: dict, rl_training: list[dict], seconds: dict) -> dict:
    """report.json: the evaluations, the pass@k curves (k = 1..passk_samples, overall and per
    family) with the k where base's or SFT's curve reaches RL's, the RL training curve, seconds."""
    from rlhfkit.reason.evaluate import crossing_k

    families = [k for k in curves["rl"] if k not in ("all", "samples_per_problem", "counts", "seconds")]
    pass_curves = {name: c["all"] for name, c in curves.items()}
    return {
        "world": "reason",
        "algo": algo,
        "models": models,
        "gain_pass_at_1": models["rl"]["pass_at_1"] - models["sft"]["pass_at_1"],
        "pass_at_k": pass_curves,
        "pass_at_k_by_family": {op: {name: c[op] for name, c in curves.items()} for op in families},
        "pass_at_k_problems": {op: len(curves["rl"]["counts"][op]) for op in families},
        "pass_at_k_samples": curves["rl"]["samples_per_problem"],
        "crossing_k": crossing_k(pass_curves),
        "crossing_k_by_family": {op: crossing_k({name: c[op] for name, c in curves.items()}) for op in families},
        "rl_training": rl_training,
        "seconds": {**seconds, "total": sum(seconds.values())},
    }


def plot_pass_at_k(report: dict, path: Path) -> None:
    """One figure: pass@k against k (log scale) for base, SFT and RL, a panel per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {"all": report["pass_at_k"], **report["pass_at_k_by_family"]}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (family, by_model) in zip(axes[0], panels.items()):
        for name, curve in by_model.items():
            ks = [int(k) for k in curve]
            ax.plot(ks, list(curve.values()), label=name.upper() if name != "base" else "base")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("k")
        ax.set_title(f"{family} ({report['pass_at_k_samples']} samples a problem)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("pass@k")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report_markdown(report: dict, plot: str) -> str:
    crossing = report["crossing_k"]
    by_family = ", ".join(f"{op} {k if k is not None else 'none'}" for op, k in report["crossing_k_by_family"].items())
    return "\n".join([
        f"# The reasoning world: {report['algo']}", "", "```", summary(report), "```", "",
        (f"pass@k for k = 1..{report['pass_at_k_samples']} (unbiased estimator, {report['pass_at_k_samples']} samples "
         f"a problem on {sum(report['pass_at_k_problems'].values())} fixed evaluation problems):"), "",
        f"![pass@k]({plot})", "",
        (f"Smallest k where base's or SFT's pass@k reaches RL's: {crossing if crossing is not None else 'none'} "
         f"(per family: {by_family})."), ""])


def summary(report: dict) -> str:
    lines = ["model  pass@1  " + "  ".join(f"pass@{k:<2}" for k in report["models"]["sft"]["pass_at_k"])
             + f"  pass@{report['pass_at_k_samples']:<3}  greedy  add/mul pass@1  right-ans/wrong-work  wrong-ans/right-work"]
    for name, m in report["models"].items():
        by_op = m["pass_at_1_by_op"]
        big_k = report["pass_at_k"][name].get(str(report["pass_at_k_samples"]), float("nan"))
        lines.append(f"{name:<6} {m['pass_at_1']:6.3f}  " + "  ".join(f"{v:7.3f}" for v in m["pass_at_k"].values())
                     + f"  {big_k:8.3f}  {m['greedy_accuracy']:6.3f}  {by_op.get('add', 0):.3f}/{by_op.get('mul', 0):.3f}"
                     f"  {m['right_answer_wrong_working']:20.3f}  {m['wrong_answer_right_working']:20.3f}")
    lines.append(f"crossing_k {report['crossing_k']}  by family {json.dumps(report['crossing_k_by_family'])}")
    curve = report["rl_training"]
    if curve:
        lines.append(f"RL response length {curve[0]['response_length']:.1f} -> {curve[-1]['response_length']:.1f} "
                     f"tokens; seconds {json.dumps({k: round(v) for k, v in report['seconds'].items()})}")
    return "\n".join(lines)
