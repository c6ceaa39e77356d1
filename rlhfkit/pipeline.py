"""SFT -> reward model -> PPO in one run directory (docs/architecture.md):

    <output_dir>/config.yaml  sft/  rm/  ppo/  (each a Hugging Face directory
    with its own metrics.jsonl and checkpoints/)

or, with `--algo dpo` (ipo, cdpo, robust, hinge, simpo, kto), SFT -> the direct
method on the comparisons (sft/ dpo/), and with `--algo orpo` one ORPO stage
from the model on the comparisons (orpo/), no SFT stage.

Each stage writes a `.done` marker when its model is saved; re-running the same
command skips finished stages and resumes an interrupted one from its last
checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rlhfkit.config import check_options, check_sets_itself, did_you_mean, nested, option, save_yaml
from rlhfkit.io import write_json
from rlhfkit.losses.advantages import GROUP_ADVANTAGES
from rlhfkit.trainers.dpo import DIRECT_METHODS, DPOConfig, for_method, train_dpo
from rlhfkit.trainers.fingerprint import NOT_RESULT_OPTIONS, options_of
from rlhfkit.trainers.ppo.config import PPOConfig
from rlhfkit.trainers.ppo.trainer import train_ppo
from rlhfkit.trainers.reward import RewardConfig, train_reward_model
from rlhfkit.trainers.runlock import acquire_lock, release_lock
from rlhfkit.trainers.sft import SFTConfig, train_sft

DONE = ".done"


@dataclass
class PipelineConfig:
    """The InstructGPT recipe: SFT on demonstrations, a reward model on comparisons,
    PPO against it with a per-token KL penalty to the SFT policy."""

    output_dir: str = option("runs/pipeline", "run directory")
    seed: int = option(0, "seed for every stage")
    num_threads: int = option(0, "torch CPU threads for every stage (0: torch's default)")
    model: str = option("", "pretrained causal LM the policy starts from")
    reward_model_init: str = option("", "checkpoint the reward model starts from (default: the SFT model)")
    demonstrations: str = option("", "SFT data (prompt/completion, messages or text)")
    comparisons: str = option("", "reward-model data (pairs or K-way rankings)")
    prompts: str = option("", "PPO prompts")
    algo: str = option("ppo", "ppo (SFT -> RM -> PPO), a direct method after SFT (dpo, ipo, cdpo, robust, hinge, "
                       "simpo, kto), or orpo (one stage from --model on the comparisons)")
    sft: SFTConfig = nested(SFTConfig, "SFT stage options")
    rm: RewardConfig = nested(RewardConfig, "reward-model stage options")
    ppo: PPOConfig = nested(PPOConfig, "PPO stage options")
    dpo: DPOConfig = nested(DPOConfig, "direct-method stage options (--algo dpo, ..., orpo)")

    # the stage options the pipeline sets itself: giving one is an error (rlhfkit.config)
    SETS_ITSELF: ClassVar[dict[str, tuple[str, ...]]] = {
        "*": ("model", "data", "output_dir", "seed", "num_threads"), "ppo": ("reward_model", "prompts"),
        "dpo": ("loss",)}
    RULES: ClassVar[dict] = {"algo": lambda v: _algo_problem(v), "num_threads": ">= 0"}

    def __post_init__(self) -> None:
        check_options(self)
        check_sets_itself(self)


def _algo_problem(algo: str) -> str | None:
    if algo == "ppo" or algo in DIRECT_METHODS:
        return None
    if algo in GROUP_ADVANTAGES:  # critic-free RL runs as the PPO stage with a group baseline
        return (f"algo: {algo} is an advantage estimator of the RL stage, not a method of its own: use --algo ppo "
                f"--ppo.advantage_estimator {algo} --ppo.samples_per_prompt 4 (K responses per prompt, 2 or more)")
    return (f"algo: unknown method {algo!r}; choose ppo or one of {sorted(DIRECT_METHODS)}"
            f"{did_you_mean(str(algo), ['ppo', *DIRECT_METHODS])}")


def stage_done(path: Path) -> bool:
    return (path / DONE).exists()


def _options(cfg) -> dict:
    return options_of(cfg)


def mark_done(path: Path, seconds: float, cfg=None) -> None:
    """The marker keeps the stage's options, so a rerun with other options is noticed."""
    write_json(path / DONE, {"seconds": seconds, "options": _options(cfg)})


