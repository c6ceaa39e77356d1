"""`rlhfkit run`: the InstructGPT recipe end to end in the instruction world
(docs/world.md), evaluated by the gold judge, with report.json and report.md.

    <output_dir>/
      config.yaml
      data/         demonstrations, comparison/PPO/eval prompts, web text for PPO-ptx (JSONL)
      sft/          SFT from base-small on the demonstrations
      sft_large/    SFT from base-large on the same demonstrations: the reward model's
                    starting point (InstructGPT's RM started from its 6B SFT model)
      comparisons/  K SFT samples per comparison prompt, ranked by recalibrated labelers
                    (comparisons.jsonl for training, heldout.jsonl, labelers.json)
      rm/           reward model from sft_large (Bradley-Terry over all pairs per prompt; by
                    default it scores by mean response log-likelihood, its LM head kept),
                    normalised to mean 0 / std 1 on the SFT samples; rm/heldout.json
      ppo/          PPO from SFT against the RM, per-token KL to SFT, gold logged with weight 0
      ppo_ptx/      (with ptx: true) PPO-ptx: + ptx_coef * web-text log-likelihood
      rloo/ grpo/   (with --algo) critic-free RL: the PPO stage with a group baseline over
                    rl_group_size responses per prompt in place of the value model
      dpo/ ipo/ ... (with --algo) a direct method from SFT on the same comparisons
      orpo_data/ orpo/  (with --algo orpo) ORPO from base-small: comparisons + labeled
                    (demonstration, base-small sample) pairs, one stage
      eval/         one JSON per model (figures, per-decoding gold scores) + samples
      report.json  report.md  *.png

Every stage writes a `.done` marker (rlhfkit.pipeline.run_stage); re-running
the same command skips finished stages and resumes an interrupted trainer from
its last checkpoint; the report is rebuilt from the stored files, so it is the
same.

Choices (documented again in report.md):

- Comparisons: responses that ran out of tokens stay in their ranking, marked
  `terminated: false`, and are encoded without EOS; empty responses and
  duplicate texts are dropped (the loader refuses both); a ranking needs >= 2
  responses left. The labelers' noise is
  recalibrated (calibrate_noise, target 0.73) on the K raw SFT samples before
  labelling; comparisons/labelers.json records the noise and the agreement.
- Reward model: base-large fine-tuned on the demonstrations (sft_large; rm_init
  base_large skips that stage), scoring by mean response log-likelihood,
  Bradley-Terry over all pairs of a prompt in one batch element, one epoch;
  normalised to mean 0 / std 1 on (a 2,048-sample of) the kept SFT comparison
  responses. Held-out figures on 10% of the comparison prompts
  (stages.reward_model_figures).
- PPO: from SFT, reference SFT, reward = RM (weight 1) + the gold judge
  (weight 0: logged as objective/scores_gold, never optimised) for the
  over-optimisation picture. The value model defaults to the SFT trunk with a
  new head (0.87M) rather than the 8M reward model: half the PPO step time.
- Time budget (2 shared CPU cores, base-small 0.87M / base-large 8.1M): see
  docs/results.md ("Choosing the default recipe") for the sizes chosen and the
  seconds measured per stage.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfkit.io import write_json
from rlhfkit.config import nested, option, save_yaml
from rlhfkit.losses.advantages import GROUP_ADVANTAGES
from rlhfkit.pipeline import DONE, run_stage
from rlhfkit.trainers.dpo import DIRECT_METHODS, DPOConfig, for_method, train_dpo
from rlhfkit.trainers.ppo import train_ppo
from rlhfkit.trainers.ppo_config import PPOConfig
from rlhfkit.trainers.reward import RewardConfig, train_reward_model
from rlhfkit.trainers.sft import SFTConfig, train_sft
from rlhfkit.world.labelers import DEFAULT_NOISE_STD, LabelerConfig

DEFAULT_BASE_SMALL = "rlhfkit/world/checkpoints/base-small"
DEFAULT_BASE_LARGE = "rlhfkit/world/checkpoints/base-large"
MODELS = ("base_small", "base_large", "sft", "ppo")
RL_METHODS = ("ppo", *GROUP_ADVANTAGES)  # the PPO stage; rloo and grpo with a group baseline, no critic
ORACLE = "ppo_gold"  # PPO with the gold judge as its reward: an upper bound no real run has
BEST_OF_N = "bon"  # best-of-n samples of SFT by the reward model, reported as bon<n> for each of bon_n
# `--algo all`: the method table (SFT and the bases are always there)
ALL_METHODS = ("ppo", "rloo", "grpo", BEST_OF_N, "dpo", "ipo", "orpo", "kto", ORACLE)
RM_INITS = ("sft_large", "base_large", "sft")
FEEDBACK = ("labelers", "ai")


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
    progress: bool = option(False, "show a progress bar")


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
    progress: bool = option(False, "show a progress bar")
    reward_form: str = option("mean_logprob", "mean_logprob (LM head kept, mean token log-likelihood) or head "
                              "(InstructGPT's scalar head)")


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
    progress: bool = option(False, "show a progress bar")


@dataclass
class WorldDPOConfig(DPOConfig):
    """Direct-preference options of the world run (model = SFT, data = the comparisons)."""

    learning_rate: float = option(5e-5, "peak learning rate (a 0.87M policy), decayed linearly")
    num_epochs: float = option(2.0, "passes over the comparison pairs")
    per_device_batch_size: int = option(32, "pairs per forward pass")
    max_length: int = option(256, "longest prompt + response")
    eval_fraction: float = option(0.05, "pairs held out for the implicit-reward accuracy")
    log_every: int = option(5, "write metrics every N optimizer steps")
    progress: bool = option(False, "show a progress bar")


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
    progress: bool = option(False, "show a progress bar")


# ----------------------------------------------------------------------------- the run

@dataclass
class RunConfig:
    """The InstructGPT recipe in the instruction world: data, SFT, comparisons, reward
    model, PPO (and PPO-ptx), evaluation by the gold judge, report."""

    # stage options the run sets itself: passing one is an error (rlhfkit.config)
    SETS_ITSELF = {"*": ("model", "data", "output_dir", "seed", "num_threads"), "rm": ("eval_data", "normalize_on"),
                   "ppo": ("reward_model", "prompts", "reward_weights"), "dpo": ("loss",), "orpo": ("loss",)}

    output_dir: str = option("runs/world", "run directory (re-running the same command resumes)")
    seed: int = option(0, "seed of every split, labeler and stage")
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
    feedback: str = option("labelers", "labelers (RLHF), or ai: also RLAIF from an AI judge's rankings (rm_ai/, "
                           "ppo_ai/)")
    ai_judge: str = option("", "the AI labeler's model (default: base_large)")
    ai_principles: str = option("", "a file of Constitutional-AI principles, one a line (default none: the world's "
                                "review documents carry no principle line)")
    rl_group_size: int = option(4, "rloo and grpo: responses per prompt, each prompt's baseline")
    ptx: bool = option(False, "also train and evaluate a PPO-ptx policy")
    ptx_coef: float = option(2.0, "gamma of PPO-ptx (InstructGPT 27.8 with its loss scale)")
    ptx_docs: int = option(2000, "web-text documents for PPO-ptx")
    num_threads: int = option(0, "torch CPU threads, 0 for all cores (pass 1 when other work shares them)")
    sft: WorldSFTConfig = nested(WorldSFTConfig, "SFT stage options")
    sft_large: WorldSFTLargeConfig = nested(WorldSFTLargeConfig, "options of base-large's SFT (rm_init sft_large)")
    rm: WorldRewardConfig = nested(WorldRewardConfig, "reward-model stage options")
    ppo: WorldPPOConfig = nested(WorldPPOConfig, "PPO stage options")
    dpo: WorldDPOConfig = nested(WorldDPOConfig, "options of the direct methods (--algo dpo, ...)")
    orpo: WorldORPOConfig = nested(WorldORPOConfig, "options of ORPO (--algo orpo)")
    orpo_demonstration_pairs: bool = option(True, "ORPO: pair every demonstration with base-small's own response "
                                            "to its prompt, ranked by the labelers (else comparisons only)")


def resolve_model_path(path: str) -> str:
    """A base-model path as given, or relative to the repository root."""
    p = Path(path)
    if p.exists():
        return str(p)
    root = Path(__file__).resolve().parents[2]
    if (root / p).exists():
        return str(root / p)
    raise FileNotFoundError(f"base model not found: {path} (train it with `rlhfkit world pretrain` "
                            "or pass --base_small/--base_large)")


def _log(msg: str) -> None:
    print(msg, flush=True)


def _timed(name: str, directory: Path, fn) -> float:
    """run_stage for a stage that is a plain function of no arguments."""
    directory.mkdir(parents=True, exist_ok=True)
    return run_stage(name, directory, lambda _cfg: fn(), None, log=_log)


def labeler_config(cfg: RunConfig) -> LabelerConfig:
    return LabelerConfig(noise_std=cfg.labeler_noise_std, length_bias=cfg.labeler_length_bias, seed=cfg.seed)


def _comparisons_stage(cfg: RunConfig, out: Path) -> None:
    from rlhfkit.models.loading import load_causal_lm, load_tokenizer
    from rlhfkit.world.stages import label_comparisons, read_jsonl, sample_responses, split_rows, tasks_of, write_jsonl

    rows = read_jsonl(out / "data" / "comparison_prompts.jsonl")
    tasks = tasks_of(rows)
    sft_dir = str(out / "sft")
    tokenizer = load_tokenizer(sft_dir)
    model = load_causal_lm(sft_dir, tokenizer).eval()
    # K samples per prompt: the prompt list repeated K times, one response each.
    prompts = [r["prompt"] for r in rows for _ in range(cfg.k)]
    s = sample_responses(model, tokenizer, prompts, temperature=cfg.comparison_temperature,
                         max_new_tokens=cfg.max_new_tokens, batch_size=cfg.eval_batch_size, seed=cfg.seed + 101)
    responses = [s.texts[i * cfg.k:(i + 1) * cfg.k] for i in range(len(rows))]
    terminated = [s.terminated[i * cfg.k:(i + 1) * cfg.k] for i in range(len(rows))]
    write_jsonl(out / "comparisons" / "samples.jsonl",
                [{"instruction": t.instruction, "responses": y, "terminated": e}
                 for t, y, e in zip(tasks, responses, terminated)])
    ranked, figures, labeler = label_comparisons(tasks, responses, terminated, seed=cfg.seed,
                                                 labeler=labeler_config(cfg),
                                                 target_agreement=cfg.labeler_target_agreement,
                                                 calibrate=cfg.calibrate_labelers)
    train, held = split_rows(ranked, cfg.rm_heldout_fraction, cfg.seed)
    write_jsonl(out / "comparisons" / "comparisons.jsonl", train)
    write_jsonl(out / "comparisons" / "heldout.jsonl", held)
    figures["labeler_config"] = dataclasses.asdict(labeler)
    figures["train_prompts"], figures["heldout_prompts"] = len(train), len(held)
    write_json(out / "comparisons" / "labelers.json", figures, indent=2)


def _rm_stage(cfg: RunConfig, out: Path, rm_cfg: RewardConfig) -> None:
    from rlhfkit.world.stages import read_jsonl, reward_model_figures

    train_reward_model(rm_cfg)
    labelers = json.loads((out / "comparisons" / "labelers.json").read_text())
    held = read_jsonl(out / "comparisons" / "heldout.jsonl")
    figures = reward_model_figures(rm_cfg.output_dir, held, LabelerConfig(**labelers["labeler_config"]))
    figures["reward_form"] = rm_cfg.reward_form
    figures["init"] = cfg.rm_init
    if rm_cfg.reward_form == "mean_logprob":
        figures["reward_scale"] = rm_cfg.reward_scale
    write_json(Path(rm_cfg.output_dir) / "heldout.json", figures, indent=2)


def _data_stage(cfg: RunConfig, out: Path) -> None:
    from rlhfkit.world.stages import make_world_data

    counts = make_world_data(out / "data", n_demonstrations=cfg.demonstrations,
                             n_comparison_prompts=cfg.comparison_prompts, n_ppo_prompts=cfg.ppo_prompts,
                             n_eval_prompts=cfg.eval_prompts, n_validation_prompts=cfg.validation_prompts,
                             seed=cfg.seed)
    if cfg.ptx:
        _ptx_data(cfg, out)
    write_json(out / "data" / "counts.json", counts, indent=2)


def _ptx_data(cfg: RunConfig, out: Path) -> str:
    from rlhfkit.world.stages import ptx_texts, write_jsonl

    path = out / "data" / "webtext_ptx.jsonl"
    if not path.exists():  # also reached by a resumed run that first ran without ptx
        write_jsonl(path, [{"text": t} for t in ptx_texts(cfg.ptx_docs, cfg.seed)])
    return str(path)


def _stage_config(trainer_config: type, options, cfg: RunConfig, **settings):
    """A trainer's config from the world's options for that stage (a subclass with the world's
    defaults), with the run's seed and threads and the stage's own settings (paths, ...)."""
    fields = {f.name: getattr(options, f.name) for f in dataclasses.fields(trainer_config)}
    fields.update({"seed": cfg.seed, "num_threads": cfg.num_threads, **settings})
    return trainer_config(**fields)


def ppo_stage_config(cfg: RunConfig, out: Path, directory: Path, **overrides) -> PPOConfig:
    """The PPO config of a world run: policy and reference = SFT, reward = the RM
    plus the gold judge with weight 0 (logged as objective/scores_gold only)."""
    value = {"sft": str(out / "sft"), "rm": str(out / "rm")}.get(cfg.ppo.value_model, cfg.ppo.value_model)
    settings = dict(model=str(out / "sft"), reward_model=str(out / "rm"), value_model=value,
                    prompts=str(out / "data" / "ppo_prompts.jsonl"), output_dir=str(directory),
                    reward_weights=[1.0, *[1.0] * len(cfg.ppo.reward_functions), 0.0])
    settings.update(overrides)
    if settings.get("advantage_estimator", cfg.ppo.advantage_estimator) != "gae":  # critic-free: no value model
        settings["value_model"] = ""
    return _stage_config(PPOConfig, cfg.ppo, cfg, **settings)


def _train_ppo_with_gold(ppo_cfg: PPOConfig) -> Path:
    from rlhfkit.world.stages import gold

    return train_ppo(ppo_cfg, reward_fns=(gold,))


def oracle_stage_config(cfg: RunConfig, out: Path) -> PPOConfig:
    """PPO with the gold judge as its only reward (no reward model), scaled like the
    RM: 1 / the std of gold over the K SFT samples of the comparison prompts, so
    that beta and the learning rate mean the same as in PPO against the RM."""
    from rlhfkit.world.stages import read_jsonl, tasks_of
    from rlhfkit.world.judge import judge_task

    rows = read_jsonl(out / "comparisons" / "samples.jsonl")
    golds = [judge_task(t, y, e).gold for t, r in zip(tasks_of(rows), rows)
             for y, e in zip(r["responses"], r["terminated"])]
    mean = sum(golds) / len(golds)
    std = (sum((g - mean) ** 2 for g in golds) / max(len(golds) - 1, 1)) ** 0.5
    weights = [*[1.0] * len(cfg.ppo.reward_functions), 1.0 / max(std, 1e-3)]
    return ppo_stage_config(cfg, out, out / ORACLE, reward_model="", reward_weights=weights)


def expand_algo(algo: list[str]) -> list[str]:
    """`--algo` with `all` expanded, duplicates dropped, unknown names refused."""
    names = [m for a in algo for m in (ALL_METHODS if a == "all" else (a,))]
    known = (*RL_METHODS, BEST_OF_N, ORACLE, *DIRECT_METHODS)
    unknown = [a for a in names if a not in known]
    if unknown:
        raise ValueError(f"--algo: unknown method {unknown[0]!r}; choose any of {', '.join(RL_METHODS)}, "
                         f"{BEST_OF_N}, {', '.join(sorted(DIRECT_METHODS))}, {ORACLE} or all")
    return list(dict.fromkeys(names))


def _eval_stage(cfg: RunConfig, out: Path, name: str, path: str, sft_holder: dict) -> None:
    from rlhfkit.world.evaluate import evaluate_policy, heldout_webtext
    from rlhfkit.world.stages import read_jsonl, tasks_of

    rows = read_jsonl(out / "data" / "eval_prompts.jsonl")
    tasks = tasks_of(rows)
    val_rows = read_jsonl(out / "data" / "validation_prompts.jsonl")
    is_sft = name == "sft"
    if not is_sft and "model" not in sft_holder:
        from rlhfkit.models.loading import load_causal_lm, load_tokenizer

        sft_holder["model"] = load_causal_lm(str(out / "sft"), load_tokenizer(str(out / "sft"))).eval()
    result = evaluate_policy(path, tasks, [r["prompt"] for r in rows], sft_model=None if is_sft else sft_holder["model"],
                             webtext=heldout_webtext(cfg.webtext_eval_docs), temperatures=cfg.eval_temperatures,
                             validation=(tasks_of(val_rows), [r["prompt"] for r in val_rows]), greedy=True,
                             max_new_tokens=cfg.max_new_tokens, batch_size=cfg.eval_batch_size, seed=cfg.seed + 7,
                             samples_out=out / "eval" / f"{name}.samples.jsonl")
    if is_sft:  # the SFT model is its own reference: keep it loaded for the others
        sft_holder["model"] = result["model"]
        result["figures"]["kl_to_sft"] = 0.0  # log pi - log pi_sft is identically 0 on every sample
    write_json(out / "eval" / f"{name}.json", {"figures": result["figures"], "decodings": result["decodings"]},
               indent=1)


def _ai_feedback_stages(cfg: RunConfig, out: Path, rm_cfg: RewardConfig, base_large: str) -> dict[str, float]:
    """RLAIF beside RLHF: AI rankings of the same samples, a reward model and PPO on them."""
    from rlhfkit.label.ai import read_principles
    from rlhfkit.world.feedback import ai_comparisons_stage

    judge = resolve_model_path(cfg.ai_judge) if cfg.ai_judge else base_large
    principles = read_principles(cfg.ai_principles) if cfg.ai_principles else None
    seconds = {"comparisons_ai": _timed("comparisons_ai", out / "comparisons_ai", lambda: ai_comparisons_stage(
        out, judge, principles=principles, seed=cfg.seed, batch_size=cfg.eval_batch_size // 4))}
    rm_ai = dataclasses.replace(rm_cfg, output_dir=str(out / "rm_ai"),
                                data=str(out / "comparisons_ai" / "comparisons.jsonl"))
    seconds["rm_ai"] = run_stage("rm_ai", out / "rm_ai", lambda c: _rm_stage(cfg, out, c), rm_ai, log=_log)
    ppo_ai = ppo_stage_config(cfg, out, out / "ppo_ai", reward_model=str(out / "rm_ai"))
    seconds["ppo_ai"] = run_stage("ppo_ai", out / "ppo_ai", _train_ppo_with_gold, ppo_ai, log=_log)
    return seconds


def _best_of_n_stage(cfg: RunConfig, out: Path) -> None:
    """eval/bon<n>.json for each n of bon_n: SFT samples re-ranked by the reward model."""
    from rlhfkit.world.evaluate import evaluate_best_of_n
    from rlhfkit.world.stages import read_jsonl, tasks_of

    rows = read_jsonl(out / "data" / "eval_prompts.jsonl")
    sft_figures = json.loads((out / "eval" / "sft.json").read_text())["figures"]
    results = evaluate_best_of_n(str(out / "sft"), str(out / "rm"), tasks_of(rows), [r["prompt"] for r in rows],
                                 cfg.bon_n, sft_figures=sft_figures, max_new_tokens=cfg.max_new_tokens,
                                 batch_size=cfg.eval_batch_size, seed=cfg.seed + 13,
                                 samples_out=out / "eval" / "bon.samples.jsonl")
    for n, result in results.items():
        write_json(out / "eval" / f"bon{n}.json", result, indent=1)


def _direct_stage(cfg: RunConfig, out: Path, name: str, base_small: str) -> tuple[float, str]:
    """A direct method from SFT on the comparisons (the RM's training rankings, each
    expanded to its pairs; a response that ran out of tokens is encoded without
    EOS, as the RM saw it), or ORPO from base-small."""
    if name == "orpo":
        return _orpo_stage(cfg, out, base_small)
    dpo_cfg = _stage_config(DPOConfig, cfg.dpo, cfg, model=str(out / "sft"),
                            data=str(out / "comparisons" / "comparisons.jsonl"), output_dir=str(out / name))
    return run_stage(name, out / name, train_dpo, for_method(dpo_cfg, name), log=_log), str(out / name)


def _orpo_data(cfg: RunConfig, out: Path, base_small: str) -> str:
    """ORPO's data for one stage from base-small (Hong et al. 2024 replace SFT + preference
    tuning by one loss): the comparisons every method gets, plus, for every
    demonstration, the demonstration and base-small's own sampled response to its
    prompt, ranked by the same (recalibrated) labelers. The NLL term then learns
    the demonstrations, the odds-ratio term what the labelers prefer."""
    from rlhfkit.models.loading import load_causal_lm, load_tokenizer
    from rlhfkit.world.labelers import make_comparisons
    from rlhfkit.world.stages import filter_ranking, parse_instruction, read_jsonl, sample_responses, write_jsonl

    path = out / "orpo_data" / "pairs.jsonl"
    if path.exists():
        return str(path)
    rows = read_jsonl(out / "comparisons" / "comparisons.jsonl")
    figures: dict = {"comparison_rankings": len(rows)}
    if cfg.orpo_demonstration_pairs:
        demos = read_jsonl(out / "data" / "demonstrations.jsonl")
        tokenizer = load_tokenizer(base_small)
        model = load_causal_lm(base_small, tokenizer).eval()
        s = sample_responses(model, tokenizer, [d["prompt"] for d in demos], temperature=1.0,
                             max_new_tokens=cfg.max_new_tokens, batch_size=cfg.eval_batch_size, seed=cfg.seed + 211)
        labelers = json.loads((out / "comparisons" / "labelers.json").read_text())
        labeler = LabelerConfig(**labelers["labeler_config"])
        tasks = [parse_instruction(d["prompt"][-1]["content"]) for d in demos]
        raw = make_comparisons(tasks, [[d["completion"], y] for d, y in zip(demos, s.texts)],
                               [[True, e] for e in s.terminated], cfg.seed, labeler, index_offset=1_000_000)
        demo_rows = [r for r in (filter_ranking(x) for x in raw) if r is not None]
        figures.update(demonstration_pairs=len(demo_rows),
                       demonstration_preferred=sum(r["original_order"][0] == 0 for r in demo_rows) / max(len(demo_rows), 1))
        rows = rows + demo_rows
    write_jsonl(path, rows)
    write_json(path.parent / "figures.json", figures, indent=2)
    return str(path)


def _orpo_stage(cfg: RunConfig, out: Path, base_small: str) -> tuple[float, str]:
    def stage(orpo_cfg: DPOConfig) -> Path:
        return train_dpo(dataclasses.replace(orpo_cfg, data=_orpo_data(cfg, out, base_small)))

    orpo_cfg = _stage_config(DPOConfig, cfg.orpo, cfg, model=base_small, data=str(out / "orpo_data" / "pairs.jsonl"),
                             output_dir=str(out / "orpo"), loss="orpo")
    return run_stage("orpo", out / "orpo", stage, orpo_cfg, log=_log), str(out / "orpo")


def run_world(cfg: RunConfig) -> Path:
    """Run (or resume) the whole world; returns the run directory."""
    from rlhfkit.world.report import write_report

    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    algo = expand_algo(cfg.algo)
    if cfg.feedback not in FEEDBACK:
        raise ValueError(f"--feedback: unknown source {cfg.feedback!r}; choose {' or '.join(FEEDBACK)}")
    if cfg.rm_init not in RM_INITS:
        raise ValueError(f"--rm_init: unknown starting point {cfg.rm_init!r}; choose {' or '.join(RM_INITS)}")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    base_small, base_large = resolve_model_path(cfg.base_small), resolve_model_path(cfg.base_large)
    seconds: dict[str, float] = {}

    seconds["data"] = _timed("data", out / "data", lambda: _data_stage(cfg, out))

    demonstrations = str(out / "data" / "demonstrations.jsonl")
    sft_cfg = _stage_config(SFTConfig, cfg.sft, cfg, model=base_small, data=demonstrations, output_dir=str(out / "sft"))
    seconds["sft"] = run_stage("sft", out / "sft", train_sft, sft_cfg, log=_log)

    rm_init = {"base_large": base_large, "sft": str(out / "sft")}.get(cfg.rm_init)
    if cfg.rm_init == "sft_large":
        large_cfg = _stage_config(SFTConfig, cfg.sft_large, cfg, model=base_large, data=demonstrations,
                                  output_dir=str(out / "sft_large"))
        seconds["sft_large"] = run_stage("sft_large", out / "sft_large", train_sft, large_cfg, log=_log)
        rm_init = str(out / "sft_large")

    seconds["comparisons"] = _timed("comparisons", out / "comparisons", lambda: _comparisons_stage(cfg, out))

    rm_cfg = _stage_config(RewardConfig, cfg.rm, cfg, model=rm_init, output_dir=str(out / "rm"),
                           data=str(out / "comparisons" / "comparisons.jsonl"),
                           eval_data=str(out / "comparisons" / "heldout.jsonl"), normalize_on="responses")
    seconds["rm"] = run_stage("rm", out / "rm", lambda c: _rm_stage(cfg, out, c), rm_cfg, log=_log)

    models = {"base_small": base_small, "base_large": base_large, "sft": str(out / "sft")}
    if cfg.feedback == "ai":
        seconds.update(_ai_feedback_stages(cfg, out, rm_cfg, base_large))
        models["ppo_ai"] = str(out / "ppo_ai")
    for name in [a for a in RL_METHODS if a in algo]:
        critic_free = {} if name == "ppo" else {"advantage_estimator": name, "samples_per_prompt": cfg.rl_group_size}
        seconds[name] = run_stage(name, out / name, _train_ppo_with_gold,
                                  ppo_stage_config(cfg, out, out / name, **critic_free), log=_log)
        models[name] = str(out / name)
    for name in [a for a in algo if a in DIRECT_METHODS]:
        seconds[name], models[name] = _direct_stage(cfg, out, name, base_small)
    if ORACLE in algo:
        seconds[ORACLE] = run_stage(ORACLE, out / ORACLE, _train_ppo_with_gold, oracle_stage_config(cfg, out), log=_log)
        models[ORACLE] = str(out / ORACLE)
    if cfg.ptx:
        ptx_cfg = ppo_stage_config(cfg, out, out / "ppo_ptx", ptx_data=_ptx_data(cfg, out), ptx_coef=cfg.ptx_coef)
        seconds["ppo_ptx"] = run_stage("ppo_ptx", out / "ppo_ptx", _train_ppo_with_gold, ptx_cfg, log=_log)
        models["ppo_ptx"] = str(out / "ppo_ptx")

    sft_holder: dict = {}
    eval_seconds = 0.0
    for name in ("sft", *[m for m in models if m != "sft"]):
        if not (out / "eval" / f"{name}.json").exists():  # the figures live beside the marker's directory
            (out / "eval" / name / DONE).unlink(missing_ok=True)
        eval_seconds += _timed(f"eval {name}", out / "eval" / name,
                               lambda name=name: _eval_stage(cfg, out, name, models[name], sft_holder))
    if BEST_OF_N in algo:
        if not all((out / "eval" / f"bon{n}.json").exists() for n in cfg.bon_n):
            (out / "eval" / BEST_OF_N / DONE).unlink(missing_ok=True)
        eval_seconds += _timed(f"eval {BEST_OF_N}", out / "eval" / BEST_OF_N, lambda: _best_of_n_stage(cfg, out))
        models.update({f"bon{n}": f"bon{n}" for n in cfg.bon_n})
    seconds["eval"] = eval_seconds
    start = time.perf_counter()
    write_report(out, cfg, models, seconds)
    _log(f"report: {out / 'report.md'} ({time.perf_counter() - start:.1f}s)")
    return out

