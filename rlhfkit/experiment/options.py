"""The options of `rlhfkit run`: the run's own (sizes, labelers, methods) and, for
each stage, the trainer's options with the world's defaults. This is the one place
where the world's settings override the trainers' (the measurements behind them
are in docs/results.md)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rlhfkit.config import ConfigError, check_options, check_sets_itself, did_you_mean, nested, option
from rlhfkit.losses.advantages import GROUP_ADVANTAGES
from rlhfkit.trainers.dpo import DIRECT_METHODS, DPOConfig
from rlhfkit.trainers.ppo.config import PPOConfig
from rlhfkit.trainers.reward import RewardConfig
from rlhfkit.trainers.sft import SFTConfig
from rlhfkit.world.labelers import DEFAULT_NOISE_STD, LabelerConfig

DEFAULT_BASE_SMALL = "rlhfkit/world/checkpoints/base-small"
DEFAULT_BASE_LARGE = "rlhfkit/world/checkpoints/base-large"
RL_METHODS = ("ppo", *GROUP_ADVANTAGES)  # the PPO stage; rloo and grpo with a group baseline, no critic
ORACLE = "ppo_gold"  # PPO with the gold judge as its reward: an upper bound no real run has
BEST_OF_N = "bon"  # best-of-n samples of SFT by the reward model, reported as bon<n> for each of bon_n
# `--algo all`: the method table (SFT and the bases are always there)
ALL_METHODS = ("ppo", "rloo", "grpo", BEST_OF_N, "dpo", "ipo", "orpo", "kto", ORACLE)
RM_INITS = ("sft_large", "base_large", "sft")
FEEDBACK = ("labelers", "ai")
SEED_SCOPES = ("methods", "all")
ON_A_TERMINAL = sys.stderr.isatty()  # the stages' progress bars: on a terminal, one line per stage otherwise


# ----------------------------------------------------------------------------- stage options with world defaults

@dataclass
class WorldSFTConfig(SFTConfig):
    """SFT options of the world run (model, data, output_dir and seed are set by the run)."""

    learning_rate: float = option(1e-3, "peak learning rate (a 0.87M-parameter model takes a large one)")
    num_epochs: float = option(3.0, "passes over the demonstrations (InstructGPT: 16)")
    per_device_batch_size: int = option(32, "demonstrations per optimizer step")
    warmup_ratio: float = option(0.03, "warmup share of the steps")
    eval_fraction: float = option(0.02, "demonstrations held out for validation loss")
    max_length: int = option(128, "longest demonstration in tokens")
    group_by_length: bool = option(False, "batch demonstrations of similar length (off: it costs the policy gold)")
    log_every: int = option(20, "write metrics every N steps")
    progress: bool = option(ON_A_TERMINAL, "show a progress bar (step, loss or reward, time left; default: on a "
                            "terminal)")


@dataclass
class WorldSFTLargeConfig(WorldSFTConfig):
    """SFT of base-large on the demonstrations, the reward model's starting point (rm_init sft_large);
    the policy's SFT options except these."""

    learning_rate: float = option(3e-4, "peak learning rate (an 8M model)")
    num_epochs: float = option(1.0, "passes over the demonstrations")
    group_by_length: bool = option(True, "batch demonstrations of similar length (half the time)")


@dataclass
class WorldRewardConfig(RewardConfig):
    """Reward-model options of the world run (model, data and output_dir are set by the run)."""

    learning_rate: float = option(1e-4, "peak learning rate")
    num_epochs: float = option(1.0, "passes over the comparisons (InstructGPT: 1)")
    per_device_batch_size: int = option(8, "prompts (each with all its ranked responses) per step")
    warmup_ratio: float = option(0.05, "warmup share of the steps")
    max_length: int = option(128, "longest prompt + response in tokens")
    group_by_length: bool = option(True, "batch prompts of similar length")
    normalize_max_texts: int = option(2048, "SFT comparison responses the normalisation statistics are taken on")
    log_every: int = option(10, "write metrics every N steps")
    progress: bool = option(ON_A_TERMINAL, "show a progress bar (step, loss or reward, time left; default: on a "
                            "terminal)")
    reward_form: str = option("mean_logprob", "mean_logprob (LM head kept, mean token log-likelihood), logratio (the "
                              "same minus the frozen starting model's) or head (InstructGPT's scalar head)")


