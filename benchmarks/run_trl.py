"""One TRL benchmark run, in the peer's own virtual environment:
`python run_trl.py SPEC.json RESULT.json` (no rlhfkit import here).

PPO: trl.experimental.ppo.PPOTrainer (TRL 0.29.1). RLOO, GRPO, SFT, RM, DPO: TRL 1.16's
RLOOTrainer, GRPOTrainer, SFTTrainer, RewardTrainer, DPOTrainer. The training loop is `trainer.train()`,
timed alone (model loading and trainer construction excluded).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from flops import standard_error
from profiling import maybe_profiled


def _threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


def _common_args(spec: dict) -> dict:
    # TRL's configs default to bf16=True and (PPO) gradient_checkpointing=True. On the CPU both
    # are off, as in rlhfkit; on a GPU (spec "device": "cuda") bf16 autocast is on for both systems.
    gpu = spec.get("device") == "cuda"
    return dict(output_dir=spec["output_dir"], seed=spec.get("seed", 0), bf16=gpu, fp16=False,
                gradient_checkpointing=False, logging_steps=1, save_strategy="no", report_to=[], use_cpu=not gpu,
                disable_tqdm=True, dataloader_num_workers=0)


def _read_jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def run_ppo(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    h = spec["hparams"]
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(spec["policy"], padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(spec["policy"], dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(spec["policy"], dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(spec["reward"], num_labels=1, dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(spec["reward"], num_labels=1, dtype=torch.float32)
    data = Dataset.from_dict({"input_ids": [r["input_ids"] for r in _read_jsonl(spec["prompts"])]})
    args = PPOConfig(
        **_common_args(spec),
        per_device_train_batch_size=h["rollout_batch_size"], gradient_accumulation_steps=1,
        num_mini_batches=h["num_minibatches"], local_rollout_forward_batch_size=h["rollout_batch_size"],
        total_episodes=h["total_episodes"], num_ppo_epochs=h["ppo_epochs"], response_length=h["response_length"],
        stop_token="eos", missing_eos_penalty=h["missing_eos_penalty"], kl_coef=h["kl_coef"],
        temperature=h["temperature"], learning_rate=h["learning_rate"], adam_epsilon=h.get("adam_eps", 1e-8),
        num_sample_generations=0,
        lr_scheduler_type="linear", max_grad_norm=1.0,
    )
    trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                         value_model=value, train_dataset=data)
    result, _ = _train_rl(trainer, spec, time.perf_counter() - t0, "objective/scores")
    return result


def _train_rl(trainer, spec: dict, load: float, score_key: str) -> tuple[dict, list[dict]]:
    """Time trainer.train(); a PPO or RLOO trainer logs `score_key` once per rollout, so those
    log rows count the episodes and their last few give the quality. Returns the rows too."""
    t1, cpu1 = time.perf_counter(), time.process_time()
    maybe_profiled(spec, trainer.train)
    train, train_cpu = time.perf_counter() - t1, time.process_time() - cpu1
    rows = [r for r in trainer.state.log_history if score_key in r]
    scores = [r[score_key] for r in rows[-spec.get("quality_last_steps", 5):]]
    episodes = len(rows) * spec["hparams"]["rollout_batch_size"]
    return {"train_seconds": train, "train_cpu_seconds": train_cpu, "load_seconds": load, "episodes": episodes,
            "episodes_per_second": episodes / train, "steps": len(rows), "quality": sum(scores) / max(len(scores), 1),
            "quality_se": standard_error(scores)}, rows


def run_rloo(spec: dict) -> dict:
    """TRL 1.16's RLOOTrainer: K samples per prompt, leave-one-out baseline, the summed k1 KL
    to the reference subtracted from each sequence's reward, clipped updates."""
    from trl import RLOOConfig, RLOOTrainer

    return _run_group_rl(spec, RLOOConfig, RLOOTrainer, normalize_advantages=False)


