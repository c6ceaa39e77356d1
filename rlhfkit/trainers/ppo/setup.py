"""PPO's set-up and output, kept out of the step (trainer.py beside this file): the reward
(a reward model and Python functions, weighted), the policy with its value function and
the frozen reference, the prompts, each step's metrics row and sample responses, and the
saved models."""
from __future__ import annotations

from pathlib import Path

from rlhfkit.data.loading import ColumnMap, load_prompts, load_records
from rlhfkit.data.tokenize import encode_prompts
from rlhfkit.generation.rollout import Rollout
from rlhfkit.io import atomic_write_bytes
from rlhfkit.losses.kl import kl_penalty
from rlhfkit.losses.ppo import explained_variance
from rlhfkit.models.actor_critic import ActorCritic
from rlhfkit.models.loading import (
    load_causal_lm,
    load_reward_model,
    load_scalar_model,
    load_tokenizer,
    lora_options,
    save_pretrained_dir,
)
from rlhfkit.rewards import FunctionScorer, RewardModelScorer, WeightedReward, import_function
from rlhfkit.trainers.metrics import mean_metrics
from rlhfkit.trainers.ppo.config import PPOConfig


def build_reward(cfg: PPOConfig, tokenizer, device, reward_fns=()) -> WeightedReward:
    """The reward model (if any) and the Python reward functions, weighted."""
    scorers, names = [], []
    if cfg.reward_model:
        rm_tokenizer = load_tokenizer(cfg.reward_model, trust_remote_code=cfg.trust_remote_code)
        rm = load_reward_model(cfg.reward_model, rm_tokenizer, dtype=cfg.dtype,
                               trust_remote_code=cfg.trust_remote_code).to(device).eval()
        rm.requires_grad_(False)
        scorers.append(RewardModelScorer(rm, tokenizer, rm_tokenizer, normalise=cfg.normalize_reward))
        names.append("rm")
    if cfg.ai_judge:
        from rlhfkit.label.ai import AIJudgeReward, read_principles

        principles = read_principles(cfg.ai_judge_principles) if cfg.ai_judge_principles else None
        scorers.append(AIJudgeReward(cfg.ai_judge, principles=principles, reference_column=cfg.ai_judge_reference,
                                     dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code, device=device))
        names.append(AIJudgeReward.name)
    for fn in [*(import_function(s) for s in cfg.reward_functions), *reward_fns]:
        scorer = FunctionScorer(fn)
        scorers.append(scorer)
        names.append(scorer.name)
    return WeightedReward(scorers, cfg.reward_weights or None, names)


def build_models(cfg: PPOConfig, tokenizer, device) -> tuple[ActorCritic, object | None]:
    """Policy (+LoRA), value function (separate or on the policy trunk), frozen reference.
    With LoRA and no separate ref_model the reference is the adapter-disabled policy."""
    lora = lora_options(cfg)
    policy = load_causal_lm(cfg.model, tokenizer, dtype=cfg.dtype, gradient_checkpointing=cfg.gradient_checkpointing,
                            lora=lora, trust_remote_code=cfg.trust_remote_code)
    ref_policy = None
    if not cfg.use_lora or cfg.ref_model:
        ref_policy = load_causal_lm(cfg.ref_model or cfg.model, tokenizer, dtype=cfg.dtype,
                                    trust_remote_code=cfg.trust_remote_code).to(device).eval()
        ref_policy.requires_grad_(False)
    if cfg.advantage_estimator != "gae":
        return ActorCritic(policy, critic=False), ref_policy
    if cfg.value_head_on_policy:
        return ActorCritic(policy), ref_policy
    value_init = cfg.value_model or cfg.reward_model or cfg.model
    value_model = load_scalar_model(value_init, tokenizer, dtype=cfg.dtype, new_head="zero",
                                    gradient_checkpointing=cfg.gradient_checkpointing,
                                    trust_remote_code=cfg.trust_remote_code)
    return ActorCritic(policy, value_model), ref_policy