@dataclass
class WorldPPOConfig(PPOConfig):
    """PPO options of the world run (model, reward model and prompts are set by the run)."""

    learning_rate: float = option(1.5e-4, "peak learning rate of the policy, decayed linearly")
    critic_learning_rate: float = option(1e-3, "peak learning rate of the value model (a new head learns faster)")
    total_episodes: int = option(4096, "episodes (one response per prompt) over the run: 32 PPO steps")
    rollout_batch_size: int = option(128, "episodes per PPO step")
    num_minibatches: int = option(2, "minibatches per PPO epoch")
    ppo_epochs: int = option(2, "passes over each rollout batch")
    per_device_train_batch_size: int = option(64, "micro-batch of the update")
    generation_batch_size: int = option(128, "prompts generated at once")
    response_length: int = option(48, "most tokens per response (the evaluation's limit)")
    kl_coef: float = option(0.02, "beta of the per-token KL penalty to SFT (rewards in RM std units)")
    value_model: str = option("sft", "value model init: sft (the SFT policy with a new head), rm, or a path")
    max_length: int = option(256, "longest prompt + response")
    log_every: int = option(1, "write metrics every N PPO steps")
    num_samples_logged: int = option(8, "sample responses written to samples.jsonl per logged step")
    progress: bool = option(ON_A_TERMINAL, "show a progress bar (step, loss or reward, time left; default: on a "
                            "terminal)")


@dataclass
class WorldDPOConfig(DPOConfig):
    """Direct-preference options of the world run (model = SFT, data = the comparisons)."""

    learning_rate: float = option(5e-5, "peak learning rate (a 0.87M policy), decayed linearly")
    num_epochs: float = option(2.0, "passes over the comparison pairs")
    per_device_batch_size: int = option(32, "pairs per forward pass")
    max_length: int = option(256, "longest prompt + response")
    eval_fraction: float = option(0.05, "pairs held out for the implicit-reward accuracy")
    log_every: int = option(5, "write metrics every N optimizer steps")
    progress: bool = option(ON_A_TERMINAL, "show a progress bar (step, loss or reward, time left; default: on a "
                            "terminal)")


@dataclass
class WorldORPOConfig(DPOConfig):
    """ORPO options of the world run: one stage from base-small (no SFT stage), so
    the step sizes are SFT's; data = the comparisons + labeled demonstration pairs."""

    learning_rate: float = option(1e-3, "peak learning rate (SFT's: ORPO also does the SFT)")
    num_epochs: float = option(3.0, "passes over the pairs (SFT's 3 over the demonstrations)")
    per_device_batch_size: int = option(32, "pairs per forward pass")
    warmup_ratio: float = option(0.03, "warmup share of the steps")
    lr_scheduler: str = option("cosine", "learning-rate schedule after warmup (SFT's)")
    orpo_lambda: float = option(0.1, "weight of the odds-ratio term against the chosen NLL (paper: 0.1)")
    max_length: int = option(256, "longest prompt + response")
    eval_fraction: float = option(0.02, "pairs held out for the odds-ratio accuracy")
    log_every: int = option(20, "write metrics every N optimizer steps")
    progress: bool = option(ON_A_TERMINAL, "show a progress bar (step, loss or reward, time left; default: on a "
                            "terminal)")


# ----------------------------------------------------------------------------- the run

