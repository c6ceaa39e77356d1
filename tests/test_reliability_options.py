"""Every bad option is refused when the config is built, before any model or data is
read, with one line naming the option: no silent no-op, no inverted objective,
no hang, no traceback. Table-driven: one row per kind of bad option."""
import math

import pytest

from rlhfkit.cli import main
from rlhfkit.config import ConfigError, from_dict
from rlhfkit.pipeline import PipelineConfig
from rlhfkit.trainers.dpo import DPOConfig
from rlhfkit.trainers.ppo.config import PPOConfig
from rlhfkit.trainers.reward import RewardConfig
from rlhfkit.trainers.sft import SFTConfig

# (command, option, bad value, text the error must contain)
BAD_OPTIONS = [
    # every stage (TrainConfig), through sft
    ("sft", "num_epochs", "0", "num_epochs must be positive"),
    ("sft", "num_epochs", "-1", "num_epochs must be positive"),
    ("sft", "num_epochs", "nan", "num_epochs must be positive"),
    ("sft", "gradient_accumulation_steps", "-1", "gradient_accumulation_steps must be >= 1"),
    ("sft", "gradient_accumulation_steps", "0", "gradient_accumulation_steps must be >= 1"),
    ("sft", "per_device_batch_size", "-4", "per_device_batch_size must be >= 1"),
    ("sft", "per_device_batch_size", "0", "per_device_batch_size must be >= 1"),
    ("sft", "learning_rate", "0", "learning_rate must be positive"),
    ("sft", "learning_rate", "-1e-4", "learning_rate must be positive"),
    ("sft", "learning_rate", "inf", "learning_rate must be positive"),
    ("sft", "lr_scheduler", "foo", "lr_scheduler 'foo' is not a learning-rate schedule"),
    ("sft", "lr_scheduler", "polynomial", "transformers schedule rlhfkit does not implement"),
    ("sft", "warmup_ratio", "5", "warmup_ratio must be in [0, 1]"),
    ("sft", "warmup_ratio", "-0.1", "warmup_ratio must be in [0, 1]"),
    ("sft", "weight_decay", "-0.1", "weight_decay must be >= 0"),
    ("sft", "adam_eps", "0", "adam_eps must be positive"),
    ("sft", "max_grad_norm", "nan", "max_grad_norm must be a finite number"),
    ("sft", "dtype", "float8", "dtype must be one of float32, bfloat16, float16"),
    ("sft", "mixed_precision", "fp32", "mixed_precision must be one of"),
    ("sft", "on_error", "ignore", "on_error must be one of raise, skip"),
    ("sft", "log_every", "0", "log_every must be >= 1"),
    ("sft", "eval_every", "-1", "eval_every must be >= 0"),
    ("sft", "eval_fraction", "1", "eval_fraction must be in [0, 1)"),
    ("sft", "eval_fraction", "-0.5", "eval_fraction must be in [0, 1)"),
    ("sft", "max_length", "0", "max_length must be >= 2"),
    ("sft", "checkpoint_every", "-1", "checkpoint_every must be >= 0"),
    ("sft", "checkpoint_minutes", "-5", "checkpoint_minutes must be >= 0"),
    ("sft", "keep_checkpoints", "0", "keep_checkpoints must be >= 1"),
    ("sft", "max_nonfinite_steps", "0", "max_nonfinite_steps must be >= 1"),
    ("sft", "num_threads", "-1", "num_threads must be >= 0"),
    ("sft", "resume", "yes", "resume must be one of auto, force"),
    ("sft", "lora_r", "0", "lora_r must be >= 1"),
    ("sft", "lora_alpha", "0", "lora_alpha must be positive"),
    # reward model
    ("rm", "reward_form", "scalar", "reward_form must be one of head, mean_logprob"),
    ("rm", "reward_scale", "0", "reward_scale must be positive"),
    ("rm", "normalize_max_texts", "-1", "normalize_max_texts must be >= 0"),
    ("rm", "calibration_bins", "1,0", "calibration_bins must be two or more finite, increasing"),
    ("rm", "lr_scheduler", "cosin", "did you mean 'cosine'"),
    # DPO family
    ("dpo", "beta", "-0.1", "beta must be positive"),
    ("dpo", "beta", "0", "beta must be positive"),
    ("dpo", "label_smoothing", "2", "label_smoothing must be in [0, 0.5)"),
    ("dpo", "label_smoothing", "0.5", "label_smoothing must be in [0, 0.5)"),
    ("dpo", "loss", "sigmod", "did you mean 'sigmoid'"),
    ("dpo", "orpo_lambda", "-1", "orpo_lambda must be >= 0"),
    ("dpo", "simpo_gamma_beta_ratio", "-0.5", "simpo_gamma_beta_ratio must be >= 0"),
    ("dpo", "kto_desirable_weight", "-1", "kto_desirable_weight must be >= 0"),
    ("dpo", "kto_undesirable_weight", "-1", "kto_undesirable_weight must be >= 0"),
    ("dpo", "per_device_batch_size", "-4", "per_device_batch_size must be >= 1"),
    # PPO
    ("ppo", "kl_coef", "-1", "kl_coef must be >= 0"),
    ("ppo", "clip_range", "-0.2", "clip_range must be positive"),
    ("ppo", "clip_range_value", "0", "clip_range_value must be positive"),
    ("ppo", "ppo_epochs", "0", "ppo_epochs must be >= 1"),
    ("ppo", "response_length", "0", "response_length must be >= 1"),
    ("ppo", "max_prompt_length", "0", "max_prompt_length must be >= 1"),
    ("ppo", "rollout_batch_size", "0", "rollout_batch_size must be >= 1"),
    ("ppo", "total_episodes", "0", "total_episodes must be >= 1"),
    ("ppo", "num_minibatches", "0", "num_minibatches must be >= 1"),
    ("ppo", "per_device_train_batch_size", "0", "per_device_train_batch_size must be >= 1"),
    ("ppo", "generation_batch_size", "0", "generation_batch_size must be >= 1"),
    ("ppo", "samples_per_prompt", "0", "samples_per_prompt must be >= 1"),
    ("ppo", "temperature", "0", "temperature must be positive"),
    ("ppo", "gamma", "1.5", "gamma must be in [0, 1]"),
    ("ppo", "lam", "-0.1", "lam must be in [0, 1]"),
    ("ppo", "vf_coef", "-1", "vf_coef must be >= 0"),
    ("ppo", "entropy_coef", "-0.1", "entropy_coef must be >= 0"),
    ("ppo", "ptx_coef", "-1", "ptx_coef must be >= 0"),
    ("ppo", "ptx_batch_size", "0", "ptx_batch_size must be >= 1"),
    ("ppo", "missing_eos_penalty", "-1", "missing_eos_penalty must be >= 0"),
    ("ppo", "kl_estimator", "k4", "kl_estimator must be one of k1, k2, k3"),
    ("ppo", "kl_target", "0", "kl_target must be positive"),
    ("ppo", "kl_horizon", "0", "kl_horizon must be >= 1"),
    ("ppo", "whiten_advantages", "always", "whiten_advantages must be one of minibatch, batch, none"),
    ("ppo", "generation_backend", "vllm2", "generation_backend must be one of local, hf"),
    ("ppo", "advantage_estimator", "vtrace", "advantage_estimator must be gae"),
    ("ppo", "learning_rate", "0", "learning_rate must be positive, got 0 (0 trains nothing"),
    ("ppo", "critic_learning_rate", "-1", "critic_learning_rate must be >= 0"),
    ("ppo", "num_samples_logged", "-1", "num_samples_logged must be >= 0"),
    ("ppo", "reward_weights", "rm=1,format=nan", "reward_weights: format must be a finite number"),
    # nested stage options of the pipeline name the stage
    ("pipeline", "sft.num_epochs", "0", "sft.num_epochs must be positive"),
    ("pipeline", "ppo.kl_coef", "-1", "ppo.kl_coef must be >= 0"),
    ("pipeline", "dpo.beta", "-0.1", "dpo.beta must be positive"),
]


