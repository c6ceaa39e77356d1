"""What every study shares: its options, the finished run it reuses, the stages it adds
(reward models, PPO policies, evaluations; each skipped when already finished, so a
rerun resumes), the per-prompt values behind every figure and their intervals."""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rlhfkit.config import from_dict, load_yaml, option
from rlhfkit.experiment.intervals import mean_interval
from rlhfkit.experiment.layout import SeedLayout
from rlhfkit.experiment.stages import log
from rlhfkit.io import read_jsonl, write_json, write_jsonl
from rlhfkit.pipeline import run_stage, stage_done

STUDIES = ("overoptimisation", "labeler_noise", "data", "shift", "kl", "forgetting")


@dataclass
class StudyConfig:
    """One of RLHF's known limitations measured from a finished world run (docs/studies.md)."""

    study: str = option("", "which study: " + ", ".join(STUDIES))
    run_dir: str = option("runs/world", "a finished `rlhfkit run` directory: its data, SFT, comparisons and reward "
                          "model are reused; the study writes <run_dir>/studies/<study>/")
    seeds: list[int] = option([0, 1, 2], "training seeds of every stage the study adds (the run's own seed reuses "
                              "the run's PPO where the study's point is the run's own recipe)")
    eval_prompts: int = option(500, "evaluation prompts per policy (the first N of the run's)")
    ppo_episodes: int = option(0, "episodes of every PPO the study trains (0: the run's own budget)")
    num_threads: int = option(0, "torch CPU threads (0: all cores; 1 on a busy machine)")
    bon_n: list[int] = option([1, 2, 4, 8, 16, 32, 64, 128, 256], "overoptimisation: best-of-n sizes")
    bon_prompts: int = option(100, "overoptimisation: evaluation prompts for best-of-n (max(bon_n) samples each)")
    rm_inits: list[str] = option(["sft", "sft_large"], "overoptimisation: reward-model starting points (the SFT "
                                 "of base-small, the run's own RM; base-large fine-tuned on the demonstrations)")
    parts: list[str] = option(["bon", "rl"], "overoptimisation: best-of-n (bon) and PPO checkpoints (rl)")
    agreements: list[float] = option([0.6, 0.7, 0.8, 0.9], "labeler_noise: labelers' target agreement")
    comparison_counts: list[int] = option([250, 1000, 0, 5400], "data: comparison prompts the RM learns from "
                                          "(0: all of the run's; more than the run has: new prompts sampled and "
                                          "labeled by the run's labelers)")
    shift_family: str = option("sort", "shift: the task family held out of the comparisons")
    shift_constraint: str = option("caps", "shift: the constraint held out of the comparisons")
    betas: list[float] = option([0.0, 0.02, 0.05, 0.2], "kl: fixed KL coefficients (the world's "
                               "default 0.02 among them; 0.005 moves the policy no less than 0, docs/results.md)")
    kl_targets: list[float] = option([3.0, 10.0], "kl: adaptive-KL targets, nats per response")
    ptx_coefs: list[float] = option([0.5, 2.0, 8.0], "forgetting: PPO-ptx coefficients")
    skill_prompts: int = option(100, "forgetting: prompts of the base skill (a format imitated from one example)")

    RULES = {"study": lambda v: None if v in STUDIES else f"study: choose one of {', '.join(STUDIES)} (got {v!r})",
             "eval_prompts": ">= 1", "bon_prompts": ">= 1", "bon_n": ">= 1", "ppo_episodes": ">= 0",
             "agreements": "(0, 1]", "comparison_counts": ">= 0", "betas": ">= 0", "kl_targets": "> 0",
             "ptx_coefs": ">= 0", "skill_prompts": ">= 1", "num_threads": ">= 0"}

    def __post_init__(self) -> None:
        from rlhfkit.config import check_options

        check_options(self)
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")