def load_prompt_set(cfg: PPOConfig, tokenizer, accelerator):
    """The prompt records and their token ids; an error when every prompt was skipped."""
    records = load_records(load_prompts, cfg.prompts, ColumnMap(prompt=cfg.prompt_column), cfg.on_error, accelerator,
                           split=cfg.dataset_train_split)
    tokens = encode_prompts(tokenizer, records, cfg.max_prompt_length, on_error=cfg.on_error)
    if not tokens.kept:
        raise ValueError(f"{cfg.prompts}: no prompts left to train on (every one was skipped; see above)")
    return [records[i] for i in tokens.kept], list(tokens)


def log_samples(samples, step: int, ro: Rollout, tokenizer, prompt_records, n: int, accelerator) -> None:
    """n sample responses into samples.jsonl (its rows are counted into checkpoints, like metrics.jsonl's)."""
    if not accelerator.is_main_process or n <= 0:
        return
    for i in range(min(n, ro.prompt_ids.shape[0])):
        prompt = prompt_records[int(ro.prompt_index[i])].prompt
        samples.file.append({"step": step, "prompt": prompt, "response": tokenizer.decode(
            ro.response_ids[i][ro.response_mask[i].bool()], skip_special_tokens=True),
            "score": float(ro.scores[i]), "kl": float(ro.kl[i].sum()), "eos": bool(ro.eos[i])})


def save_models(actor_critic: ActorCritic, tokenizer, out: Path, merge_lora: bool = True) -> None:
    """The policy as a plain HF directory (LoRA merged, or the adapter alone); the value
    model beside it (value_model/, or value_head.safetensors for a head on the policy trunk)."""
    save_pretrained_dir(actor_critic.policy, tokenizer, out, merge_lora=merge_lora)
    if not actor_critic.has_critic:
        return
    if actor_critic.shared:
        from safetensors.torch import save

        atomic_write_bytes(out / "value_head.safetensors",
                           save({k: v.contiguous() for k, v in actor_critic.value_head.state_dict().items()}))
    else:
        save_pretrained_dir(actor_critic.value_model, tokenizer, out / "value_model")


def step_metrics(ro: Rollout, beta, update_rows, reward_parts, timings, scheduler, step, cfg) -> dict:
    """One PPO step's metrics.jsonl row (docs/metrics.md): the rollout's, the update's and the timings."""
    mask = ro.response_mask.float()
    kl_per_response = ro.kl.sum(1)
    non_score = (-beta * ro.kl).sum(1)
    metrics = {
        "objective/kl": float(kl_per_response.mean()),
        "objective/kl_k3": float(kl_penalty(ro.logprobs, ro.ref_logprobs, "k3").mul(mask).sum(1).mean()),
        "objective/beta": beta,
        "objective/scores": float(ro.scores.mean()),
        "objective/scores_std": float(ro.scores.std()) if ro.scores.numel() > 1 else 0.0,
        "objective/non_score_reward": float(non_score.mean()),
        "objective/rlhf_reward": float((ro.scores + non_score).mean()),
        "objective/entropy_sampled": float(-(ro.logprobs * mask).sum(1).mean()),
        "response/length": float(mask.sum(1).mean()),
        "response/eos_rate": float(ro.eos.float().mean()),
        "lr": scheduler.get_last_lr()[0],
        "episodes": (step + 1) * cfg.rollout_batch_size,
        **reward_parts,
        **mean_metrics(update_rows),
        **timings,
    }
    lengths, scored = mask.sum(1), ro.scores > 0  # with a 0/1 verifier: the right responses and the wrong ones
    for name, rows in (("scored_positive", scored), ("scored_nonpositive", ~scored)):
        if rows.any():  # a length over no responses is no figure: the key is left out
            metrics[f"response/length_{name}"] = float(lengths[rows].mean())
    if ro.values is not None:
        metrics["val/explained_variance"] = float(explained_variance(ro.values, ro.returns, mask))
    first = update_rows[0]  # the first minibatch of the update: ratio 1 and approx-KL 0 with dropout off
    metrics.update({f"policy/first_{k}": first[f"policy/{k}"] for k in ("ratio_mean", "approxkl", "ratio_max_dev")})
    metrics.pop("epoch", None)
    metrics["timing/step"] = sum(timings.values())
    return metrics
