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
      comparisons_ai/ rm_ai/ ppo_ai/  (with --feedback ai) RLAIF beside RLHF
      eval/         one JSON per model (figures, per-decoding gold scores) + samples
      report.json  report.md  *.png

The stages are in rlhfkit/experiment/stages.py, their options and the world's
defaults in options.py. Every stage writes a `.done` marker
(rlhfkit.pipeline.run_stage); re-running the same command skips finished stages
and resumes an interrupted trainer from its last checkpoint; the report is
rebuilt from the stored files, so it is the same. The choices behind the
defaults and the seconds per stage are in docs/results.md.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from rlhfkit.config import save_yaml
from rlhfkit.experiment.options import BEST_OF_N, ORACLE, RL_METHODS, RunConfig, expand_algo, resolve_model_path
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
    """Run (or resume) the whole world; returns the run directory."""
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    algo = expand_algo(cfg.algo)  # the options were checked when cfg was built (RunConfig.RULES)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    base_small, base_large = resolve_model_path(cfg.base_small), resolve_model_path(cfg.base_large)
    seconds: dict[str, float] = {}

    seconds["data"] = run_plain_stage("data", out / "data", lambda: data_stage(cfg, out))

    demonstrations = str(out / "data" / "demonstrations.jsonl")
    sft_cfg = stage_config(SFTConfig, cfg.sft, cfg, model=base_small, data=demonstrations, output_dir=str(out / "sft"))
    seconds["sft"] = run_stage("sft", out / "sft", train_sft, sft_cfg, log=log)

    rm_init = {"base_large": base_large, "sft": str(out / "sft")}.get(cfg.rm_init)
    if cfg.rm_init == "sft_large":
        large_cfg = stage_config(SFTConfig, cfg.sft_large, cfg, model=base_large, data=demonstrations,
                                 output_dir=str(out / "sft_large"))
        seconds["sft_large"] = run_stage("sft_large", out / "sft_large", train_sft, large_cfg, log=log)
        rm_init = str(out / "sft_large")

    seconds["comparisons"] = run_plain_stage("comparisons", out / "comparisons", lambda: comparisons_stage(cfg, out))

    rm_cfg = stage_config(RewardConfig, cfg.rm, cfg, model=rm_init, output_dir=str(out / "rm"),
                          data=str(out / "comparisons" / "comparisons.jsonl"),
                          eval_data=str(out / "comparisons" / "heldout.jsonl"), normalize_on="responses")
    seconds["rm"] = run_stage("rm", out / "rm", lambda c: rm_stage(cfg, out, c), rm_cfg, log=log)

    models = {"base_small": base_small, "base_large": base_large, "sft": str(out / "sft")}
    if cfg.feedback == "ai":
        seconds.update(ai_feedback_stages(cfg, out, rm_cfg, base_large))
        models["ppo_ai"] = str(out / "ppo_ai")
    for name in [a for a in RL_METHODS if a in algo]:
        critic_free = {} if name == "ppo" else {"advantage_estimator": name, "samples_per_prompt": cfg.rl_group_size}
        seconds[name] = run_stage(name, out / name, train_ppo_with_gold,
                                  ppo_stage_config(cfg, out, out / name, **critic_free), log=log)
        models[name] = str(out / name)
    for name in [a for a in algo if a in DIRECT_METHODS]:
        seconds[name], models[name] = direct_stage(cfg, out, name, base_small)
    if ORACLE in algo:
        seconds[ORACLE] = run_stage(ORACLE, out / ORACLE, train_ppo_with_gold, oracle_stage_config(cfg, out), log=log)
        models[ORACLE] = str(out / ORACLE)
    if cfg.ptx:
        ptx_cfg = ppo_stage_config(cfg, out, out / "ppo_ptx", ptx_data=ptx_data(cfg, out), ptx_coef=cfg.ptx_coef)
        seconds["ppo_ptx"] = run_stage("ppo_ptx", out / "ppo_ptx", train_ppo_with_gold, ptx_cfg, log=log)
        models["ppo_ptx"] = str(out / "ppo_ptx")

    sft_holder: dict = {}
    eval_seconds = 0.0
    for name in ("sft", *[m for m in models if m != "sft"]):
        if not (out / "eval" / f"{name}.json").exists():  # the figures live beside the marker's directory
            (out / "eval" / name / DONE).unlink(missing_ok=True)
        eval_seconds += run_plain_stage(f"eval {name}", out / "eval" / name,
                                        lambda name=name: eval_stage(cfg, out, name, models[name], sft_holder))
    if BEST_OF_N in algo:
        if not all((out / "eval" / f"bon{n}.json").exists() for n in cfg.bon_n):
            (out / "eval" / BEST_OF_N / DONE).unlink(missing_ok=True)
        eval_seconds += run_plain_stage(f"eval {BEST_OF_N}", out / "eval" / BEST_OF_N,
                                        lambda: best_of_n_stage(cfg, out))
        models.update({f"bon{n}": f"bon{n}" for n in cfg.bon_n})
    seconds["eval"] = eval_seconds
    start = time.perf_counter()
    write_report(out, cfg, models, seconds)
    log(f"report: {out / 'report.md'} ({time.perf_counter() - start:.1f}s)")
    return out