class Study:
    """A finished run, the study's directory in it, and the stages the study adds."""

    def __init__(self, cfg: StudyConfig):
        from rlhfkit.experiment.options import RunConfig

        self.cfg = cfg
        self.run = Path(cfg.run_dir)
        for needed in ("sft", "comparisons", "rm"):
            if not stage_done(self.run / needed):
                raise FileNotFoundError(f"{self.run / needed} is not finished: run `rlhfkit run --output_dir "
                                        f"{self.run}` first")
        self.run_cfg = from_dict(RunConfig, load_yaml(self.run / "config.yaml"), where=str(self.run / "config.yaml"))
        self.lay = SeedLayout.single(self.run, self.run_cfg.seed)
        self.out = self.run / "studies" / cfg.study
        self.out.mkdir(parents=True, exist_ok=True)
        rows = read_jsonl(self.run / "data" / "eval_prompts.jsonl")[:cfg.eval_prompts]
        from rlhfkit.experiment.data import tasks_of

        self.eval_tasks, self.eval_prompts = tasks_of(rows), [r["prompt"] for r in rows]
        self._sft_model = self._tokenizer = None

    # ------------------------------------------------------------------ stages

    def seed_cfg(self, seed: int):
        return dataclasses.replace(self.run_cfg, seed=seed)

    def reward_model(self, directory: Path, comparisons: Sequence[dict] | Path, seed: int, init: str = "") -> Path:
        """A reward model with the run's options on these comparisons (rows, or a file), from
        `init` (default: the run's SFT); skipped when finished."""
        from rlhfkit.experiment.stages import stage_config
        from rlhfkit.trainers.reward import RewardConfig, train_reward_model

        data = Path(comparisons) if isinstance(comparisons, Path) else directory.parent / f"{directory.name}.jsonl"
        if not isinstance(comparisons, Path) and not stage_done(directory):
            write_jsonl(data, list(comparisons))
        rm_cfg = stage_config(RewardConfig, self.run_cfg.rm, self.seed_cfg(seed), model=init or str(self.lay.sft),
                              output_dir=str(directory), data=str(data),
                              eval_data=str(self.lay.comparisons / "heldout.jsonl"), normalize_on="responses",
                              num_threads=self.cfg.num_threads)
        run_stage(self.stage_name(directory), directory, train_reward_model, rm_cfg, log=log)
        return directory

    def ppo(self, directory: Path, seed: int, reward_model: Path | None = None, **overrides) -> Path:
        """PPO from the run's SFT against `reward_model` (default: the run's), with the run's
        options but `overrides`; the run's own PPO when that is the same recipe and seed."""
        from rlhfkit.experiment.stages import ppo_stage_config, train_ppo_with_gold

        rm = Path(reward_model or self.lay.rm)
        if self.cfg.ppo_episodes:
            overrides.setdefault("total_episodes", self.cfg.ppo_episodes)
        same_as_run = all(getattr(self.run_cfg.ppo, k) == v for k, v in overrides.items())
        if rm == self.lay.rm and seed == self.run_cfg.seed and same_as_run and stage_done(self.run / "ppo"):
            return self.run / "ppo"
        ppo_cfg = ppo_stage_config(self.seed_cfg(seed), self.lay, directory, reward_model=str(rm),
                                   num_threads=self.cfg.num_threads, **overrides)
        run_stage(self.stage_name(directory), directory, train_ppo_with_gold, ppo_cfg, log=log)
        return directory

    def stage_name(self, directory: Path) -> str:
        return str(directory.relative_to(self.out))

    def sft_model(self):
        """The run's SFT policy, loaded once: every KL's reference and best-of-n's sampler."""
        if self._sft_model is None:
            from rlhfkit.models.loading import load_causal_lm

            self._sft_model = load_causal_lm(str(self.lay.sft), self.tokenizer()).eval()
        return self._sft_model

    def tokenizer(self):
        if self._tokenizer is None:
            from rlhfkit.models.loading import load_tokenizer

            self._tokenizer = load_tokenizer(str(self.lay.sft))
        return self._tokenizer

    def evaluate(self, policy: Path | str, path: Path, seed: int) -> dict:
        """Per evaluation prompt: gold (T = 1), KL to SFT and family; cached in `path`."""
        from rlhfkit.experiment.evaluate import evaluate_policy

        if path.exists():
            return json.loads(path.read_text())
        is_sft = Path(policy) == self.lay.sft
        ev = evaluate_policy(str(policy), self.eval_tasks, self.eval_prompts, sft_model=self.sft_model(),
                             max_new_tokens=self.run_cfg.max_new_tokens, batch_size=self.run_cfg.eval_batch_size,
                             seed=self.run_cfg.seed + 7 + 1000 * seed)
        t1 = ev["decodings"]["t1"]
        kl = [0.0] * len(self.eval_tasks) if is_sft else t1["per_prompt"]["kl_to_sft"]
        result = {"policy": str(policy), "seed": seed, "gold": t1["scores"], "kl": kl,
                  "family": [t.family for t in self.eval_tasks],
                  "constraint": [t.constraint or "none" for t in self.eval_tasks]}
        write_json(path, result)
        return result

    def sft_eval(self) -> dict:
        """SFT's evaluation: the reference of every win rate and gain (sampled once)."""
        return self.evaluate(self.lay.sft, self.out / "sft_eval.json", self.run_cfg.seed)

    def heldout_rows(self) -> list[dict]:
        return read_jsonl(self.lay.comparisons / "heldout.jsonl")

    def train_rows(self) -> list[dict]:
        return read_jsonl(self.lay.comparisons / "comparisons.jsonl")