def _read_marker(path: Path, log=print) -> dict | None:
    """A stage's marker, or None (and a warning) when it cannot be read: the stage then
    runs again, resuming from its checkpoints."""
    try:
        marker = json.loads((path / DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        log(f"warning: {path / DONE} is unreadable ({type(e).__name__}); the stage runs again from its checkpoints")
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("options", {}), dict):
        log(f"warning: {path / DONE} is malformed; the stage runs again from its checkpoints")
        return None
    return marker


def changed_options(stored: dict, cfg) -> list[str]:
    """'name old -> new' for each option of cfg that differs from `stored` (a marker's)."""
    return [f"{k} {stored[k]!r} -> {v!r}" for k, v in _options(cfg).items()
            if k in stored and k not in NOT_RESULT_OPTIONS and stored[k] != v]


def run_stage(name: str, directory: Path, train, cfg, log=print) -> float:
    """Run one stage unless its marker says it finished; returns its seconds. A finished
    stage is kept even when the options changed (resuming must not retrain silently
    either), and the changed options are named so that nobody mistakes it for a new run."""
    marker = _read_marker(directory, log) if stage_done(directory) else None
    if marker is not None:
        changed = changed_options(marker.get("options", {}), cfg)
        if changed:
            log(f"[{name}] already done with other options ({'; '.join(changed)}): kept as it is; "
                f"delete {directory} to train it with the new ones")
        else:
            log(f"[{name}] already done: {directory}")
        return float(marker.get("seconds") or 0.0)
    (directory / DONE).unlink(missing_ok=True)
    log(f"[{name}] -> {directory}")
    start = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - start
    mark_done(directory, seconds, cfg)
    log(f"[{name}] done in {_duration(seconds)}")
    return seconds


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def run_pipeline(cfg: PipelineConfig) -> Path:
    needed = {"ppo": ("model", "demonstrations", "comparisons", "prompts"),
              "orpo": ("model", "comparisons")}.get(cfg.algo, ("model", "demonstrations", "comparisons"))
    missing = [f"--{name}" for name in needed if not getattr(cfg, name)]
    if missing:
        raise ValueError(f"pipeline --algo {cfg.algo} needs {', '.join(missing)}")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(out)  # a second pipeline into the same directory fails at once, naming this one's pid
    try:
        save_yaml(cfg, out / "config.yaml")
        return _direct_pipeline(cfg, out) if cfg.algo != "ppo" else _ppo_pipeline(cfg, out)
    finally:
        release_lock(lock)


def _shared(cfg: PipelineConfig) -> dict:
    """The options every stage takes from the pipeline's own."""
    return {"seed": cfg.seed, "num_threads": cfg.num_threads}


def _ppo_pipeline(cfg: PipelineConfig, out: Path) -> Path:
    sft_dir, rm_dir, ppo_dir = out / "sft", out / "rm", out / "ppo"
    sft = dataclasses.replace(cfg.sft, model=cfg.model, data=cfg.demonstrations, output_dir=str(sft_dir),
                              **_shared(cfg))
    rm = dataclasses.replace(cfg.rm, model=cfg.reward_model_init or str(sft_dir), data=cfg.comparisons,
                             output_dir=str(rm_dir), **_shared(cfg))
    ppo = dataclasses.replace(cfg.ppo, model=str(sft_dir), reward_model=str(rm_dir), prompts=cfg.prompts,
                              output_dir=str(ppo_dir), **_shared(cfg))
    seconds = {"sft": run_stage("sft", sft_dir, train_sft, sft),
               "rm": run_stage("rm", rm_dir, train_reward_model, rm),
               "ppo": run_stage("ppo", ppo_dir, train_ppo, ppo)}
    write_json(out / "stages.json", {"seconds": seconds}, indent=2)
    return out


def _direct_pipeline(cfg: PipelineConfig, out: Path) -> Path:
    """SFT -> a direct method on the comparisons, or ORPO alone from the model."""
    seconds = {}
    start_model = cfg.model
    if cfg.algo != "orpo":
        sft = dataclasses.replace(cfg.sft, model=cfg.model, data=cfg.demonstrations, output_dir=str(out / "sft"),
                                  **_shared(cfg))
        seconds["sft"] = run_stage("sft", out / "sft", train_sft, sft)
        start_model = str(out / "sft")
    direct = for_method(dataclasses.replace(cfg.dpo, model=start_model, data=cfg.comparisons,
                                            output_dir=str(out / cfg.algo), **_shared(cfg)), cfg.algo)
    seconds[cfg.algo] = run_stage(cfg.algo, out / cfg.algo, train_dpo, direct)
    write_json(out / "stages.json", {"seconds": seconds}, indent=2)
    return out
