"""rlhfkit: the InstructGPT pipeline (SFT -> Bradley-Terry reward model -> PPO with a
per-token KL penalty) and its successors, on any Hugging Face causal LM.

The Python API is one config dataclass and one function per command:

    from rlhfkit import SFTConfig, train_sft, RMConfig, train_rm, DPOConfig, train_dpo
    from rlhfkit import PPOConfig, train_ppo, PipelineConfig, run_pipeline

They are imported on first use, so `import rlhfkit` loads neither torch nor transformers.
Reward functions are in rlhfkit.rewards (verifiers in rlhfkit.rewards.verifiers), the
losses in rlhfkit.losses, the data loaders in rlhfkit.data.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, name there)
_API = {
    "SFTConfig": ("rlhfkit.trainers.sft", "SFTConfig"),
    "train_sft": ("rlhfkit.trainers.sft", "train_sft"),
    "RMConfig": ("rlhfkit.trainers.reward", "RewardConfig"),
    "train_rm": ("rlhfkit.trainers.reward", "train_reward_model"),
    "DPOConfig": ("rlhfkit.trainers.dpo", "DPOConfig"),
    "train_dpo": ("rlhfkit.trainers.dpo", "train_dpo"),
    "PPOConfig": ("rlhfkit.trainers.ppo.config", "PPOConfig"),
    "train_ppo": ("rlhfkit.trainers.ppo.trainer", "train_ppo"),
    "PipelineConfig": ("rlhfkit.pipeline", "PipelineConfig"),
    "run_pipeline": ("rlhfkit.pipeline", "run_pipeline"),
    "GenerateConfig": ("rlhfkit.generation.generate", "GenerateConfig"),
    "generate": ("rlhfkit.generation.generate", "generate"),
}
__all__ = list(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'rlhfkit' has no attribute {name!r}")
    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
