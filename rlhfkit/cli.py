"""`rlhfkit <command>`: one sub-command per stage, each configured by its
dataclass (`--help` lists the command's options, `--help-all` every stage's too),
`--config recipe.yaml` plus overrides (docs/configuration.md)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from rlhfkit.config import ConfigArgumentParser, ConfigError, add_config_arguments, config_from_args


def _commands() -> dict[tuple[str, ...], tuple[str, type, object]]:
    """command path -> (help, config class, function), imported lazily."""
    from rlhfkit.experiment.options import RunConfig
    from rlhfkit.experiment.pretrain import PretrainConfig, pretrain_world
    from rlhfkit.experiment.run import run_world
    from rlhfkit.experiment.studies import StudyConfig, run_study
    from rlhfkit.experiment.sweep import SweepConfig, sweep_kl
    from rlhfkit.generation.generate import GenerateConfig, generate
    from rlhfkit.label.ai import AIConfig, label_ai
    from rlhfkit.label.export import ExportConfig, StatsConfig, export_labels, labeling_stats
    from rlhfkit.label.revise import ReviseConfig, revise
    from rlhfkit.label.sample import SampleConfig, sample_items
    from rlhfkit.label.server import ServeConfig, serve
    from rlhfkit.pipeline import PipelineConfig, run_pipeline
    from rlhfkit.reason.run import ReasonConfig, run_reason
    from rlhfkit.trainers.dpo import DPOConfig, train_dpo
    from rlhfkit.trainers.ppo.config import PPOConfig
    from rlhfkit.trainers.ppo.trainer import train_ppo
    from rlhfkit.trainers.reward import RewardConfig, train_reward_model
    from rlhfkit.trainers.sft import SFTConfig, train_sft

    return {
        ("run",): ("the main job: the InstructGPT recipe in the instruction world, evaluated and reported",
                   RunConfig, run_world),
        ("sft",): ("supervised fine-tuning on demonstrations", SFTConfig, train_sft),
        ("rm",): ("reward model on comparisons (Bradley-Terry)", RewardConfig, train_reward_model),
        ("ppo",): ("PPO with a per-token KL penalty to the SFT policy", PPOConfig, train_ppo),
        ("dpo",): ("direct preference optimisation and its family (--loss sigmoid|ipo|cdpo|robust|hinge|simpo|orpo|kto)",
                   DPOConfig, train_dpo),
        ("pipeline",): ("SFT -> reward model -> PPO in one run directory", PipelineConfig, run_pipeline),
        ("generate",): ("sample N responses per prompt; with --reward_model keep the best of N (best-of-n)",
                        GenerateConfig, generate),
        ("world", "pretrain"): ("pretrain the world's base models on its web text", PretrainConfig, pretrain_world),
        ("world", "reason"): ("the reasoning world: SFT, then RL with an answer checker as the only reward; "
                              "pass@k and faithfulness of the working", ReasonConfig, run_reason),
        ("world", "sweep-kl"): ("PPO at several KL coefficients from a finished run: gold and proxy vs sqrt(KL)",
                                SweepConfig, sweep_kl),
        ("world", "study"): ("one of RLHF's known limitations measured from a finished run: "
                             "`rlhfkit world study NAME --run_dir DIR` (docs/studies.md)", StudyConfig, run_study),
        ("label", "serve"): ("the labeling web app: labelers rank K responses, score them 1-7 and flag them",
                             ServeConfig, serve),
        ("label", "sample"): ("sample K responses per prompt with a causal LM: items to label", SampleConfig,
                              sample_items),
        ("label", "export"): ("labels as K-way rankings for `rlhfkit rm` (and pairs for `rlhfkit dpo`)",
                              ExportConfig, export_labels),
        ("label", "stats"): ("inter-labeler agreement on shared items, per-labeler counts, Likert and flags",
                             StatsConfig, labeling_stats),
        ("label", "ai"): ("rank items with a causal LM judge (Constitutional AI's multiple choice, both orders)",
                          AIConfig, label_ai),
        ("label", "revise"): ("critique and revise responses under a constitution: SFT data (Constitutional AI)",
                              ReviseConfig, revise),
    }


def build_parser() -> tuple[argparse.ArgumentParser, dict[tuple[str, ...], argparse.ArgumentParser]]:
    import rlhfkit

    parser = ConfigArgumentParser(prog="rlhfkit", description="RLHF the InstructGPT way: SFT, reward model, PPO.")
    parser.add_argument("--version", action="version", version=f"rlhfkit {rlhfkit.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ConfigArgumentParser)
    groups: dict[str, argparse._SubParsersAction] = {}
    parsers = {}
    for path, (help_text, cls, _fn) in _commands().items():
        holder = sub
        if len(path) == 2:
            if path[0] not in groups:
                group = sub.add_parser(path[0], help=f"{path[0]} commands")
                groups[path[0]] = group.add_subparsers(dest="subcommand", required=True,
                                                       parser_class=ConfigArgumentParser)
            holder = groups[path[0]]
        parsers[path] = p = holder.add_parser(path[-1], help=help_text, description=(cls.__doc__ or help_text).strip())
        add_config_arguments(p, cls)
    return parser, parsers


class _Console(logging.Handler):
    """rlhfkit's log lines as plain text: information (what each data file held) to
    stdout, warnings to stderr; the streams are looked up when a line is written."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stdout if record.levelno < logging.WARNING else sys.stderr, flush=True)


