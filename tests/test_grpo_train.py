"""Tier 2: the GRPO family through the PPO trainer on a tiny model: each loss type
learns a programmatic reward, the DAPO filters drop what they should, the KL moves
from the reward to the loss, and the options are checked."""
import pytest

from rlhfkit.config import ConfigError
from rlhfkit.trainers.ppo.config import PPOConfig
from rlhfkit.trainers.ppo.trainer import train_ppo
from rlhfkit.testing import save_tiny_model

from conftest import read_metrics, write_jsonl

PAD = 1


def low_token_share(prompts, responses, response_ids):
    """Share of response tokens with id < 100: about 1/3 for a random policy."""
    real = response_ids != PAD
    return ((response_ids < 100) & real).float().sum(1) / real.float().sum(1).clamp(min=1)


def first_token_low(prompts, responses, response_ids):
    """1 when the first response token has id < 100, else 0: many groups of 4 agree."""
    return (response_ids[:, 0] < 100).float()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    model = save_tiny_model(root / "policy")
    prompts = write_jsonl(root / "prompts.jsonl", [{"prompt": f"Say {w}."} for w in
                                                   ["cat", "dog", "red", "fig", "owl", "pear", "gold", "lime"]])
    return root, model, prompts


def _run(root, model, prompts, name, reward=low_token_share, **kw):
    kw.setdefault("total_episodes", 32 * 12)
    cfg = PPOConfig(model=model, prompts=prompts, output_dir=str(root / name), rollout_batch_size=32,
                    per_device_train_batch_size=16, generation_batch_size=32, response_length=8, log_every=1,
                    progress=False, missing_eos_penalty=0.0, learning_rate=1e-2, seed=0,
                    advantage_estimator=kw.pop("advantage_estimator", "grpo"), samples_per_prompt=4,
                    whiten_advantages="none", **kw)
    return read_metrics(train_ppo(cfg, reward_fns=[reward]) / "metrics.jsonl")


def _gain(rows):
    return sum(r["objective/scores"] for r in rows[-3:]) / 3 - sum(r["objective/scores"] for r in rows[:3]) / 3


@pytest.mark.parametrize("options", [
    {"loss_type": "grpo", "kl_placement": "loss", "kl_estimator": "k3", "kl_coef": 0.04},
    {"loss_type": "dr_grpo", "advantage_estimator": "dr_grpo", "kl_placement": "none"},
    {"loss_type": "dapo", "clip_range_high": 0.28, "kl_placement": "none"},
    {"loss_type": "gspo", "clip_range": 3e-3, "clip_range_high": 4e-3, "kl_placement": "none"},
])
def test_each_loss_type_learns(setup, options):
    root, model, prompts = setup
    rows = _run(root, model, prompts, "_".join(str(v) for v in options.values()), **options)
    assert _gain(rows) > 0.1, _gain(rows)
    assert rows[0]["policy/first_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert all(k in rows[-1] for k in ("policy/clipfrac_low", "policy/clipfrac_high", "loss/policy"))
    if options["kl_placement"] == "loss":  # the KL leaves the reward and enters the loss
        assert rows[-1]["objective/beta"] == 0 and rows[-1]["objective/non_score_reward"] == 0
        assert rows[-1]["loss/kl"] > 0 and rows[-1]["objective/kl"] != 0
    else:
        assert "loss/kl" not in rows[-1]


def test_dynamic_sampling_and_overlong_filter_drop_rows(setup):
    root, model, prompts = setup
    rows = _run(root, model, prompts, "dapo_filters", reward=first_token_low, total_episodes=32 * 4,
                loss_type="dapo", dynamic_sampling=True, overlong="filter", kl_placement="none")
    for r in rows:
        assert 0 <= r["filter/kept"] <= r["filter/varied_groups"] <= 1
        assert r["filter/kept"] <= 1 - r["filter/truncated"] + 1e-9 or r["filter/kept"] == 1
    assert any(r["filter/varied_groups"] < 1 for r in rows)  # some groups of 4 agreed and were dropped


def test_overlong_penalty_lowers_the_scores_of_long_responses(setup):
    root, model, prompts = setup
    rows = _run(root, model, prompts, "overlong_penalty", total_episodes=32 * 2, loss_type="dapo",
                overlong="penalty", overlong_buffer=4)
    for r in rows:
        assert -1 <= r["objective/overlong_penalty"] < 0  # a random tiny model rarely stops within 4 tokens
        assert r["objective/scores"] == pytest.approx(r["objective/scores_low_token_share"]
                                                      + r["objective/overlong_penalty"], abs=1e-5)


@pytest.mark.parametrize("options,message", [
    ({"loss_type": "bogus"}, "loss_type must be one of"),
    ({"kl_placement": "everywhere"}, "kl_placement must be"),
    ({"kl_placement": "loss", "adaptive_kl": True}, "adaptive_kl"),
    ({"overlong": "penalty"}, "overlong_buffer"),
    ({"overlong": "cut"}, "overlong must be"),
    ({"advantage_estimator": "gae", "samples_per_prompt": 1, "dynamic_sampling": True}, "dynamic_sampling"),
])
def test_grpo_options_are_checked(options, message):
    options = {"advantage_estimator": "grpo", "samples_per_prompt": 4, **options}
    with pytest.raises(ConfigError, match=message):
        PPOConfig(rollout_batch_size=64, **options).sizes(1)
