"""PPO with a per-token KL penalty to the SFT policy (Ouyang et al. 2022, eq. 2;
Ziegler et al. 2019; the details in docs/ppo.md), and its critic-free variants
(RLOO, GRPO, Dr. GRPO, DAPO, GSPO: --advantage_estimator, --loss_type).

One step is five named phases over a typed Rollout, in the order this file reads:

    rollout -> score_rollout -> shape_rewards -> advantages -> update (clipped losses)

The rest of rlhfkit/trainers/ppo/ says when it runs: setup.py (models, reward, prompts,
the logged metrics, saving), policy_loss.py (the loss of every update), dapo_filters.py
(only with --overlong or --dynamic_sampling), ptx.py (only with --ptx_data), processes.py
(what several processes need to match one).
"""
from __future__ import annotations

from pathlib import Path

import torch

from rlhfkit.data.collate import pad_sequences
from rlhfkit.generation.rollout import Rollout, concat_rollouts
from rlhfkit.generation.samplers import make_sampler
from rlhfkit.io import write_json
from rlhfkit.losses.advantages import GROUP_ADVANTAGES, gae_advantages
from rlhfkit.losses.common import entropy_from_logits, gather_logprobs, masked_mean, masked_whiten
from rlhfkit.losses.grpo import micro_batch_weight
from rlhfkit.losses.kl import AdaptiveKLController, FixedKLController, kl_penalty
from rlhfkit.losses.ppo import ppo_value_loss
from rlhfkit.models.forward import response_logprobs
from rlhfkit.models.loading import load_tokenizer
from rlhfkit.rewards import ScoringBatch, WeightedReward
from rlhfkit.trainers.accelerator import make_accelerator
from rlhfkit.trainers.checkpoint import open_stage
from rlhfkit.trainers.errors import DivergenceError
from rlhfkit.trainers.metrics import MetricsLogger, mean_metrics, progress_bar, timer
from rlhfkit.trainers.optim import NonFiniteGuard, apply_step, prepared_optimizer
from rlhfkit.trainers.ppo.config import PPOConfig, PPOSizes
from rlhfkit.trainers.ppo.dapo_filters import keep_rows, penalise_overlong
from rlhfkit.trainers.ppo.policy_loss import policy_loss, reward_kl_coef
from rlhfkit.trainers.ppo.processes import global_mean, global_whiten, process_share, seed_per_process
from rlhfkit.trainers.ppo.ptx import PretrainingBatches
from rlhfkit.trainers.ppo.setup import (
    build_models,
    build_reward,
    load_prompt_set,
    log_samples,
    save_models,
    step_metrics,
)

# ----------------------------------------------------------------------------- phases

@torch.no_grad()
def rollout(sampler, prompt_tokens: list[list[int]], prompt_index: list[int], pad_id: int,
            device, chunk: int) -> Rollout:
    """Sample one response per prompt (left-padded prompts, chunked), with the log-prob
    each token was sampled with: the old policy's, at the temperature the update uses."""
    parts = []
    for start in range(0, len(prompt_tokens), chunk):
        ids, mask = pad_sequences(prompt_tokens[start:start + chunk], pad_id, side="left")
        ids, mask = ids.to(device), mask.to(device)
        gen = sampler.generate(ids, mask)
        parts.append(Rollout(prompt_ids=ids, prompt_mask=mask, response_ids=gen.response_ids,
                             response_mask=gen.response_mask, eos=gen.eos, logprobs=gen.sampler_logprobs,
                             prompt_index=torch.tensor(prompt_index[start:start + chunk], device=device)))
    out = concat_rollouts(parts, pad_id)
    length = max(1, int(out.response_mask.sum(1).max()))  # drop all-pad columns: less work later
    out.response_ids, out.response_mask = out.response_ids[:, :length], out.response_mask[:, :length]
    if out.logprobs is not None:  # a sampler without log-probs leaves them to score_rollout
        out.logprobs = out.logprobs[:, :length]
    return out


