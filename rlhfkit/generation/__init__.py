"""Sampling responses from a policy: the samplers (`local` KV-cache loop, `hf`
generate) and the typed Rollout that PPO's phases fill in."""
