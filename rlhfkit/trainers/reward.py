"""Reward model on comparisons with the Bradley-Terry loss (InstructGPT stage 2).

Each batch element is one prompt with its K ranked responses: every response is
forwarded once and all C(K,2) pairs of that prompt share the element (Ouyang et
al. 2022, sec. 3.5: shuffling pairs separately overfits). After training the
model is normalised so that reference responses score mean 0 (and, optionally,
standard deviation 1); the statistics are stored in its config.json.

Three forms of reward model (`reward_form`): InstructGPT's scalar head on the last
token (a sequence classifier); a causal LM that keeps its LM head and scores a
response by its mean token log-likelihood, scaled by beta (SimPO's implicit reward,
Meng et al. 2024, Eq. 4, here trained with the Bradley-Terry ranking loss); or the
same minus the frozen starting model's mean log-likelihood of the same tokens (a
DPO-style implicit reward), so the starting model's prior cancels and only what the
comparisons taught counts. The likelihood forms start from what pretraining taught
the model: in the instruction world the untrained base-large already orders held-out
pairs 62% like a labeler by it, while a new head starts at chance and, on 2,500
rankings, ends at 54%.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from transformers import AutoConfig

from rlhfkit.config import ConfigError, option
from rlhfkit.data.collate import RankingCollator, SFTCollator, scatter_scores
from rlhfkit.data.loading import ColumnMap, as_rankings, load_preferences, load_records, load_sft
from rlhfkit.data.tokenize import encode_rankings, encode_sft
from rlhfkit.losses.reward import pairwise_accuracy_by_gap, reward_model_loss
from rlhfkit.models.forward import reward_scores
from rlhfkit.models.loading import (
    REFERENCE_SUBDIR,
    REWARD_FORM_KEY,
    REWARD_FORMS,
    REWARD_MEAN_KEY,
    REWARD_REFERENCE_KEY,
    REWARD_SCALE_KEY,
    REWARD_STD_KEY,
    LogRatioRewardModel,
    fold_reward_normalisation,
    is_sequence_classifier,
    load_causal_lm,
    load_scalar_model,
    load_tokenizer,
    lora_options,
    model_config,
    save_reward_model,
    scalar_head,
)
from rlhfkit.trainers.accelerator import make_accelerator
from rlhfkit.trainers.checkpoint import open_stage
from rlhfkit.trainers.data_plan import train_and_eval_records, training_plan
from rlhfkit.trainers.distributed import step_share
from rlhfkit.trainers.metrics import MetricsLogger, progress_bar
from rlhfkit.trainers.optim import NonFiniteGuard, apply_step, prepared_optimizer
from rlhfkit.trainers.train_config import DatasetTrainConfig


@dataclass
class RewardConfig(DatasetTrainConfig):
    """Reward model training on pairwise comparisons or K-way rankings."""

    model: str = option("", "initial model: a causal LM (a new scalar head is added) or a reward model")
    data: str = option("", "comparisons: prompt/chosen/rejected, implicit-prompt pairs, or prompt/responses/ranking")
    eval_data: str = option("", "optional held-out comparisons (default: eval_fraction of data)")
    prompt_column: str = option("prompt", "column holding the prompt")
    chosen_column: str = option("chosen", "column holding the preferred response")
    rejected_column: str = option("rejected", "column holding the other response")
    responses_column: str = option("responses", "column holding K responses (rankings)")
    ranking_column: str = option("ranking", "column holding the ranking of the K responses")
    margin_column: str = option("margin", "optional column with a preference margin (pairs only)")
    use_margin: bool = option(False, "subtract the margin inside the Bradley-Terry loss (Llama 2)")
    normalize_on: str = option("responses", "score these to set the reward's mean 0: 'responses' (the comparison "
                               "responses), 'none', or a file of demonstrations (prompt/completion)")
    normalize_std: bool = option(True, "also scale rewards to standard deviation 1 on the same texts")
    normalize_max_texts: int = option(0, "score at most N of those texts, a seeded sample (0: all). Scoring is a "
                                      "forward pass per text: 8,094 texts took 57 s for an 8M model on 2 cores; a sample "
                                      "of 2,048 of them put the mean within 0.02 std and the std within 1.5% of the "
                                      "full pass's (the world's reward model)")
    lr_scheduler: str = option("cosine", "learning-rate schedule after warmup: cosine, linear or constant")
    calibration_bins: list[float] = option([0.0, 0.25, 0.5, 1.0, 2.0, 1e9], "score-gap bin edges for calibration")
    reward_form: str = option("head", "head: a new scalar head on the last token (InstructGPT); mean_logprob: the "
                              "model keeps its LM head and scores a response by reward_scale x its mean token "
                              "log-likelihood (SimPO's implicit reward), so pretraining's knowledge counts from step 0; "
                              "logratio: reward_scale x (that mean log-likelihood minus the frozen --model's), a "
                              "DPO-style implicit reward that cancels the starting model's prior (the reference is "
                              "saved in the reward model's reference/ folder)")
    reward_scale: float = option(2.0, "beta of reward_form=mean_logprob or logratio: the Bradley-Terry logit is beta "
                                 "x the difference of mean log-likelihoods (ratios) (SimPO uses about 2)")
    head_learning_rate: float = option(0.0, "reward_form=head: peak learning rate of the new scalar head (0: "
                                       "learning_rate); a new head from N(0, 1/sqrt(d+1)) needs more than a trunk "
                                       "already trained. A warm start: a likelihood-form reward model as --model")
    center_rewards_coefficient: float = option(0.0, "add coef x (r_chosen + r_rejected)^2 per pair to the loss "
                                               "(Eisenstein et al. 2023; TRL's option of the same name, which "
                                               "suggests 0.01): keeps the reward's level near 0 while it trains")
    length_debias: float = option(0.0, "length control after ODIN (Chen et al. 2024): when > 0 the Bradley-Terry "
                                  "loss is taken on r + w x response tokens with w fitted per batch, and "
                                  "length_debias x |corr(r, length)| is added; r alone is saved. The penalty removes "
                                  "length's correlation on the training data whatever its cause, also where better "
                                  "answers really are longer (docs/results.md)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.save_adapter_only:  # PPO and plain transformers read the normalisation from config.json
            raise ConfigError("save_adapter_only: a reward model is saved whole (its normalisation lives in its "
                              "config.json); drop save_adapter_only (the adapter is merged)")

    RULES: ClassVar[dict] = {"reward_form": REWARD_FORMS, "reward_scale": "> 0", "normalize_max_texts": ">= 0",
                             "head_learning_rate": ">= 0", "center_rewards_coefficient": ">= 0",
                             "length_debias": ">= 0", "calibration_bins": lambda v: _bins_problem(v)}

    def columns(self) -> ColumnMap:
        return ColumnMap(prompt=self.prompt_column, chosen=self.chosen_column, rejected=self.rejected_column,
                         responses=self.responses_column, ranking=self.ranking_column, margin=self.margin_column)


def _bins_problem(edges: list[float]) -> str | None:
    if len(edges) < 2 or any(not math.isfinite(e) for e in edges) or any(a >= b for a, b in zip(edges, edges[1:])):
        return f"calibration_bins must be two or more finite, increasing bin edges, got {edges!r}"
    return None


class ScoreForward(torch.nn.Module):
    """reward_scores as a module's forward, so the module Accelerate prepares is the one
    called in training: calling a DDP-wrapped model's trunk and head directly would skip
    the wrapper, and the processes' gradients would never be averaged."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, target_mask) -> torch.Tensor:  # [B,T] x3 -> [B]
        return reward_scores(self.model, input_ids, attention_mask, target_mask)