@torch.no_grad()
def score_rollout(ro: Rollout, ac, ref_policy, reward: WeightedReward, tokenizer, prompt_records,
                  cfg: PPOConfig, micro: int, timings: dict) -> dict:
    """Reference log-probs, values and scores, in place on `ro` (and the old log-probs again
    with --old_logprobs recompute); returns the reward's components. ref_policy None means
    the reference is the policy with its LoRA adapter disabled. ac: the ActorCritic, unwrapped."""
    recompute = cfg.old_logprobs == "recompute" or ro.logprobs is None
    logprobs, ref_logprobs, values = [], [], []
    for s in range(0, ro.prompt_ids.shape[0], micro):
        part = ro.select(torch.arange(s, min(s + micro, ro.prompt_ids.shape[0]), device=ro.prompt_ids.device))
        seq, mask, P = part.sequences, part.attention_mask, part.prompt_length
        logits, v = _old_policy_and_values(ac, seq, mask, P, cfg, timings, recompute)
        if recompute:
            logprobs.append(gather_logprobs(logits, part.response_ids))
        values.append(v)
        with timer(timings, "reference"):
            if ref_policy is None:
                with ac.reference_context():
                    ref_logprobs.append(response_logprobs(ac.policy, seq, mask, P, cfg.temperature))
            else:
                ref_logprobs.append(response_logprobs(ref_policy, seq, mask, P, cfg.temperature))
    m = ro.response_mask.float()
    ro.ref_logprobs = torch.cat(ref_logprobs) * m
    if recompute:
        ro.logprobs = torch.cat(logprobs) * m
    ro.values = torch.cat(values) * m if values[0] is not None else None
    with timer(timings, "reward"):
        idx = ro.prompt_index.tolist()
        batch = ScoringBatch(prompt_ids=ro.prompt_ids, prompt_mask=ro.prompt_mask, response_ids=ro.response_ids,
                             response_mask=ro.response_mask, prompts=[prompt_records[i].prompt for i in idx],
                             responses=tokenizer.batch_decode(ro.response_ids, skip_special_tokens=True),
                             eos=ro.eos, metadata=[prompt_records[i].metadata for i in idx])
        scores, parts = reward(batch)
    # A response that never emitted EOS is penalised (-1 in lm-human-preferences and the N+ details; docs/ppo.md).
    ro.scores = scores - cfg.missing_eos_penalty * (~ro.eos).float()
    return parts


def _old_policy_and_values(ac, seq, mask, P: int, cfg: PPOConfig, timings: dict, recompute: bool):
    """(response logits / T [b,A,V], or None when the sampler's log-probs serve; values [b,A],
    or None without a critic)."""
    if recompute and (ac.shared or not ac.has_critic):  # one pass gives both (or logits alone)
        with timer(timings, "policy_logprobs"):
            return ac(seq, mask, P, cfg.temperature)
    logits = None
    if recompute:
        with timer(timings, "policy_logprobs"):
            logits = ac.policy_logits(seq, mask, P, cfg.temperature)
    if not ac.has_critic:
        return logits, None
    with timer(timings, "values"):
        return logits, ac.values(seq, mask, P)


def shape_rewards(ro: Rollout, beta: float, estimator: str) -> None:
    """r_t = -beta * KL_t on every response token, plus the score on the last one
    (Ziegler et al. 2019, eq. 2; Ouyang et al. 2022, eq. 2). Nothing after EOS."""
    mask = ro.response_mask.float()
    ro.kl = kl_penalty(ro.logprobs, ro.ref_logprobs, estimator) * mask
    last = (ro.response_mask.sum(1) - 1).clamp(min=0)  # [B] index of the last response token
    ro.rewards = -beta * ro.kl
    ro.rewards[torch.arange(ro.rewards.shape[0], device=last.device), last] += ro.scores


