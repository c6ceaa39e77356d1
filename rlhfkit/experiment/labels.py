"""The names people read in the world's report (tables, plot legends) for the models' own."""

LABELS = {"base_small": "base-small", "base_large": "base-large (\"GPT-3\")", "sft": "SFT", "ppo": "PPO (RLHF)",
          "ppo_ptx": "PPO-ptx", "rloo": "RLOO (no critic)", "grpo": "GRPO (no critic)", "dpo": "DPO", "ipo": "IPO",
          "cdpo": "cDPO", "robust": "robust DPO", "hinge": "SLiC hinge", "simpo": "SimPO", "kto": "KTO",
          "orpo": "ORPO (from base-small)", "ppo_gold": "PPO on the gold judge (oracle, upper bound)",
          "bon4": "best-of-4 (RM)", "bon16": "best-of-16 (RM)",
          "ppo_ai": "PPO on AI feedback (RLAIF)", "ppo_ai_direct": "PPO with the AI judge as reward (direct RLAIF)"}


def label(name: str) -> str:
    return LABELS.get(name, name)