@dataclass
class RunConfig:
    """The InstructGPT recipe in the instruction world: data, SFT, comparisons, reward
    model, PPO (and PPO-ptx), evaluation by the gold judge, report."""

    # stage options the run sets itself: passing one is an error (rlhfkit.config)
    SETS_ITSELF = {"*": ("model", "data", "output_dir", "seed", "num_threads"), "rm": ("eval_data", "normalize_on"),
                   "ppo": ("reward_model", "prompts", "reward_weights"), "dpo": ("loss",), "orpo": ("loss",)}
    RULES: ClassVar[dict] = {
        "rm_init": lambda v: None if v in RM_INITS else
        f"rm_init: unknown starting point {v!r}; choose {' or '.join(RM_INITS)}{did_you_mean(str(v), RM_INITS)}",
        "feedback": lambda v: None if v in FEEDBACK else
        f"feedback: unknown source {v!r}; choose {' or '.join(FEEDBACK)}{did_you_mean(str(v), FEEDBACK)}",
        "seed_scope": lambda v: None if v in SEED_SCOPES else
        f"seed_scope: unknown scope {v!r}; choose {' or '.join(SEED_SCOPES)}{did_you_mean(str(v), SEED_SCOPES)}",
        "seeds": lambda v: _seeds_problem(v),
        "algo": lambda v: _algo_problem(v), "k": ">= 2", "rl_group_size": ">= 2", "bon_n": ">= 1",
        "ai_reasoning_tokens": ">= 1",
        "demonstrations": ">= 1", "comparison_prompts": ">= 1", "ppo_prompts": ">= 1", "eval_prompts": ">= 1",
        "validation_prompts": ">= 0", "webtext_eval_docs": ">= 0", "ptx_docs": ">= 1", "max_new_tokens": ">= 1",
        "eval_batch_size": ">= 1", "eval_temperatures": "> 0", "comparison_temperature": "> 0",
        "labeler_target_agreement": "(0, 1]", "labeler_noise_std": ">= 0", "labeler_length_bias": "finite",
        "rm_heldout_fraction": "[0, 1)", "ptx_coef": ">= 0", "num_threads": ">= 0",
        "workers": ">= 1"}

    output_dir: str = option("runs/world", "run directory (re-running the same command resumes)")
    seed: int = option(0, "seed of every split, labeler and stage (the run's own seed)")
    seeds: list[int] = option([], "train and evaluate the methods once per seed, e.g. 0,1,2 (default: --seed "
                              "alone); the report gives every figure as the mean over seeds with its 95% interval")
    seed_scope: str = option("methods", "with --seeds: methods (PPO, RLOO, GRPO, the DPO family, the oracle and "
                             "best-of-n's draws run per seed from one shared SFT, comparisons and reward model) or "
                             "all (the whole recipe per seed, SFT, comparisons and reward model included)")
    base_small: str = option(DEFAULT_BASE_SMALL, "base model the SFT and RLHF policies start from")
    base_large: str = option(DEFAULT_BASE_LARGE, "the world's GPT-3: the baseline to beat, and the AI labeler")
    rm_init: str = option("sft", "the reward model's starting point: sft (the SFT policy), sft_large (base-large "
                          "fine-tuned on the demonstrations) or base_large")
    demonstrations: int = option(13000, "SFT demonstrations (InstructGPT: 13k)")
    comparison_prompts: int = option(3000, "comparison prompts, K responses each ranked")
    k: int = option(4, "responses sampled per comparison prompt (InstructGPT: 4 to 9)")
    comparison_temperature: float = option(1.0, "sampling temperature of the comparison responses")
    ppo_prompts: int = option(2048, "PPO prompts (the episode budget cycles through them)")
    eval_prompts: int = option(1000, "evaluation prompts, even over the families")
    validation_prompts: int = option(256, "validation prompts (disjoint from the evaluation prompts) on which each "
                                     "model's best sampling temperature is chosen")
    max_new_tokens: int = option(48, "most tokens per sampled response (comparisons and evaluation)")
    labeler_target_agreement: float = option(0.73, "recalibrate labeler noise on the SFT samples to this agreement")
    calibrate_labelers: bool = option(True, "recalibrate the labelers' noise on the real SFT samples")
    labeler_noise_std: float = option(DEFAULT_NOISE_STD, "labeler noise when not recalibrated")
    labeler_length_bias: float = option(0.002, "labelers' bias per character toward longer answers")
    rm_heldout_fraction: float = option(0.1, "comparison prompts held out for the reward model's accuracy")
    webtext_eval_docs: int = option(100, "held-out web-text documents for the alignment tax")
    eval_batch_size: int = option(256, "prompts generated at once in evaluation")
    eval_temperatures: list[float] = option([0.5, 0.7, 1.0], "sampling temperatures each model's best is chosen from "
                                            "(on the validation prompts)")
    algo: list[str] = option(["ppo"], "methods on the same comparisons, comma-separated: ppo, rloo, grpo (RL against "
                             "the reward model), bon (best-of-n of SFT by the RM), any of dpo, ipo, cdpo, robust, "
                             "hinge, simpo, kto (from SFT), orpo (from base-small), ppo_gold (PPO against the gold "
                             "judge: an upper bound); all: the method table's " + ", ".join(ALL_METHODS))
    bon_n: list[int] = option([4, 16], "best-of-n sizes (--algo bon), each reported as bon<n>")
    feedback: str = option("labelers", "labelers (RLHF), or ai: also RLAIF, from an AI judge's rankings (rm_ai/, "
                           "ppo_ai/) and with the judge as the reward (ppo_ai_direct/)")
    ai_judge: str = option("base_large", "the AI labeler's model: base_large, or a path (e.g. a judge from `rlhfkit "
                           "world pretrain --models judge`, base-large after reading critiques)")
    ai_principles: str = option("", "the AI labeler's constitution, one principle a line: a file, world (the world's, "
                                "rlhfkit/world/constitution.txt), or empty for none (base-large read no principles)")
    ai_reasoning: bool = option(False, "the AI labeler writes its checks before each verdict (chain of thought; for a "
                                "judge that read critiques)")
    ai_reasoning_tokens: int = option(128, "longest review the AI labeler writes, in tokens")
    ai_ablations: bool = option(True, "also measure on the held-out pairs the labeler without reasoning, without "
                                "principles, and base-small and base-large as judges (report.md's cost table)")
    rl_group_size: int = option(4, "rloo and grpo: responses per prompt, each prompt's baseline")
    ptx: bool = option(False, "also train and evaluate a PPO-ptx policy")
    ptx_coef: float = option(2.0, "gamma of PPO-ptx (InstructGPT 27.8 with its loss scale)")
    ptx_docs: int = option(2000, "web-text documents for PPO-ptx")
    num_threads: int = option(0, "torch CPU threads, 0 for all cores (pass 1 when other work shares them)")
    workers: int = option(1, "method stages and evaluations run at once, each in a process of its own with "
                          "num_threads / workers threads (several seeds: 2 on a 2-core CPU keeps both cores busy "
                          "with models too small to use two threads well); 1: one after another in this process")
    sft: WorldSFTConfig = nested(WorldSFTConfig, "SFT stage options")
    sft_large: WorldSFTLargeConfig = nested(WorldSFTLargeConfig, "options of base-large's SFT (rm_init sft_large)")
    rm: WorldRewardConfig = nested(WorldRewardConfig, "reward-model stage options")
    ppo: WorldPPOConfig = nested(WorldPPOConfig, "PPO stage options")
    dpo: WorldDPOConfig = nested(WorldDPOConfig, "options of the direct methods (--algo dpo, ...)")
    orpo: WorldORPOConfig = nested(WorldORPOConfig, "options of ORPO (--algo orpo)")
    orpo_demonstration_pairs: bool = option(True, "ORPO: pair every demonstration with base-small's own response "
                                            "to its prompt, ranked by the labelers (else comparisons only)")

    def __post_init__(self) -> None:
        check_options(self)
        check_sets_itself(self)