def advantages(ro: Rollout, cfg: PPOConfig, whiten=masked_whiten) -> None:
    """GAE over the shaped per-token rewards, or a critic-free group baseline over each
    response's return sum_t r_t = score - beta * sum_t KL_t (gamma 1), the same number
    on every token of the response (Ahmadian et al. 2024 treat the response as one action)."""
    mask = ro.response_mask.float()
    rewards = whiten(ro.rewards, mask, shift_mean=False) if cfg.whiten_rewards else ro.rewards
    if cfg.advantage_estimator == "gae":
        ro.advantages, ro.returns = gae_advantages(rewards, ro.values, mask, cfg.gamma, cfg.lam)
    else:  # each prompt's K samples sit in adjacent rows (rollout draws them so)
        groups = ro.prompt_index.view(-1, cfg.samples_per_prompt)
        if not (groups == groups[:, :1]).all():  # the baseline would mix prompts
            raise RuntimeError("critic-free advantages need each prompt's samples in adjacent rows")
        per_response = GROUP_ADVANTAGES[cfg.advantage_estimator](rewards.sum(1), cfg.samples_per_prompt)  # [B]
        ro.advantages, ro.returns = per_response[:, None] * mask, None
    if cfg.whiten_advantages == "batch":
        ro.advantages = whiten(ro.advantages, mask)


def _micro_loss(part: Rollout, adv: torch.Tensor, actor_critic, cfg: PPOConfig, entropy_metric: bool = True):
    """Clipped policy and value losses of one micro-batch. The entropy is a loss term when
    entropy_coef != 0; otherwise a metric, computed only where entropy_metric (the first
    epoch: the rollout policy's entropy), since on [b,A,V] logits it costs several full
    passes (log-softmax, exp, product, sum) that later epochs would repeat."""
    rmask = part.response_mask.float()
    logits, values = actor_critic(part.sequences, part.attention_mask, part.prompt_length, cfg.temperature)
    logprobs = gather_logprobs(logits, part.response_ids)  # [b,A]
    loss, metrics = policy_loss(cfg, logprobs, part.logprobs, adv, rmask, part.ref_logprobs)
    if values is not None:
        vf_loss, vf_metrics = ppo_value_loss(values, part.values, part.returns, rmask, cfg.clip_range_value)
        loss = loss + cfg.vf_coef * vf_loss
        metrics = {**metrics, **vf_metrics}
    if cfg.entropy_coef != 0 or entropy_metric:
        with torch.set_grad_enabled(cfg.entropy_coef != 0 and torch.is_grad_enabled()):
            entropy = masked_mean(entropy_from_logits(logits), rmask)
        loss = loss - cfg.entropy_coef * entropy
        metrics["objective/entropy"] = entropy.detach()
    return loss, metrics


def update(ro: Rollout, actor_critic, optimizer, scheduler, cfg: PPOConfig, sizes: PPOSizes, accelerator,
           shuffle_rng: torch.Generator, ptx: PretrainingBatches | None, timings: dict, guard: NonFiniteGuard,
           step: int) -> list[dict]:
    """ppo_epochs passes of clipped-surrogate minibatch updates over the rollout, in an
    order drawn from shuffle_rng."""
    B = ro.prompt_ids.shape[0]
    whiten = global_whiten(accelerator)  # the global minibatch's statistics under several processes
    rows = []
    for epoch in range(cfg.ppo_epochs):
        order = torch.randperm(B, generator=shuffle_rng).to(ro.prompt_ids.device)
        for mb_start in range(0, B, sizes.minibatch):
            mb = ro.select(order[mb_start:mb_start + sizes.minibatch])
            adv = whiten(mb.advantages, mb.response_mask.float()) \
                if cfg.whiten_advantages == "minibatch" else mb.advantages
            share = process_share(accelerator, cfg.loss_type, mb.response_mask)
            metrics = []
            with timer(timings, "update"):
                for s in range(0, mb.prompt_ids.shape[0], sizes.micro):
                    idx = torch.arange(s, min(s + sizes.micro, mb.prompt_ids.shape[0]), device=adv.device)
                    part = mb.select(idx)
                    loss, m = _micro_loss(part, adv[idx], actor_critic, cfg, entropy_metric=epoch == 0)
                    weight = micro_batch_weight(cfg.loss_type, part.response_mask, mb.response_mask) * share
                    accelerator.backward(loss * weight)
                    metrics.append(m)
                if ptx is not None:
                    ptx_loss = ptx.loss(accelerator.unwrap_model(actor_critic).policy)
                    accelerator.backward(cfg.ptx_coef * ptx_loss)
                    metrics[-1]["loss/ptx"] = ptx_loss.detach()
                row = mean_metrics(metrics)
                row["policy/ratio_max_dev"] = max(float(m["policy/ratio_max_dev"]) for m in metrics)
                losses = {k: row[k] for k in ("loss/policy", "loss/value", "loss/ptx") if k in row}
                apply_step(accelerator, actor_critic, optimizer, scheduler, guard, step, losses, cfg.max_grad_norm)
            row["epoch"] = epoch
            rows.append(row)
    return rows


