"""rlhfkit: the InstructGPT pipeline (SFT -> Bradley-Terry reward model -> PPO with a
per-token KL penalty) and its successors, on any Hugging Face causal LM."""

__version__ = "0.1.0"
