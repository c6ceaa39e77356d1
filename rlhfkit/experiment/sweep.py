"""`sweep_kl`: PPO at several KL coefficients from the same SFT policy and reward
model (a finished world run), with the same budget, to choose beta and to see
over-optimisation (Gao et al. 2022): the proxy reward keeps rising with KL while
the gold score peaks and falls; the KL penalty acts like early stopping.

    <output_dir>/beta_<b>/   PPO run (metrics.jsonl logs objective/scores_rm, objective/scores_gold, objective/kl)
    <output_dir>/sweep.json  per beta: final training proxy/gold/KL, and the policy's
                             gold and KL to SFT on the run's evaluation prompts
    <output_dir>/sweep.png   gold and proxy reward against sqrt(KL) for each beta
    <output_dir>/sweep.md
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfkit.config import from_dict, load_yaml, option, save_yaml
from rlhfkit.io import write_json
from rlhfkit.pipeline import run_stage


@dataclass
class SweepConfig:
    """PPO at several KL coefficients from a finished world run's SFT policy and reward model."""

    run_dir: str = option("runs/world", "a finished `rlhfkit run` directory (its sft/ and rm/ are reused)")
    output_dir: str = option("", "sweep directory (default: <run_dir>/sweep_kl); re-running resumes")
    betas: list[float] = option([0.0, 0.005, 0.02, 0.1], "KL coefficients to try")
    total_episodes: int = option(0, "episodes per PPO run (0: the run's own PPO budget)")
    learning_rate: float = option(0.0, "PPO learning rate of every run (0: the run's own)")
    eval_prompts: int = option(0, "evaluation prompts used per policy (0: all of the run's)")
    evaluate: bool = option(True, "also measure each policy's gold and KL to SFT on the evaluation prompts")
    num_threads: int = option(0, "torch CPU threads (0: all cores, torch's default; 1 on a busy machine)")


def _beta_name(beta: float) -> str:
    return f"beta_{beta:g}"


def sweep_kl(cfg: SweepConfig) -> Path:
    from rlhfkit.experiment.data import tasks_of
    from rlhfkit.experiment.evaluate import evaluate_policy
    from rlhfkit.experiment.options import RunConfig
    from rlhfkit.experiment.layout import SeedLayout
    from rlhfkit.experiment.report_plots import overoptimisation_points, plot_overoptimisation, read_metrics
    from rlhfkit.experiment.stages import ppo_stage_config, train_ppo_with_gold
    from rlhfkit.io import read_jsonl

    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    run = Path(cfg.run_dir)
    for needed in ("sft", "rm"):
        if not (run / needed / ".done").exists():
            raise FileNotFoundError(f"{run / needed} is not finished: run `rlhfkit run --output_dir {run}` first")
    run_cfg = from_dict(RunConfig, load_yaml(run / "config.yaml"), where=str(run / "config.yaml"))
    out = Path(cfg.output_dir) if cfg.output_dir else run / "sweep_kl"
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")

    results: dict[str, dict] = {}
    sft_model = None
    rows = read_jsonl(run / "data" / "eval_prompts.jsonl")
    if cfg.eval_prompts:
        rows = rows[:cfg.eval_prompts]
    for beta in cfg.betas:
        name = _beta_name(beta)
        overrides = {"kl_coef": beta}
        if cfg.total_episodes:
            overrides["total_episodes"] = cfg.total_episodes
        if cfg.learning_rate:
            overrides["learning_rate"] = cfg.learning_rate
        ppo_cfg = ppo_stage_config(run_cfg, SeedLayout.single(run, run_cfg.seed), out / name, **overrides)
        seconds = run_stage(name, out / name, train_ppo_with_gold, ppo_cfg, log=lambda m: print(m, flush=True))
        points = overoptimisation_points(out / name / "metrics.jsonl")
        last = read_metrics(out / name / "metrics.jsonl")[-1]
        result = {"beta": beta, "seconds": seconds, "train_proxy": last.get("objective/scores_rm"),
                  "train_gold": last.get("objective/scores_gold"), "train_kl": last.get("objective/kl"),
                  "train_length": last.get("response/length"), "max_train_gold": max(points["gold"], default=None)}
        eval_file = out / name / "eval.json"
        if cfg.evaluate and not eval_file.exists():
            if sft_model is None:
                from rlhfkit.models.loading import load_causal_lm, load_tokenizer

                sft_model = load_causal_lm(str(run / "sft"), load_tokenizer(str(run / "sft"))).eval()
            ev = evaluate_policy(str(out / name), tasks_of(rows), [r["prompt"] for r in rows], sft_model=sft_model,
                                 max_new_tokens=run_cfg.max_new_tokens, batch_size=run_cfg.eval_batch_size,
                                 seed=run_cfg.seed + 7)
            f = ev["figures"]
            write_json(eval_file, {k: f[k] for k in ("gold", "likert", "exact", "follows", "follows_constrained",
                                                     "terminated", "length", "kl_to_sft")}, indent=2)
        if eval_file.exists():
            result["eval"] = json.loads(eval_file.read_text())
        results[name] = result
    write_json(out / "sweep.json", results, indent=2)
    try:
        plot_overoptimisation({f"beta {r['beta']:g}": out / n / "metrics.jsonl" for n, r in results.items()},
                              out / "sweep.png", title="KL sweep: gold and proxy reward vs sqrt(KL)")
    except ImportError as e:
        print(f"sweep: no plot ({e})")
    episodes = cfg.total_episodes or run_cfg.ppo.total_episodes
    lr = cfg.learning_rate or run_cfg.ppo.learning_rate
    lines = ["# KL sweep", "", f"From `{run}` (SFT and RM reused), {episodes} episodes per beta, learning rate {lr:g}.", "",
             "| beta | train proxy | train gold | train KL | eval gold | eval KL to SFT | eval length |",
             "|---:|---:|---:|---:|---:|---:|---:|"]

    def f(x, fmt=".3f"):
        return "n/a" if x is None else format(x, fmt)

    for r in results.values():
        e = r.get("eval", {})
        lines.append(f"| {r['beta']:g} | {f(r['train_proxy'])} | {f(r['train_gold'])} | {f(r['train_kl'], '.2f')} | "
                     f"{f(e.get('gold'))} | {f(e.get('kl_to_sft'), '.2f')} | {f(e.get('length'), '.1f')} |")
    lines += ["", "![sweep](sweep.png)", ""]
    (out / "sweep.md").write_text("\n".join(lines))
    return out