def _show_log_lines() -> None:
    """Print rlhfkit's INFO lines on the main process (under `accelerate launch` the
    others stay quiet but for warnings)."""
    log = logging.getLogger("rlhfkit")
    if os.environ.get("RANK", "0") == "0" and not any(isinstance(h, _Console) for h in log.handlers):
        log.addHandler(_Console())
        log.setLevel(logging.INFO)


def _study_name_as_option(argv: list[str]) -> list[str]:
    """`world study NAME ...` reads as `world study --study NAME ...` (the options are flags)."""
    if argv[:2] == ["world", "study"] and len(argv) > 2 and not argv[2].startswith("-"):
        return [*argv[:2], "--study", argv[2], *argv[3:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    import transformers

    # The CLI prints its own progress; transformers' per-load reports (e.g. "score.weight
    # newly initialised" when a reward head is added on purpose) would only be noise.
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    _show_log_lines()
    parser, parsers = build_parser()
    args, unknown = parser.parse_known_args(_study_name_as_option(sys.argv[1:] if argv is None else list(argv)))
    path = (args.command,) + ((args.subcommand,) if getattr(args, "subcommand", None) else ())
    name = " ".join(path)
    if unknown:  # reported by the sub-command's parser, which knows its options for a did-you-mean
        parsers[path].error(f"unrecognized arguments: {' '.join(unknown)}")
    from rlhfkit.trainers.errors import CheckpointError, DivergenceError, MissingExtraError

    _help, cls, fn = _commands()[path]
    vars(args).pop("subcommand", None)
    try:
        cfg = config_from_args(cls, args)
    except ConfigError as e:
        parsers[path].exit(2, f"rlhfkit {name}: {e}\n")
    try:
        result = fn(cfg)
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, DivergenceError,
            CheckpointError, MissingExtraError) as e:
        # Bad input is reported in one line naming the file, line and field; no traceback.
        print(f"rlhfkit {name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rlhfkit {name}: interrupted; rerun the same command to resume from the last checkpoint saved",
              file=sys.stderr)
        return 130
    except OSError as e:  # a full disk outside the saves that say so themselves (a log line, config.yaml)
        from rlhfkit.io import out_of_space

        if not out_of_space(e):
            raise
        print(f"rlhfkit {name}: error: disk full: could not write {e.filename or 'a file'} ({e.strerror or e}); "
              "free some space and rerun the command", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as e:
        import torch

        out_of_memory = isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(e)
        if not out_of_memory:
            raise
        print(f"rlhfkit {name}: error: out of memory ({str(e).splitlines()[0][:200]}); try a smaller "
              "per_device_batch_size (PPO: per_device_train_batch_size, generation_batch_size) or "
              "--gradient_checkpointing true; rerun the command to resume from the last checkpoint saved, if any",
              file=sys.stderr)
        return 1
    print(f"rlhfkit {name}: wrote {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
