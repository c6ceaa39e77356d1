"""PPO options, with the paper defaults (docs/ppo.md), checked once at construction, and
the batch sizes they give under a number of processes (PPOSizes; lm-human-preferences'
HParams.validate)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rlhfkit.config import ConfigError, check_divisible, option, option_problem
from rlhfkit.losses.advantages import GROUP_ADVANTAGES
from rlhfkit.losses.grpo import POLICY_LOSSES
from rlhfkit.trainers.train_config import MAX_STEPS, TrainConfig


@dataclass
class PPOConfig(TrainConfig):
    """PPO with a per-token KL penalty to the SFT policy (InstructGPT stage 3)."""

    # PPO's own defaults for shared options (Adam eps 1e-5, as lm-human-preferences; docs/ppo.md)
    learning_rate: float = option(1e-5, "peak learning rate (Adam), decayed linearly to 0")
    critic_learning_rate: float = option(0.0, "peak learning rate of the value function (0: learning_rate). A new "
                                         "value head starts at zero and must catch up with the returns: OpenRLHF's "
                                         "example recipes give the critic about 18x the actor's (9e-6 vs 5e-7)")
    adam_eps: float = option(1e-5, "Adam epsilon (1e-5 as lm-human-preferences and the N+ details)")
    model: str = option("", "policy initialisation (the SFT model): Hugging Face directory or hub id")
    ref_model: str = option("", "frozen reference for the KL penalty (default: the same checkpoint as model)")
    reward_model: str = option("", "reward model directory: a one-label sequence classifier, or a causal LM that "
                              "`rlhfkit rm --reward_form mean_logprob` trained")
    reward_functions: list[str] = option([], "Python rewards 'module:function' or 'file.py:function', "
                                         "called as f(prompts, responses, **kwargs) -> scores")
    reward_weights: dict[str, float] = option({}, "weight of each reward by name, rm=1,format_reward=0.1: rm is the "
                                              "reward model, a function goes by its name (default: 1 each)")
    ai_judge: str = option("", "direct RLAIF: a causal LM judge scores each response against the prompt record's "
                           "reference response (logit of its preference, both orders); no reward model needed")
    ai_judge_principles: str = option("", "the judge's constitution for --ai_judge: one principle a line (empty: none)")
    ai_judge_reference: str = option("reference", "the prompt-record column holding --ai_judge's reference response")
    normalize_reward: bool = option(True, "apply the mean/std normalisation stored with the reward model")
    value_model: str = option("", "value model initialisation (default: the reward model, else the policy "
                              "checkpoint with a zero-initialised head)")
    value_head_on_policy: bool = option(False, "value function as a zero-initialised head on the policy trunk "
                                        "(lm-human-preferences) instead of a separate value model")
    use_lora: bool = option(False, "train a LoRA adapter on the policy; the reference is the adapter disabled "
                            "(merged on save unless save_adapter_only)")
    max_length: int = option(512, "longest PPO-ptx pretraining text in tokens (ptx_data)")
    prompts: str = option("", "RL prompts: a file or dataset with a prompt column (string or messages)")
    prompt_column: str = option("prompt", "column holding the prompt")
    total_episodes: int = option(1024, "prompts sampled over the whole run (one response each)")
    rollout_batch_size: int = option(64, "episodes generated per PPO step, over all processes")
    num_minibatches: int = option(1, "minibatches per rollout batch and PPO epoch")
    ppo_epochs: int = option(4, "passes over each rollout batch")
    per_device_train_batch_size: int = option(64, "micro-batch for the update's forward/backward passes")
    generation_batch_size: int = option(64, "prompts generated at once per process")
    generation_backend: str = option("local", "sampler: 'local' (KV-cache loop) or 'hf' (model.generate)")
    max_prompt_length: int = option(128, "longest prompt in tokens (longer ones are an error)")
    response_length: int = option(32, "most tokens sampled per response")
    temperature: float = option(1.0, "sampling temperature; also divides the logits of every log-prob "
                                "recomputation and of the reference")
    old_logprobs: str = option("sampler", "the old policy's log-probs: sampler (each sampled token's log-prob at "
                               "temperature, as drawn: no policy pass before the update) or recompute (a no-grad "
                               "policy pass over the rollout: exact where the sampler's numerics differ from the "
                               "update's, e.g. under bf16 autocast)")
    missing_eos_penalty: float = option(1.0, "subtracted from the score of a response without EOS")
    kl_coef: float = option(0.02, "beta: per-token KL penalty coefficient (initial value when adaptive)")
    kl_estimator: str = option("k1", "per-token KL estimator in the reward: k1 (log ratio), k2, or k3")
    adaptive_kl: bool = option(False, "adapt beta toward kl_target (Ziegler et al. 2019)")
    kl_target: float = option(6.0, "adaptive KL target, nats per response")
    kl_horizon: int = option(10000, "adaptive KL horizon, episodes")
    advantage_estimator: str = option("gae", "gae (a learned value function, PPO) or a critic-free group baseline "
                                      "over samples_per_prompt responses: rloo (leave-one-out mean) or grpo "
                                      "(group mean and std); critic-free trains no value model, and the "
                                      "response's score minus beta x its summed KL is its one advantage")
    samples_per_prompt: int = option(1, "K responses sampled per prompt, in adjacent rows (rloo and grpo need 2 "
                                     "or more); total_episodes and rollout_batch_size count responses")
    gamma: float = option(1.0, "discount")
    lam: float = option(0.95, "GAE lambda")
    whiten_advantages: str = option("minibatch", "whiten advantages over response tokens: minibatch, batch or none")
    whiten_rewards: bool = option(False, "whiten the shaped per-token rewards before GAE")
    clip_range: float = option(0.2, "policy ratio clip epsilon")
    clip_range_value: float = option(0.2, "value clip around the rollout's values")
    vf_coef: float = option(0.1, "value loss coefficient")
    entropy_coef: float = option(0.0, "entropy bonus coefficient")
    loss_type: str = option("ppo", "how the clipped per-token terms are averaged (rlhfkit.losses.grpo): ppo and "
                            "dapo (token mean over the batch; DAPO), bnpo (token mean per micro-batch, as TRL's), "
                            "grpo (mean per response, then over responses), dr_grpo (token sum / (responses x "
                            "response_length); pair with --advantage_estimator dr_grpo), gspo (one sequence-level "
                            "ratio per response; clip about 3e-4 / 4e-4)")
    clip_range_high: float = option(0.0, "upper ratio clip epsilon, 1 + eps_high (DAPO clip-higher: 0.28); "
                                    "0: clip_range (symmetric)")
    kl_placement: str = option("reward", "where the KL to the reference enters: reward (-kl_coef x kl_t in each "
                               "token's reward; InstructGPT, RLOO), loss (kl_coef x kl_t added to the policy loss; "
                               "GRPO, with --kl_estimator k3), or none (still measured)")
    dynamic_sampling: bool = option(False, "DAPO dynamic sampling: drop from the update the groups whose scores "
                                    "are all equal (advantage 0); the batch shrinks instead of being refilled")
    overlong: str = option("none", "responses cut at response_length: none, filter (DAPO: left out of the "
                           "update), or penalty (DAPO's soft penalty over the last overlong_buffer tokens); with "
                           "either, set missing_eos_penalty 0")
    overlong_buffer: int = option(0, "L_cache of --overlong penalty: the penalty falls from 0 to -1 over the last "
                                  "this many tokens before response_length")
    ptx_data: str = option("", "pretraining texts for PPO-ptx (text or prompt/completion records)")
    ptx_coef: float = option(0.0, "gamma of PPO-ptx: weight of the pretraining log-likelihood (InstructGPT 27.8)")
    ptx_batch_size: int = option(8, "pretraining sequences per optimizer step")
    num_samples_logged: int = option(4, "sample responses written to samples.jsonl at each log step")

    # Ranges checked at construction (rlhfkit.config.check_options), besides TrainConfig's.
    RULES: ClassVar[dict] = {
        "critic_learning_rate": ">= 0", "total_episodes": ">= 1", "rollout_batch_size": ">= 1",
        "num_minibatches": ">= 1", "ppo_epochs": ">= 1", "per_device_train_batch_size": ">= 1",
        "generation_batch_size": ">= 1", "generation_backend": ("local", "hf"),
        "old_logprobs": ("sampler", "recompute"), "max_prompt_length": ">= 1",
        "response_length": ">= 1", "temperature": "> 0", "missing_eos_penalty": ">= 0", "kl_coef": ">= 0",
        "kl_estimator": ("k1", "k2", "k3"), "kl_target": "> 0", "kl_horizon": ">= 1", "samples_per_prompt": ">= 1",
        "advantage_estimator": lambda v: None if v in ("gae", *GROUP_ADVANTAGES) else
        f"advantage_estimator must be gae, {' or '.join(GROUP_ADVANTAGES)}, got {v!r}",
        "learning_rate": ">= 0",
        "gamma": "[0, 1]", "lam": "[0, 1]", "whiten_advantages": ("minibatch", "batch", "none"), "clip_range": "> 0",
        "clip_range_value": "> 0", "vf_coef": ">= 0", "entropy_coef": ">= 0", "ptx_coef": ">= 0",
        "ptx_batch_size": ">= 1", "num_samples_logged": ">= 0", "clip_range_high": ">= 0",
        "loss_type": tuple(POLICY_LOSSES), "kl_placement": ("reward", "loss", "none"),
        "overlong": ("none", "filter", "penalty"),
        "reward_weights": lambda v: next(filter(None, (option_problem(f"reward_weights: {name}", w, "finite")
                                                       for name, w in v.items())), None),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.learning_rate == 0 and not (self.critic_learning_rate > 0 and self.advantage_estimator == "gae"):
            raise ConfigError("learning_rate must be positive, got 0 (0 trains nothing; to train only the value "
                              "function, set critic_learning_rate > 0)")
        if self.advantage_estimator != "gae" and self.samples_per_prompt < 2:
            raise ConfigError(f"advantage_estimator {self.advantage_estimator} needs samples_per_prompt >= 2 "
                              f"(the other samples of a prompt are its baseline), got {self.samples_per_prompt}")
        if self.advantage_estimator != "gae" and (self.value_head_on_policy or self.value_model):
            raise ConfigError(f"advantage_estimator {self.advantage_estimator} trains no value function: "
                              "drop value_head_on_policy and value_model")
        if self.advantage_estimator == "gae" and (self.dynamic_sampling or self.loss_type == "gspo"):
            raise ConfigError("dynamic_sampling and loss_type gspo need one advantage per response from a group: "
                              "--advantage_estimator rloo, grpo or dr_grpo")
        if self.kl_placement == "loss" and self.adaptive_kl:
            raise ConfigError("adaptive_kl adapts the KL coefficient of the reward: use kl_placement reward")
        if self.overlong == "penalty" and not 0 < self.overlong_buffer <= self.response_length:
            raise ConfigError(f"overlong penalty needs 0 < overlong_buffer <= response_length ({self.response_length})"
                              f", got {self.overlong_buffer}")

    def sizes(self, num_processes: int) -> PPOSizes:
        """Batch sizes per process and the step counts under num_processes; refuses remainders
        and a step count no run could take. The options' ranges and combinations were checked
        at construction."""
        if num_processes > 1 and (self.dynamic_sampling or self.overlong == "filter"):
            # each process would keep a different number of rows, and so take a different number
            # of micro-batch backward passes: the processes' gradient all-reduces would not pair up
            raise ConfigError("dynamic_sampling and overlong filter run on one process only for now")
        local_rollout = check_divisible("rollout_batch_size", self.rollout_batch_size, "number of processes",
                                        num_processes)
        check_divisible("per-process rollout batch", local_rollout, "samples_per_prompt", self.samples_per_prompt)
        minibatch = check_divisible("per-process rollout batch", local_rollout, "num_minibatches", self.num_minibatches)
        micro = min(self.per_device_train_batch_size, minibatch)
        accumulation = check_divisible("per-process minibatch", minibatch, "per_device_train_batch_size", micro)
        steps = self.total_episodes // self.rollout_batch_size
        if steps < 1:
            raise ConfigError(f"total_episodes ({self.total_episodes}) is smaller than rollout_batch_size "
                              f"({self.rollout_batch_size})")
        if steps * self.ppo_epochs * self.num_minibatches > MAX_STEPS:  # a mistake, not a run: say so before loading
            raise ConfigError(f"total_episodes {self.total_episodes:.3g} makes {steps:.3g} PPO steps of "
                              f"{self.rollout_batch_size} episodes, more than {MAX_STEPS:.0e} optimizer steps in all; "
                              "lower --total_episodes")
        return PPOSizes(local_rollout=local_rollout, minibatch=minibatch, micro=micro, accumulation=accumulation,
                        ppo_steps=steps, optimizer_steps=steps * self.ppo_epochs * self.num_minibatches)


@dataclass(frozen=True)
class PPOSizes:
    """The batch sizes of one process and the run's step counts (PPOConfig.sizes)."""

    local_rollout: int  # episodes this process samples per PPO step
    minibatch: int  # rows of this process's rollout per optimizer step
    micro: int  # rows per forward/backward pass
    accumulation: int  # micro-batches per minibatch
    ppo_steps: int  # rollouts over the run
    optimizer_steps: int  # ppo_steps x ppo_epochs x num_minibatches