def run_grpo(spec: dict) -> dict:
    """TRL 1.16's GRPOTrainer: K samples per prompt, group-normalised advantages (scale_rewards
    "group"), the loss_type's aggregation (dapo: token mean), beta x k3 KL in the loss, clipped
    updates reusing each generation num_iterations times."""
    from trl import GRPOConfig, GRPOTrainer

    h = spec["hparams"]
    return _run_group_rl(spec, GRPOConfig, GRPOTrainer, epsilon=h["clip_range"], epsilon_high=h["clip_range_high"],
                         loss_type=h["loss_type"], scale_rewards="group")


def _run_group_rl(spec: dict, config_cls, trainer_cls, **method_args) -> dict:
    """One rollout of rollout_batch_size completions (samples_per_prompt per prompt) per
    generation, reused ppo_epochs times in one minibatch; the reward model scores them."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    h = spec["hparams"]
    rollouts = h["total_episodes"] // h["rollout_batch_size"]
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(spec["policy"], padding_side="left")
    reward_tok = AutoTokenizer.from_pretrained(spec["reward"])
    reward = AutoModelForSequenceClassification.from_pretrained(spec["reward"], num_labels=1, dtype=torch.float32)
    reward.config.pad_token_id = reward_tok.pad_token_id
    data = Dataset.from_dict({"prompt": [r["prompt"] for r in _read_jsonl(spec["prompts"])]})
    args = config_cls(
        **_common_args(spec),
        per_device_train_batch_size=h["rollout_batch_size"], gradient_accumulation_steps=1, steps_per_generation=1,
        num_generations=h["samples_per_prompt"], num_iterations=h["ppo_epochs"], max_steps=rollouts * h["ppo_epochs"],
        max_completion_length=h["response_length"], temperature=h["temperature"], top_k=0, top_p=1.0,
        beta=h["kl_coef"], learning_rate=h["learning_rate"], adam_epsilon=h.get("adam_eps", 1e-8),
        lr_scheduler_type="linear", max_grad_norm=1.0, disable_dropout=True,
        model_init_kwargs={"dtype": torch.float32}, log_completions=False, **method_args,
    )
    trainer = trainer_cls(model=spec["policy"], reward_funcs=[reward], args=args, train_dataset=data,
                          processing_class=tok, reward_processing_classes=[reward_tok])
    result, rows = _train_rl(trainer, spec, time.perf_counter() - t0, "reward")  # logged at each generation
    result["response_length_mean"] = sum(r["completions/mean_length"] for r in rows) / max(len(rows), 1)
    return result


def _loss_rows(trainer) -> list[dict]:
    return [r for r in trainer.state.log_history if "loss" in r]


def run_sft(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    c = spec["peer"]
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    data = Dataset.from_list(_read_jsonl(spec["data"]))
    args = SFTConfig(**_common_args(spec), **c)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
    return _train(trainer, spec, time.perf_counter() - t0, "tokens_per_second")


def run_rm(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    data = Dataset.from_list(_read_jsonl(spec["data"]))
    args = RewardConfig(**_common_args(spec), **spec["peer"])
    trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
    return _train(trainer, spec, time.perf_counter() - t0, "pairs_per_second")


def run_dpo(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    data = Dataset.from_list(_read_jsonl(spec["data"]))
    args = DPOConfig(**_common_args(spec), **spec["peer"])
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tok)
    return _train(trainer, spec, time.perf_counter() - t0, "pairs_per_second")


def _train(trainer, spec: dict, load: float, unit: str) -> dict:
    t1 = time.perf_counter()
    maybe_profiled(spec, trainer.train)
    train = time.perf_counter() - t1
    rows = _loss_rows(trainer)
    return {"train_seconds": train, "load_seconds": load, unit: spec["units"] / train,
            "quality": rows[-1]["loss"] if rows else float("nan"), "steps": trainer.state.global_step}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    _threads(spec["threads"])
    runners = {"ppo": run_ppo, "rloo": run_rloo, "grpo": run_grpo, "sft": run_sft, "rm": run_rm, "dpo": run_dpo}
    result = runners[spec["task"]](spec)
    import torch
    import trl

    result["threads"] = torch.get_num_threads()
    result["version"] = trl.__version__
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