def resolve_model_path(path: str) -> str:
    """A base-model path as given, or relative to the repository root."""
    p = Path(path)
    if p.exists():
        return str(p)
    root = Path(__file__).resolve().parents[2]  # the repository root
    if (root / p).exists():
        return str(root / p)
    raise FileNotFoundError(f"base model not found: {path} (train it with `rlhfkit world pretrain` "
                            "or pass --base_small/--base_large)")


def run_seeds(cfg: RunConfig) -> list[int]:
    """The seeds a run trains its methods with: --seeds, or --seed alone."""
    return list(cfg.seeds) or [cfg.seed]


def _seeds_problem(seeds: list[int]) -> str | None:
    if any(s < 0 for s in seeds):
        return f"seeds: every seed must be >= 0 (got {seeds})"
    if len(set(seeds)) != len(seeds):
        return f"seeds: a seed is listed twice (got {seeds})"
    return None


def labeler_config(cfg: RunConfig) -> LabelerConfig:
    return LabelerConfig(noise_std=cfg.labeler_noise_std, length_bias=cfg.labeler_length_bias, seed=cfg.seed)


def _algo_problem(algo: list[str]) -> str | None:
    known = (*RL_METHODS, BEST_OF_N, ORACLE, *DIRECT_METHODS)
    unknown = [a for a in algo if a != "all" and a not in known]
    if not unknown:
        return None
    return (f"algo: unknown method {unknown[0]!r}; choose any of {', '.join(RL_METHODS)}, {BEST_OF_N}, "
            f"{', '.join(sorted(DIRECT_METHODS))}, {ORACLE} or all{did_you_mean(str(unknown[0]), [*known, 'all'])}")


def expand_algo(algo: list[str]) -> list[str]:
    """`--algo` with `all` expanded, duplicates dropped, unknown names refused."""
    problem = _algo_problem(algo)
    if problem:
        raise ConfigError(problem)
    return list(dict.fromkeys(m for a in algo for m in (ALL_METHODS if a == "all" else (a,))))

