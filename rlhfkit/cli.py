"""`rlhfkit <command>`: one sub-command per stage, each configured by its
dataclass (`--help` lists every option), `--config recipe.yaml` plus overrides."""
from __future__ import annotations

import argparse
import sys

from rlhfkit.config import ConfigArgumentParser, ConfigError, add_config_arguments, config_from_args


def _commands() -> dict[str, tuple[str, type, object]]:
    """name -> (help, config class, train function), imported lazily."""
    from rlhfkit.pipeline import PipelineConfig, run_pipeline
    from rlhfkit.trainers.dpo import DPOConfig, train_dpo
    from rlhfkit.trainers.ppo import train_ppo
    from rlhfkit.trainers.ppo_config import PPOConfig
    from rlhfkit.trainers.reward import RewardConfig, train_reward_model
    from rlhfkit.trainers.sft import SFTConfig, train_sft

    return {
        "sft": ("supervised fine-tuning on demonstrations", SFTConfig, train_sft),
        "rm": ("reward model on comparisons (Bradley-Terry)", RewardConfig, train_reward_model),
        "ppo": ("PPO with a per-token KL penalty to the SFT policy", PPOConfig, train_ppo),
        "dpo": ("direct preference optimisation and its family (--loss sigmoid|ipo|cdpo|robust|hinge|simpo|orpo|kto)",
                DPOConfig, train_dpo),
        "pipeline": ("SFT -> reward model -> PPO in one run directory", PipelineConfig, run_pipeline),
    }


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = ConfigArgumentParser(prog="rlhfkit", description="RLHF the InstructGPT way: SFT, reward model, PPO.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ConfigArgumentParser)
    parsers = {}
    for name, (help_text, cls, _fn) in _commands().items():
        parsers[name] = p = sub.add_parser(name, help=help_text, description=(cls.__doc__ or help_text).strip())
        add_config_arguments(p, cls)
    return parser, parsers


def main(argv: list[str] | None = None) -> int:
    parser, parsers = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the sub-command's parser, which knows its options for a did-you-mean
        parsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    from rlhfkit.trainers.common import CheckpointError, DivergenceError

    _help, cls, fn = _commands()[args.command]
    try:
        cfg = config_from_args(cls, args)
    except ConfigError as e:
        parsers[args.command].exit(2, f"rlhfkit {args.command}: {e}\n")
    try:
        result = fn(cfg)
    except (ValueError, FileNotFoundError, DivergenceError, CheckpointError) as e:
        # Bad input is reported in one line naming the file, line and field; no traceback.
        print(f"rlhfkit {args.command}: error: {e}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"rlhfkit {args.command}: error: out of memory; try a smaller per_device_batch_size "
              "or --gradient_checkpointing true", file=sys.stderr)
        return 1
    print(f"rlhfkit {args.command}: wrote {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
