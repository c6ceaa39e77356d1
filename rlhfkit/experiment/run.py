"""`rlhfkit run`: the InstructGPT recipe end to end in the instruction world
(docs/world.md), evaluated by the gold judge, with report.json and report.md.

    <output_dir>/
      config.yaml
      data/         demonstrations, comparison / PPO / evaluation / validation prompts (JSONL)
      sft/          SFT from base-small on the demonstrations
      comparisons/  K SFT samples per comparison prompt, ranked by recalibrated labelers
                    (samples.jsonl, comparisons.jsonl for training, heldout.jsonl, labelers.json)
      rm/           reward model from the SFT policy (rm_init; sft_large/ when it starts from
                    base-large fine-tuned on the demonstrations), Bradley-Terry over all pairs
                    of a prompt; by default it scores by mean response log-likelihood, its LM
                    head kept, normalised on the SFT samples; rm/heldout.json
      ppo/          PPO from SFT against the RM, per-token KL to SFT, gold logged with weight 0
      ppo_ptx/      (with --ptx) PPO-ptx: + ptx_coef * web-text log-likelihood
      rloo/ grpo/   (with --algo) critic-free RL: the PPO stage with a group baseline
      dpo/ ipo/ ... (with --algo) a direct method from SFT on the same comparisons
      orpo_data/ orpo/  (with --algo orpo) ORPO from base-small, one stage
      ppo_gold/     (with --algo ppo_gold) PPO against the gold judge: an upper bound
      comparisons_ai/ rm_ai/ ppo_ai/  (with --feedback ai) RLAIF beside RLHF: the AI judge's rankings,
      references_ai/ ppo_ai_direct/   a reward model on them and PPO on it; SFT references and PPO with
                                      the judge itself as the reward (direct RLAIF)
      eval/         one JSON per model (figures, per-prompt values per decoding) + samples
      seeds/<s>/    (with --seeds) another seed's method stages and eval/ (experiment/layout.py)
      report.json  report.md  *.png  (figures over the seeds, each with its 95% interval)

The stages are in rlhfkit/experiment/stages.py, their options and the world's
defaults in options.py. Every stage writes a `.done` marker
(rlhfkit.pipeline.run_stage); re-running the same command skips finished stages
and resumes an interrupted trainer from its last checkpoint; the report is
rebuilt from the stored files, so it is the same. The choices behind the
defaults and the seconds per stage are in docs/results.md.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from rlhfkit.config import save_yaml
from rlhfkit.experiment.jobs import Job, run_jobs
from rlhfkit.experiment.layout import SeedLayout, seed_layout
from rlhfkit.experiment.options import (BEST_OF_N, ORACLE, RL_METHODS, RunConfig, expand_algo, resolve_model_path,
                                        run_seeds)
from rlhfkit.experiment.report import write_report
from rlhfkit.experiment.stages import (
    ai_feedback_stages,
    best_of_n_stage,
    comparisons_stage,
    data_stage,
    direct_stage,
    eval_stage,
    log,
    oracle_stage_config,
    orpo_data,
    ppo_ai_direct_stage_config,
    ppo_ai_stage_config,
    ppo_stage_config,
    ptx_data,
    rm_stage,
    run_plain_stage,
    stage_config,
    train_ppo_with_gold,
)
from rlhfkit.pipeline import DONE, run_stage
from rlhfkit.trainers.dpo import DIRECT_METHODS
from rlhfkit.trainers.reward import RewardConfig
from rlhfkit.trainers.sft import SFTConfig, train_sft


def run_world(cfg: RunConfig) -> Path:
    """Run (or resume) the whole world, once per seed of --seeds; returns the run directory."""
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    bases = {"base_small": resolve_model_path(cfg.base_small), "base_large": resolve_model_path(cfg.base_large)}
    shared_seconds = {"data": run_plain_stage("data", out / "data", lambda: data_stage(cfg, out))}
    job_threads = max(1, (cfg.num_threads or torch.get_num_threads()) // cfg.workers)
    seeds: dict[int, tuple[SeedLayout, dict[str, str], dict[str, float]]] = {}
    seed_jobs: dict[int, list[Job]] = {}
    results: dict[str, object] = {}
    recipes_done: set[Path] = set()
    for seed in run_seeds(cfg):
        lay = seed_layout(out, cfg.seed, seed, cfg.seed_scope)
        seconds: dict[str, float] = {}
        if lay.recipe not in recipes_done:  # sft, comparisons, rm: once per recipe (shared or per seed)
            recipe_seconds = recipe_stages(dataclasses.replace(cfg, seed=lay.recipe_seed), lay, bases)
            (seconds if lay.recipe != out else shared_seconds).update(recipe_seconds)
            recipes_done.add(lay.recipe)
        seed_cfg = dataclasses.replace(cfg, seed=seed, **({"num_threads": job_threads} if cfg.workers > 1 else {}))
        seed_jobs[seed], models = method_jobs(seed_cfg, lay, bases)
        seeds[seed] = (lay, models, seconds)
        if cfg.workers == 1:  # one seed after another, as the stages are listed
            results.update(run_jobs(seed_jobs[seed], 1, job_threads))
    if cfg.workers > 1:  # every seed's jobs, --workers at a time; a shared evaluation once
        unique: dict[str, Job] = {}
        for job in (job for jobs in seed_jobs.values() for job in jobs):
            unique.setdefault(job.key, job)  # a shared evaluation with the first seed's settings, as one by one
        results = run_jobs(list(unique.values()), cfg.workers, job_threads)
    for seed, (lay, models, seconds) in seeds.items():
        for job in seed_jobs[seed]:
            if job.name.startswith("eval "):
                seconds["eval"] = seconds.get("eval", 0.0) + results[job.key]
            else:
                seconds[job.name] = results[job.key]
        if BEST_OF_N in expand_algo(cfg.algo):
            models.update({f"bon{n}": f"bon{n}" for n in cfg.bon_n})
    start = time.perf_counter()
    write_report(out, cfg, seeds, shared_seconds)
    log(f"report: {out / 'report.md'} ({time.perf_counter() - start:.1f}s)")
    return out


def recipe_stages(cfg: RunConfig, lay: SeedLayout, bases: dict[str, str]) -> dict[str, float]:
    """What every method learns from: SFT of base-small on the demonstrations, the SFT
    samples ranked by the labelers, the reward model (and, with --feedback ai, the AI
    labeler's rankings and a reward model on them)."""
    seconds = {}
    demonstrations = str(lay.data / "demonstrations.jsonl")
    sft_cfg = stage_config(SFTConfig, cfg.sft, cfg, model=bases["base_small"], data=demonstrations,
                           output_dir=str(lay.sft))
    seconds["sft"] = run_stage(lay.stage_name("sft"), lay.sft, train_sft, sft_cfg, log=log)
    rm_init = {"base_large": bases["base_large"], "sft": str(lay.sft)}.get(cfg.rm_init)
    if cfg.rm_init == "sft_large":
        large_dir = lay.recipe / "sft_large"
        large_cfg = stage_config(SFTConfig, cfg.sft_large, cfg, model=bases["base_large"], data=demonstrations,
                                 output_dir=str(large_dir))
        seconds["sft_large"] = run_stage(lay.stage_name("sft_large"), large_dir, train_sft, large_cfg, log=log)
        rm_init = str(large_dir)
    seconds["comparisons"] = run_plain_stage(lay.stage_name("comparisons"), lay.comparisons,
                                             lambda: comparisons_stage(cfg, lay))
    rm_cfg = stage_config(RewardConfig, cfg.rm, cfg, model=rm_init, output_dir=str(lay.rm),
                          data=str(lay.comparisons / "comparisons.jsonl"),
                          eval_data=str(lay.comparisons / "heldout.jsonl"), normalize_on="responses")
    seconds["rm"] = run_stage(lay.stage_name("rm"), lay.rm, lambda c: rm_stage(cfg, lay, c), rm_cfg, log=log)
    if cfg.feedback == "ai":
        seconds.update(ai_feedback_stages(cfg, lay, rm_cfg, bases))
    return seconds


def method_jobs(cfg: RunConfig, lay: SeedLayout, bases: dict[str, str]) -> tuple[list[Job], dict[str, str]]:
    """Every method of --algo from the recipe, with this seed, and then every model's
    evaluation by the gold judge (SFT first: it is every other model's KL reference;
    then best-of-n), as jobs; and {model name: path}."""
    algo = expand_algo(cfg.algo)  # the options were checked when cfg was built (RunConfig.RULES)
    models = {**bases, "sft": str(lay.sft)}
    jobs: list[Job] = []

    def train(name: str, fn, stage_cfg) -> None:
        jobs.append(Job(f"{lay.seed}/{name}", name, run_stage, (lay.stage_name(name), lay.methods / name, fn,
                                                                 stage_cfg, log)))
        models[name] = str(lay.methods / name)

    if cfg.feedback == "ai":
        train("ppo_ai", train_ppo_with_gold, ppo_ai_stage_config(cfg, lay))
        train("ppo_ai_direct", train_ppo_with_gold, ppo_ai_direct_stage_config(cfg, lay, bases["base_large"]))
    for name in [a for a in RL_METHODS if a in algo]:
        critic_free = {} if name == "ppo" else {"advantage_estimator": name, "samples_per_prompt": cfg.rl_group_size}
        train(name, train_ppo_with_gold, ppo_stage_config(cfg, lay, lay.methods / name, **critic_free))
    for name in [a for a in algo if a in DIRECT_METHODS]:
        if name == "orpo" and cfg.workers > 1:  # its pairs are the recipe's: made once, before the seeds' jobs
            orpo_data(cfg, lay, bases["base_small"])
        jobs.append(Job(f"{lay.seed}/{name}", name, direct_stage_seconds, (cfg, lay, name, bases["base_small"])))
        models[name] = str(lay.methods / name)
    if ORACLE in algo:
        train(ORACLE, train_ppo_with_gold, oracle_stage_config(cfg, lay))
    if cfg.ptx:
        train("ppo_ptx", train_ppo_with_gold, ppo_stage_config(cfg, lay, lay.methods / "ppo_ptx",
                                                               ptx_data=ptx_data(cfg, lay.run), ptx_coef=cfg.ptx_coef))
    trained = {job.name: job.key for job in jobs}
    for name in ("sft", *[m for m in models if m != "sft"]):
        directory = lay.eval_dir(name) / name  # shared models: one directory, so one job, for every seed
        jobs.append(Job(str(directory), f"eval {name}", evaluate_model, (cfg, lay, name, models[name]),
                        after=(trained[name],) if name in trained else ()))
    if BEST_OF_N in algo:
        jobs.append(Job(f"{lay.seed}/eval {BEST_OF_N}", f"eval {BEST_OF_N}", evaluate_best_of_n_stage, (cfg, lay),
                        after=(str(lay.eval_dir("sft") / "sft"),)))
    return jobs, models


def direct_stage_seconds(cfg: RunConfig, lay: SeedLayout, name: str, base_small: str) -> float:
    """direct_stage as a job: its seconds (the path is known before it runs)."""
    return direct_stage(cfg, lay, name, base_small)[0]


_SFT_REFERENCE: dict = {}  # this process's loaded SFT model, every evaluation's KL reference (eval_stage)


def evaluate_model(cfg: RunConfig, lay: SeedLayout, name: str, path: str) -> float:
    """One model's figures by the gold judge; returns the seconds. An evaluation whose figures
    file is lost, or that predates the per-prompt values the intervals need, runs again."""
    eval_dir = lay.eval_dir(name)
    if not _has_per_prompt_values(eval_dir / f"{name}.json"):
        (eval_dir / name / DONE).unlink(missing_ok=True)
    return run_plain_stage(lay.stage_name(f"eval {name}"), eval_dir / name,
                           lambda: eval_stage(cfg, lay, name, path, _SFT_REFERENCE))


def evaluate_best_of_n_stage(cfg: RunConfig, lay: SeedLayout) -> float:
    """Best-of-n's figures (SFT's evaluation must be done); returns the seconds."""
    eval_dir = lay.methods / "eval"
    if not all(_has_per_prompt_values(eval_dir / f"bon{n}.json") for n in cfg.bon_n):
        (eval_dir / BEST_OF_N / DONE).unlink(missing_ok=True)
    return run_plain_stage(lay.stage_name(f"eval {BEST_OF_N}"), eval_dir / BEST_OF_N, lambda: best_of_n_stage(cfg, lay))


def _has_per_prompt_values(path: Path) -> bool:
    """The evaluation file exists and keeps each prompt's values (the report's intervals)."""
    if not path.exists():
        return False
    try:
        return "per_prompt" in json.loads(path.read_text())["decodings"]["t1"]
    except (ValueError, KeyError, TypeError):
        return False