@pytest.mark.parametrize("command,name,value,message", BAD_OPTIONS,
                         ids=[f"{c}-{n}={v}" for c, n, v, _ in BAD_OPTIONS])
def test_bad_option_is_one_line_naming_it(command, name, value, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main([command, f"--{name}={value}", "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert f"rlhfkit {command}: command line: {name.split('.')[0]}" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists(), "nothing is written before the options are checked"


@pytest.mark.parametrize("cls", [SFTConfig, RewardConfig, DPOConfig, PPOConfig, PipelineConfig])
def test_defaults_are_valid_and_python_construction_checks_too(cls):
    cls()
    if cls is not PipelineConfig:
        name = "per_device_train_batch_size" if cls is PPOConfig else "per_device_batch_size"  # PPO's micro-batch
        with pytest.raises(ConfigError, match=f"{name} must be >= 1"):
            cls(**{name: -4})


def test_yaml_values_are_checked_and_the_file_named(tmp_path):
    with pytest.raises(ConfigError, match=r"recipe.yaml: ppo.clip_range must be positive, got -0.2"):
        from_dict(PipelineConfig, {"ppo": {"clip_range": -0.2}}, where="recipe.yaml")


def test_ppo_critic_only_learning_rate_zero_is_allowed_on_purpose():
    """learning_rate 0 with a critic learning rate trains only the value function (a test
    of the critic's own rate uses it): allowed; without a critic it would train nothing."""
    PPOConfig(learning_rate=0.0, critic_learning_rate=1e-2)
    with pytest.raises(ConfigError, match="trains nothing"):
        PPOConfig(learning_rate=0.0, critic_learning_rate=1e-2, advantage_estimator="rloo", samples_per_prompt=2)


def test_a_zero_step_plan_is_refused_never_a_saved_base_model():
    from rlhfkit.trainers.data_plan import step_plan

    with pytest.raises(ValueError, match="batch size >= 1"):
        step_plan(10, -4, 1, 1.0, seed=0)  # used to spin forever
    with pytest.raises(ValueError, match="no training examples"):
        step_plan(0, 4, 1, 1.0, seed=0)
    assert len(step_plan(10, 4, 1, 1e-9, seed=0)) == 1 and not math.isnan(1e-9)


NEGATIVE_AFTER_A_SPACE = [  # `--option -value` (no "="): a value, whatever its spelling, then the range check
    (["sft", "--learning_rate", "-1e-4"], "learning_rate must be positive, got -0.0001"),
    (["sft", "--weight_decay", "-1E2"], "weight_decay must be >= 0, got -100.0"),
    (["sft", "--num_epochs", "-inf"], "num_epochs must be positive, got -inf"),
    (["sft", "--warmup_ratio", "-.5"], "warmup_ratio must be in [0, 1], got -0.5"),
    (["ppo", "--kl_coef", "-2.5e-1"], "kl_coef must be >= 0, got -0.25"),
    (["sft", "--per_device_batch_size", "-4"], "per_device_batch_size must be >= 1, got -4"),
]


@pytest.mark.parametrize("argv,message", NEGATIVE_AFTER_A_SPACE, ids=[a[2] for a, _ in NEGATIVE_AFTER_A_SPACE])
def test_a_negative_number_after_a_space_is_the_options_value(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "expected one argument" not in err, err
    assert len(err.strip().splitlines()) == 1


def test_an_option_after_an_option_is_still_a_missing_value(capsys):
    with pytest.raises(SystemExit):
        main(["sft", "--learning_rate", "--seed", "1"])
    assert "argument --learning_rate: expected one argument" in capsys.readouterr().err
