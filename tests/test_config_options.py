"""Option names users bring from Hugging Face TrainingArguments and TRL, dashed
spellings, bare booleans, and stage options a parent config sets itself
(rlhfkit.config: ALIASES, INSTEAD, SETS_ITSELF)."""
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest

from rlhfkit.cli import build_parser, main
from rlhfkit.config import (
    ConfigArgumentParser,
    ConfigError,
    add_config_arguments,
    check_sets_itself,
    config_from_args,
    from_dict,
    nested,
    option,
    save_yaml,
    load_yaml,
)
from rlhfkit.pipeline import PipelineConfig
from rlhfkit.trainers.ppo.config import PPOConfig
from rlhfkit.trainers.sft import SFTConfig


def _config(path: tuple[str, ...], argv: list[str]):
    """The config a command line gives, without running the command."""
    from rlhfkit.cli import _commands

    parser, _ = build_parser()
    args = parser.parse_args([*path, *argv])
    vars(args).pop("subcommand", None)
    return config_from_args(_commands()[path][1], args)


def _error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("usage: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- habits users bring

def test_trl_names_with_the_same_meaning_are_aliases():
    trl = _config(("sft",), ["--model_name_or_path", "m", "--num_train_epochs", "2", "--per_device_train_batch_size",
                             "4", "--logging_steps", "5", "--save_steps", "50", "--lr_scheduler_type", "linear"])
    ours = _config(("sft",), ["--model", "m", "--num_epochs", "2", "--per_device_batch_size", "4", "--log_every", "5",
                              "--checkpoint_every", "50", "--lr_scheduler", "linear"])
    assert trl == ours and trl.num_epochs == 2.0 and trl.checkpoint_every == 50
    # PPO keeps its own per_device_train_batch_size; TRL's PPO names map to rlhfkit's
    ppo = _config(("ppo",), ["--per_device_train_batch_size", "16", "--num_ppo_epochs", "3", "--cliprange", "0.1",
                             "--sft_model_path", "sft", "--reward_model_path", "rm"])
    assert (ppo.per_device_train_batch_size, ppo.ppo_epochs, ppo.clip_range) == (16, 3, 0.1)
    assert (ppo.model, ppo.reward_model) == ("sft", "rm")
    # nested stage options and YAML read the same names
    assert _config(("pipeline",), ["--ppo.num_ppo_epochs", "3"]).ppo.ppo_epochs == 3
    assert from_dict(SFTConfig, {"model_name_or_path": "m", "logging_steps": 7}).log_every == 7


def test_alias_and_its_rlhfkit_name_together_is_an_error(capsys):
    err = _error(["sft", "--model", "a", "--model_name_or_path", "b"], capsys)
    assert "model and model_name_or_path are the same option" in err
    with pytest.raises(ConfigError, match="num_train_epochs and num_epochs are the same option"):
        from_dict(SFTConfig, {"num_train_epochs": 1, "num_epochs": 2})


@pytest.mark.parametrize("argv,named", [
    (["ppo", "--max_steps", "10"], "use --total_episodes"),
    (["pipeline", "--ppo.max_steps", "10"], "use --ppo.total_episodes"),
    (["dpo", "--bf16", "true"], "use --mixed_precision bf16"),
    (["sft", "--bf16"], "use --mixed_precision bf16"),
    (["rm", "--fp16", "true"], "use --mixed_precision fp16"),
    (["sft", "--warmup_steps", "100"], "use --warmup_ratio"),
    (["sft", "--eval_strategy", "steps"], "use --eval_every"),
    (["ppo", "--max-steps", "10"], "use --total_episodes"),
])
def test_names_with_another_meaning_name_the_rlhfkit_option(argv, named, capsys):
    err = _error(argv, capsys)
    assert "not an rlhfkit option" in err and named in err, err
    assert "max_nonfinite_steps" not in err  # the old, wrong did-you-mean


def test_yaml_names_with_another_meaning_name_the_rlhfkit_option():
    assert from_dict(SFTConfig, {"max_steps": 10}, where="recipe.yaml").max_steps == 10  # TRL's meaning: optimizer steps
    with pytest.raises(ConfigError, match="ppo.max_steps is not an rlhfkit option; use --total_episodes"):
        from_dict(PipelineConfig, {"ppo": {"max_steps": 10}})


def test_dashed_names_and_bare_booleans():
    cfg = _config(("sft",), ["--learning-rate", "3e-4", "--packing", "--output-dir=o", "--gradient_checkpointing"])
    assert (cfg.learning_rate, cfg.packing, cfg.output_dir, cfg.gradient_checkpointing) == (3e-4, True, "o", True)
    assert _config(("sft",), ["--packing", "false"]).packing is False


def test_misspelt_option_still_gets_a_did_you_mean(capsys):
    assert "did you mean '--learning_rate'" in _error(["sft", "--learning_rat", "1"], capsys)


# ----------------------------------------------------------------------------- options a parent sets itself

@dataclass
class _Stage:
    model: str = option("", "model")
    seed: int = option(0, "seed")
    lr: float = option(1e-3, "learning rate")


@dataclass
class _Parent:
    seed: int = option(0, "seed of every stage")
    first: _Stage = nested(_Stage, "first stage")
    second: _Stage = nested(_Stage, "second stage")

    SETS_ITSELF: ClassVar[dict] = {"*": ("seed",), "second": ("model",)}

    def __post_init__(self) -> None:
        check_sets_itself(self)


def test_a_stage_option_the_parent_sets_itself_is_refused():
    assert from_dict(_Parent, {"first": {"model": "m", "lr": 0.1}}).first.model == "m"
    with pytest.raises(ConfigError, match=r"recipe.yaml: second.model is set by this command itself"):
        from_dict(_Parent, {"second": {"model": "m"}}, where="recipe.yaml")
    with pytest.raises(ConfigError, match="first.seed is set by this command itself"):
        from_dict(_Parent, {"first": {"seed": 3}})
    with pytest.raises(ConfigError, match="second.seed is set by this command itself"):
        _Parent(second=_Stage(seed=1))  # Python construction: the same check


def test_a_saved_config_with_defaults_reads_back(tmp_path):
    """A run's config.yaml holds every stage option at its default: reading it back works."""
    save_yaml(_Parent(seed=4), tmp_path / "config.yaml")
    assert from_dict(_Parent, load_yaml(tmp_path / "config.yaml")).seed == 4


def test_options_the_parent_sets_are_not_listed():
    parser = ConfigArgumentParser(prog="x")
    add_config_arguments(parser, _Parent)
    text = parser.format_help(all_options=True)
    assert "--first.model" in text and "--second.lr" in text
    assert "--second.model" not in text and "--first.seed" not in text


def test_pipeline_refuses_the_options_it_sets(capsys):
    for name, value in (("ppo.model", "x"), ("ppo.prompts", "x"), ("ppo.seed", "2"), ("ppo.output_dir", "x"),
                        ("sft.data", "x"), ("rm.num_threads", "2"), ("dpo.loss", "ipo")):
        err = _error(["pipeline", f"--{name}", value], capsys)
        assert f"{name} is set by this command itself" in err, err
    with pytest.raises(ConfigError, match="ppo.reward_model is set by this command itself"):
        PipelineConfig(ppo=PPOConfig(reward_model="rm"))


def test_pipeline_num_threads_reaches_every_stage(tmp_path, monkeypatch):
    import rlhfkit.pipeline as pipeline

    seen = {}
    for name in ("train_sft", "train_reward_model", "train_ppo"):
        monkeypatch.setattr(pipeline, name, lambda cfg, name=name: seen.setdefault(name, cfg))
    cfg = PipelineConfig(output_dir=str(tmp_path / "run"), model="m", demonstrations="d", comparisons="c",
                         prompts="p", num_threads=1, seed=5)
    pipeline.run_pipeline(cfg)
    assert {(c.num_threads, c.seed) for c in seen.values()} == {(1, 5)} and len(seen) == 3


def test_pipeline_algo_is_checked_at_construction():
    with pytest.raises(ConfigError, match="algo: unknown method 'dpx'.*did you mean 'dpo'"):
        PipelineConfig(algo="dpx")
    assert dataclasses.replace(PipelineConfig(), algo="orpo").algo == "orpo"
