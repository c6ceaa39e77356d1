"""PPO with a per-token KL penalty (InstructGPT stage 3) and its critic-free variants, each
file named for when it runs:

    config.py        PPOConfig, checked at construction; PPOSizes, the batch sizes
    trainer.py       train_ppo: the five phases of a step and the loop (every run)
    policy_loss.py   the loss of every update, and where the KL enters (every run)
    setup.py         models, reward, prompts; each step's metrics; saving (every run)
    processes.py     what several processes need to match one (a no-op on one process)
    dapo_filters.py  only with --overlong or --dynamic_sampling
    ptx.py           only with --ptx_data (PPO-ptx)

The public entry points are rlhfkit.PPOConfig and rlhfkit.train_ppo; this file imports
nothing, so that reading the config does not load the trainer.
"""