def _scores(model, batch, device) -> torch.Tensor:
    args = (batch["input_ids"].to(device), batch["attention_mask"].to(device), batch["loss_mask"].to(device))
    if isinstance(getattr(model, "module", model), ScoreForward):  # the training module, maybe wrapped
        return model(*args)
    return reward_scores(model, *args)


def _load_model(cfg: RewardConfig, tokenizer):
    """The model to train, marked with its form in its config: a scalar-head classifier, a
    causal LM (mean_logprob), or a causal LM with a frozen copy of itself (logratio)."""
    lora = lora_options(cfg)
    common = dict(dtype=cfg.dtype, gradient_checkpointing=cfg.gradient_checkpointing, lora=lora,
                  trust_remote_code=cfg.trust_remote_code)
    if cfg.reward_form == "head":  # a warm start from a likelihood-form RM keeps its trunk, gets a new head
        model = load_scalar_model(cfg.model, tokenizer, **common)
    else:
        init_config = AutoConfig.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
        if is_sequence_classifier(init_config):
            raise ConfigError(f"reward_form={cfg.reward_form} needs a causal LM with its LM head; {cfg.model} is a "
                              f"sequence classifier ({init_config.architectures[0]})")
        model = load_causal_lm(cfg.model, tokenizer, **common)
    config = model_config(model)
    # what --model's config.json carried (a reward model as the starting point) must not leak
    for key in (REWARD_MEAN_KEY, REWARD_STD_KEY, REWARD_REFERENCE_KEY):
        if hasattr(config, key):
            delattr(config, key)
    setattr(config, REWARD_FORM_KEY, cfg.reward_form)
    setattr(config, REWARD_SCALE_KEY, 1.0 if cfg.reward_form == "head" else cfg.reward_scale)
    if cfg.reward_form != "logratio":
        return model
    setattr(config, REWARD_REFERENCE_KEY, REFERENCE_SUBDIR)
    reference = load_causal_lm(cfg.model, tokenizer, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    return LogRatioRewardModel(model, reference)


def _trained_part(model):
    """The module whose weights train (and are checkpointed): a logratio model's policy."""
    return model.policy if isinstance(model, LogRatioRewardModel) else model


def _param_groups(cfg: RewardConfig, model: torch.nn.Module) -> list[dict]:
    """The optimiser's parameter groups: the scalar head at head_learning_rate when set."""
    if cfg.reward_form != "head" or not cfg.head_learning_rate:
        return [{"params": list(model.parameters())}]
    head = {id(p) for p in scalar_head(model).parameters()}
    return [{"params": [p for p in model.parameters() if id(p) not in head]},
            {"params": [p for p in model.parameters() if id(p) in head], "lr": cfg.head_learning_rate}]


def _encode(tokenizer, records, cfg) -> list[tuple[list, float | None]]:
    """(encoded responses best first, margin) per prompt."""
    encoded = encode_rankings(tokenizer, records, cfg.max_length, on_error=cfg.on_error)
    return [(group, records[i].margin) for group, i in zip(encoded, encoded.kept)]


def _ranking_batch_loss(model, items, collator, device, cfg: RewardConfig):
    groups = [group for group, _ in items]
    batch = collator(groups)
    scores = _scores(model, batch, device)  # [N]
    rewards = scatter_scores(scores, batch)  # [B,Kmax]: response k of prompt b at rewards[b, k]
    lengths = scatter_scores(batch["loss_mask"].sum(-1).float(), batch).to(device)  # [B,Kmax] response tokens
    margin = None
    if cfg.use_margin:
        margin = torch.tensor([m or 0.0 for _, m in items], device=device)
    return reward_model_loss(rewards, batch["valid"].to(device), lengths=lengths, margin=margin,
                             center_coef=cfg.center_rewards_coefficient, length_debias=cfg.length_debias)


@torch.no_grad()
def evaluate_rankings(model, encoded, collator, batch_size: int, device, bins) -> dict:
    """Held-out pairwise accuracy (ties half) and accuracy by score gap."""
    model.eval()
    diffs = []
    for start in range(0, len(encoded), batch_size):
        batch = collator([group for group, _ in encoded[start:start + batch_size]])
        scores = _scores(model, batch, device).cpu()
        for g in range(batch["valid"].shape[0]):
            members = (batch["group_index"] == g).nonzero().flatten()
            by_rank = scores[members[batch["rank"][members].argsort()]]
            diffs += [float(by_rank[i] - by_rank[j]) for i in range(len(by_rank)) for j in range(i + 1, len(by_rank))]
    model.train()
    d = torch.tensor(diffs)
    accuracy = float(((d > 0).float() + 0.5 * (d == 0).float()).mean()) if len(diffs) else float("nan")
    return {"val/accuracy": accuracy, "val/pairs": len(diffs),
            "val/calibration": pairwise_accuracy_by_gap(d, bins) if len(diffs) else []}


@torch.no_grad()
def normalisation_stats(model, examples, pad_id: int, batch_size: int, device) -> tuple[float, float]:
    """Mean and standard deviation of the model's scores on encoded texts."""
    model.eval()
    collator = SFTCollator(pad_id)
    scores = []
    for start in range(0, len(examples), batch_size):
        scores.append(_scores(model, collator(examples[start:start + batch_size]), device).cpu())
    s = torch.cat(scores)
    return float(s.mean()), float(s.std()) if len(s) > 1 else 1.0


def _normalisation_examples(cfg: RewardConfig, tokenizer, train_enc, accelerator):
    """The texts the reward's mean/std are measured on: the responses of the encoded training
    groups (train_enc, as _encode gives them: no second tokenisation) or a demonstrations file."""
    if cfg.normalize_on == "none":
        return []
    if cfg.normalize_on == "responses":
        examples = [e for group, _ in train_enc for e in group]
    else:
        demos = load_records(load_sft, cfg.normalize_on, ColumnMap(), cfg.on_error, accelerator)
        examples = list(encode_sft(tokenizer, demos, cfg.max_length, on_error=cfg.on_error))
    if 0 < cfg.normalize_max_texts < len(examples):
        keep = sorted(random.Random(cfg.seed).sample(range(len(examples)), cfg.normalize_max_texts))
        examples = [examples[i] for i in keep]
    return examples


def _check_margins(cfg: RewardConfig, records) -> None:
    """--use_margin needs a margin on every comparison: a missing one would silently count as 0."""
    if not cfg.use_margin:
        return
    missing = [r for r in records if r.margin is None]
    if missing:
        raise ValueError(f"--use_margin true: {len(missing)} of {len(records)} comparisons have no margin (column "
                         f"{cfg.margin_column!r}, --margin_column; pairs only), e.g. {missing[0].source}; add the "
                         "column or drop --use_margin")


def train_reward_model(cfg: RewardConfig) -> Path:
    if not cfg.model or not cfg.data:
        raise ValueError("rm needs --model and --data")
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg, out)
    checkpoints = open_stage(cfg, "rm", accelerator)
    if checkpoints.finished:  # the directory already holds the model these settings train
        return checkpoints.skip(accelerator)
    device = accelerator.device
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code, chat_template=cfg.chat_template or None)
    train_records, eval_records = map(as_rankings, train_and_eval_records(load_preferences, cfg, cfg.columns(),
                                                                          accelerator))
    _check_margins(cfg, [*train_records, *eval_records])
    train_enc = _encode(tokenizer, train_records, cfg)
    eval_enc = _encode(tokenizer, eval_records, cfg)
    collator = RankingCollator(tokenizer.pad_token_id)

    model = ScoreForward(_load_model(cfg, tokenizer))
    plan = training_plan(cfg, len(train_enc), accelerator, [sum(len(e) for e in group) for group, _ in train_enc])
    model, optimizer, scheduler = prepared_optimizer(accelerator, model, _param_groups(cfg, model.model), cfg,
                                                     len(plan), cfg.lr_scheduler)
    # checkpoints hold the reward model's own keys (not a logratio model's frozen reference)
    saved = {"model": _trained_part(accelerator.unwrap_model(model).model)}
    logger = MetricsLogger(out / "metrics.jsonl", accelerator, stage="rm")
    start, _ = checkpoints.resume_training(accelerator, saved, optimizer, scheduler, logs=[logger])
    guard = NonFiniteGuard(cfg.max_nonfinite_steps, "rm", accelerator.print)
    bar = progress_bar(len(plan), "reward model", cfg.progress and accelerator.is_local_main_process)
    bar.update(start)
    model.train()
    rank, world = accelerator.process_index, accelerator.num_processes
    for step in range(start, len(plan)):
        rows = []
        for micro in plan[step]:
            groups = [train_enc[i] for i in micro[rank::world]]
            # the head form runs the trunk and head directly, outside the forward that prepare() wraps
            # in autocast, so --mixed_precision is applied here explicitly
            with accelerator.autocast():
                loss, metrics = _ranking_batch_loss(model, groups, collator, device, cfg)
            # prompts weigh equally across micro-batches and processes (InstructGPT's per-prompt mean)
            accelerator.backward(loss * step_share(len(groups), sum(len(m) for m in plan[step]), world))
            rows.append({k: float(v) for k, v in metrics.items()})
        metrics = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        stepped = apply_step(accelerator, model, optimizer, scheduler, guard, step + 1,
                             {"loss": metrics["loss/total"]}, cfg.max_grad_norm)
        if "skipped_nonfinite" in stepped:
            continue
        metrics.update(stepped)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss/reward']:.4f}", acc=f"{metrics['rewards/accuracy']:.2f}")
        done = step + 1
        evaluated = bool(cfg.eval_every and done % cfg.eval_every == 0 and eval_enc)
        if evaluated:
            with accelerator.autocast():
                metrics.update(evaluate_rankings(model, eval_enc, collator, cfg.per_device_batch_size, device,
                                                 cfg.calibration_bins))
        if evaluated or done % cfg.log_every == 0 or done == len(plan):  # an evaluation is never dropped
            logger.log(done, metrics)
        if checkpoints.due(done, len(plan), accelerator):
            checkpoints.save_training(done, accelerator, saved, optimizer, scheduler)
    bar.close()
    final = {"final": True}
    if eval_enc:
        with accelerator.autocast():
            final.update(evaluate_rankings(model, eval_enc, collator, cfg.per_device_batch_size, device,
                                           cfg.calibration_bins))
    unwrapped = accelerator.unwrap_model(model).model
    norm_examples = _normalisation_examples(cfg, tokenizer, train_enc, accelerator)
    if norm_examples:
        with accelerator.autocast():
            mean, std = normalisation_stats(unwrapped, norm_examples, tokenizer.pad_token_id,
                                            cfg.per_device_batch_size, device)
        config = model_config(unwrapped)
        setattr(config, REWARD_MEAN_KEY, mean)
        setattr(config, REWARD_STD_KEY, std if cfg.normalize_std and std > 0 else 1.0)
        with torch.no_grad():  # a head-form RM then scores the same through plain transformers
            fold_reward_normalisation(unwrapped)
        final.update({"reward/raw_mean": mean, "reward/raw_std": std})
    logger.log(len(plan), final)
    return checkpoints.finish_stage(accelerator, cfg, lambda out: save_reward_model(
        unwrapped, tokenizer, out, merge_lora=not cfg.save_adapter_only))