# ---------------------------------------------------------------------- per-prompt values


def restrict(values: Sequence[float], keep: Sequence[bool]) -> list[float]:
    """The values where `keep`, NaN elsewhere (mean_interval drops NaN prompts)."""
    return [v if k else math.nan for v, k in zip(values, keep)]


def rm_accuracy_values(rm_dir: Path, rows: Sequence[dict], batch_size: int = 64) -> list[float]:
    """Per held-out ranking: the share of its response pairs the reward model orders as the
    gold judge does (gold ties count one half; NaN for a ranking with no pair)."""
    from rlhfkit.experiment.reward_figures import gold_order_credit, reward_model_scores
    from rlhfkit.models.loading import load_reward_model, load_tokenizer
    from rlhfkit.world.judge import judge_task
    from rlhfkit.world.tasks import parse_instruction

    tokenizer = load_tokenizer(str(rm_dir))
    model = load_reward_model(str(rm_dir), tokenizer).eval()
    scores = reward_model_scores(model, tokenizer, [r["prompt"] for r in rows for _ in r["responses"]],
                                 [y for r in rows for y in r["responses"]],
                                 [t for r in rows for t in r["terminated"]], batch_size=batch_size)
    values, at = [], 0
    for r in rows:
        task = parse_instruction(r["prompt"][-1]["content"])
        gold = [judge_task(task, y, t).gold for y, t in zip(r["responses"], r["terminated"])]
        s = scores[at:at + len(gold)]
        at += len(gold)
        right = [gold_order_credit(s[i], s[j], gold[i], gold[j])
                 for i in range(len(gold)) for j in range(i + 1, len(gold))]
        values.append(sum(right) / len(right) if right else math.nan)
    return values


def cached_values(path: Path, compute: Callable[[], list[float]]) -> list[float]:
    """Per-prompt values kept in `path`, so that a rerun does not score them again."""
    if path.exists():
        return json.loads(path.read_text())
    values = compute()
    write_json(path, values)
    return values


def figure(per_seed: Sequence[Sequence[float]], bounds: tuple[float, float] | None = None) -> dict:
    """Mean over seeds and prompts with its 95% interval and the seed count (intervals.mean_interval)."""
    f = mean_interval([list(v) for v in per_seed], bounds=bounds)
    return {"mean": f["mean"], "ci95": f["ci95"], "seeds": f["seeds"], "prompts": f["prompts"],
            "seed_std": f["seed_std"]}


def instruction_of(row: dict) -> str:
    """The instruction of a comparison row (its prompt is the world's one user message)."""
    return row["prompt"][-1]["content"]