def episode_prompts(n_prompts: int, step: int, local: int, rank: int, seed: int, k: int = 1,
                    world: int = 1) -> list[int]:
    """PPO's prompt indices for one process at one step, each repeated k times in a row
    (the `local` // k prompts of the step): a seeded permutation per pass over the
    prompts, so a resumed run sees exactly the prompts it would have. Under `world`
    processes the step's prompts are one sequence cut into contiguous shards, shard
    `rank` to this process: no two processes draw the same prompt, and together they draw
    what one process would (the same global batch)."""
    local //= k
    start = (step * world + rank) * local  # prompts every process consumed before this shard
    perms: dict[int, list[int]] = {}
    out = []
    for e in range(start, start + local):
        cycle, pos = divmod(e, n_prompts)
        if cycle not in perms:
            gen = torch.Generator().manual_seed(seed * 7919 + cycle * 31)
            perms[cycle] = torch.randperm(n_prompts, generator=gen).tolist()
        out.extend([perms[cycle][pos]] * k)
    return out


# ----------------------------------------------------------------------------- the loop

def train_ppo(cfg: PPOConfig, reward_fns=()) -> Path:
    """Train a policy with PPO; `reward_fns` adds Python reward functions."""
    if not cfg.model or not cfg.prompts:
        raise ValueError("ppo needs --model and --prompts")
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg, out)
    sizes = cfg.sizes(accelerator.num_processes)
    checkpoints = open_stage(cfg, "ppo", accelerator)
    if checkpoints.finished:  # the directory already holds the model these settings train
        return checkpoints.skip(accelerator)
    accelerator.print(f"plan: {sizes.ppo_steps} PPO steps of {cfg.rollout_batch_size} episodes "
                      f"({sizes.ppo_steps * cfg.rollout_batch_size} episodes, {sizes.optimizer_steps} optimizer steps)")
    device = accelerator.device
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code, chat_template=cfg.chat_template or None)
    tokenizer.padding_side = "left"
    prompt_records, prompt_tokens = load_prompt_set(cfg, tokenizer, accelerator)
    actor_critic, ref_policy = build_models(cfg, tokenizer, device)
    reward = build_reward(cfg, tokenizer, device, reward_fns)
    groups = [{"params": actor_critic.policy.parameters()},
              {"params": actor_critic.critic_parameters(), "lr": cfg.critic_learning_rate or cfg.learning_rate}]
    # Adam, as lm-human-preferences (AdamW only with weight decay; with 0 the two are the same); linear warmup,
    # then linear decay to 0
    actor_critic, optimizer, scheduler = prepared_optimizer(
        accelerator, actor_critic, groups, cfg, sizes.optimizer_steps, "linear",
        round(cfg.warmup_ratio * sizes.optimizer_steps), decoupled=cfg.weight_decay > 0)
    unwrapped = accelerator.unwrap_model(actor_critic)  # the model itself, for the no-grad passes
    kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.adaptive_kl
              else FixedKLController(cfg.kl_coef))
    ptx = PretrainingBatches(cfg, tokenizer, device, accelerator) if cfg.ptx_data and cfg.ptx_coef > 0 else None
    shuffle_rng = torch.Generator().manual_seed(cfg.seed)
    logger = MetricsLogger(out / "metrics.jsonl", accelerator, stage="ppo")
    samples = MetricsLogger(out / "samples.jsonl", accelerator, stage="ppo")
    start, state = checkpoints.resume_training(accelerator, {"actor_critic": actor_critic}, optimizer, scheduler,
                                               logs=[logger, samples])
    if state:
        if not checkpoints.forced:  # --resume force: this run's kl_coef (an adaptive one goes on from its value)
            kl_ctl.load_state_dict(state["kl_controller"])
        elif cfg.adaptive_kl:
            kl_ctl.value = float(state["kl_controller"]["value"])
        shuffle_rng.set_state(state["shuffle"])
        if ptx is not None and "ptx" in state:
            ptx.load_state_dict(state["ptx"])

    sampler = make_sampler(cfg.generation_backend, unwrapped.policy, eos_id=tokenizer.eos_token_id,
                           pad_id=tokenizer.pad_token_id, max_new_tokens=cfg.response_length,
                           temperature=cfg.temperature)
    guard = NonFiniteGuard(cfg.max_nonfinite_steps, "ppo", accelerator.print)
    if not state:  # several processes: each samples its own responses (a resume restores each one's RNG)
        seed_per_process(accelerator, cfg.seed)
    bar = progress_bar(sizes.ppo_steps, "ppo", cfg.progress and accelerator.is_local_main_process)
    bar.update(start)
    for step in range(start, sizes.ppo_steps):
        timings: dict[str, float] = {}
        index = episode_prompts(len(prompt_tokens), step, sizes.local_rollout, accelerator.process_index, cfg.seed,
                                cfg.samples_per_prompt, accelerator.num_processes)
        # Sampling uses the unwrapped policy and scoring the reference and reward models, none of
        # which Accelerate's prepare() wrapped in autocast: under --mixed_precision they join it here.
        with timer(timings, "generate"), accelerator.autocast():
            actor_critic.eval()
            ro = rollout(sampler, [prompt_tokens[i] for i in index], index, tokenizer.pad_token_id, device,
                         cfg.generation_batch_size)
        actor_critic.train()
        with accelerator.autocast():
            reward_parts = score_rollout(ro, unwrapped, ref_policy, reward, tokenizer, prompt_records, cfg, sizes.micro,
                                         timings)
        filtered = penalise_overlong(ro, cfg)
        shape_rewards(ro, reward_kl_coef(cfg, kl_ctl.value), cfg.kl_estimator)
        advantages(ro, cfg, global_whiten(accelerator))
        if not (torch.isfinite(ro.kl).all() and (ro.values is None or torch.isfinite(ro.values).all())):
            raise DivergenceError(f"ppo diverged at step {step + 1}: non-finite "
                                  f"{'KL to the reference' if not torch.isfinite(ro.kl).all() else 'values'} "
                                  "in the rollout; no checkpoint was written from it")
        train_ro, kept = keep_rows(ro, cfg)
        update_rows = update(train_ro, actor_critic, optimizer, scheduler, cfg, sizes, accelerator, shuffle_rng, ptx,
                             timings, guard, step + 1)
        metrics = step_metrics(ro, reward_kl_coef(cfg, kl_ctl.value), update_rows, {**reward_parts, **filtered, **kept},
                               timings, scheduler, step, cfg)
        metrics["objective/kl"] = global_mean(accelerator, metrics["objective/kl"])  # beta adapts to the global KL
        kl_ctl.update(metrics["objective/kl"], cfg.rollout_batch_size)
        done = step + 1
        bar.update(1)
        bar.set_postfix(score=f"{metrics['objective/scores']:.3f}", kl=f"{metrics['objective/kl']:.2f}")
        if done % cfg.log_every == 0 or done == sizes.ppo_steps or done == 1:
            logger.log(done, metrics)
            log_samples(samples, done, ro, tokenizer, prompt_records, cfg.num_samples_logged, accelerator)
        if checkpoints.due(done, sizes.ppo_steps, accelerator):
            checkpoints.save_training(done, accelerator, {"actor_critic": actor_critic}, optimizer, scheduler,
                                      kl_controller=kl_ctl.state_dict(), shuffle=shuffle_rng.get_state(),
                                      **({"ptx": ptx.state_dict()} if ptx is not None else {}))
    bar.close()

    def save(out: Path) -> None:  # the policy, the value function and the KL controller's last value
        save_models(unwrapped, tokenizer, out, merge_lora=not cfg.save_adapter_only)
        write_json(out / "kl_controller.json", kl_ctl.state_dict())
    return checkpoints.finish_stage(accelerator, cfg, save)
