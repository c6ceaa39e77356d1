"""Tier 2: PPO on a tiny model learns a programmatic reward, KL behaves with beta,
the first minibatch has ratio exactly 1, and both reward routes run via the CLI."""
import subprocess
import sys
import textwrap

import pytest
from transformers import AutoModelForCausalLM

from rlhfkit.trainers.ppo.config import PPOConfig
from rlhfkit.trainers.ppo.trainer import train_ppo
from rlhfkit.testing import save_tiny_model

from conftest import read_metrics, write_jsonl

PAD = 1


def low_token_share(prompts, responses, response_ids):
    """Share of response tokens with id < 100: about 1/3 for a random policy."""
    real = response_ids != PAD
    return ((response_ids < 100) & real).float().sum(1) / real.float().sum(1).clamp(min=1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo")
    model = save_tiny_model(root / "policy")
    prompts = write_jsonl(root / "prompts.jsonl",
                          [{"prompt": [{"role": "user", "content": f"Say {w}."}]} for w in
                           ["cat", "dog", "red", "fig", "owl", "pear", "gold", "lime"] * 2])
    return root, model, prompts


def _run(root, model, prompts, name, beta, **kw):
    kw.setdefault("learning_rate", 3e-3)
    kw.setdefault("total_episodes", 32 * 25)
    cfg = PPOConfig(model=model, prompts=prompts, output_dir=str(root / name),
                    rollout_batch_size=32, per_device_train_batch_size=16, generation_batch_size=32,
                    response_length=8, log_every=1, progress=False, missing_eos_penalty=0.0,
                    kl_coef=beta, seed=0, **kw)
    out = train_ppo(cfg, reward_fns=[low_token_share])
    return read_metrics(out / "metrics.jsonl")


def test_reward_rises_and_kl_grows_as_beta_falls(setup):
    root, model, prompts = setup
    free = _run(root, model, prompts, "beta0", 0.0)
    tight = _run(root, model, prompts, "beta_big", 1.0)
    start = sum(r["objective/scores"] for r in free[:3]) / 3
    end = sum(r["objective/scores"] for r in free[-3:]) / 3
    assert end > start + 0.15, (start, end)
    kl_free = sum(r["objective/kl"] for r in free[-3:]) / 3
    kl_tight = sum(r["objective/kl"] for r in tight[-3:]) / 3
    assert 0 < kl_tight < kl_free and kl_free < 50
    assert abs(sum(r["objective/scores"] for r in tight[-3:]) / 3 - start) < end - start
    for row in free + tight:  # dropout off: the first minibatch of every update is on-policy
        assert row["policy/first_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
        assert row["policy/first_approxkl"] == pytest.approx(0.0, abs=1e-9)
        assert 0 <= row["policy/first_ratio_max_dev"] < 1e-5  # the sampler's log-probs: float rounding
    keys = ["objective/kl", "objective/beta", "objective/entropy", "objective/scores", "objective/non_score_reward",
            "objective/rlhf_reward", "policy/approxkl", "policy/clipfrac", "policy/ratio_mean", "policy/ratio_var",
            "loss/policy", "loss/value", "val/clipfrac", "val/explained_variance", "response/length",
            "response/eos_rate", "timing/generate", "timing/reference", "timing/reward", "timing/values",
            "timing/update"]
    assert all(k in free[-1] for k in keys), [k for k in keys if k not in free[-1]]


def test_adaptive_kl_moves_beta_toward_target(setup):
    root, model, prompts = setup
    rows = _run(root, model, prompts, "adaptive", 0.1, adaptive_kl=True, kl_target=0.01, kl_horizon=100)
    assert rows[-1]["objective/beta"] > 0.1  # KL above target: beta grows


@pytest.mark.slow
def test_ppo_cli_with_python_reward_and_with_reward_model(setup, tmp_path):
    root, model, prompts = setup
    reward_file = tmp_path / "my_reward.py"
    reward_file.write_text(textwrap.dedent("""
        def brevity(prompts, responses, terminated):
            return [1.0 if t else 0.0 for t in terminated]
    """))
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    common = ["--model", model, "--prompts", prompts, "--total_episodes", "32", "--rollout_batch_size", "16",
              "--response_length", "6", "--progress", "false"]
    cli = [sys.executable, "-m", "rlhfkit.cli", "ppo"]
    fn = subprocess.run(cli + common + ["--output_dir", str(tmp_path / "fn"), "--reward_functions",
                                        f"{reward_file}:brevity"], capture_output=True, text=True, env=env)
    assert fn.returncode == 0, fn.stderr
    # a reward model as `rlhfkit rm` saves it: a one-label sequence classifier (a plain causal LM is refused)
    from rlhfkit.models.loading import load_scalar_model, load_tokenizer, save_pretrained_dir

    base = save_tiny_model(tmp_path / "base")
    tokenizer = load_tokenizer(base)
    rm_dir = str(tmp_path / "rm")
    save_pretrained_dir(load_scalar_model(base, tokenizer), tokenizer, rm_dir)
    rm = subprocess.run(cli + common + ["--output_dir", str(tmp_path / "rm_run"), "--reward_model", rm_dir],
                        capture_output=True, text=True, env=env)
    assert rm.returncode == 0, rm.stderr
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "rm_run") is not None
    assert (tmp_path / "rm_run" / "value_model" / "config.json").exists()
    assert (tmp_path / "rm_run" / "kl_controller.json").exists()
    rows = read_metrics(tmp_path / "rm_run" / "metrics.jsonl")
    assert "objective/scores_rm" in rows[-1]


@pytest.mark.parametrize("options", [{"value_head_on_policy": True}, {"use_lora": True, "learning_rate": 3e-2}])
def test_value_head_on_trunk_and_lora_reference_also_learn(setup, options):
    root, model, prompts = setup
    name = "_".join(k for k in options if k != "learning_rate")
    if options.get("use_lora"):
        # LoRA leaves embeddings and norms frozen: with the default 0.02 init of a random tiny
        # model the logits cannot move far, so this policy gets larger (still random) embeddings.
        model = save_tiny_model(root / "lora_base", initializer_range=0.5)
    rows = _run(root, model, prompts, name, 0.0, **options)
    start = sum(r["objective/scores"] for r in rows[:3]) / 3
    end = sum(r["objective/scores"] for r in rows[-3:]) / 3
    assert end > start + 0.1, (start, end)
    assert rows[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # reference == initial policy
    assert rows[0]["policy/first_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    out = root / name
    assert AutoModelForCausalLM.from_pretrained(out) is not None  # LoRA merged into a plain checkpoint
    if options.get("value_head_on_policy"):
        assert (out / "value_head.safetensors").exists()


@pytest.mark.parametrize("estimator", ["rloo", "grpo"])
def test_critic_free_estimators_learn_without_a_value_model(setup, estimator):
    """K = 4 samples per prompt and the group baseline in place of the critic: the
    reward rises, no value loss or value model exists, and every step's batch holds
    each of its 8 prompts exactly 4 times."""
    root, model, prompts = setup
    rows = _run(root, model, prompts, estimator, 0.0, advantage_estimator=estimator, samples_per_prompt=4)
    start = sum(r["objective/scores"] for r in rows[:3]) / 3
    end = sum(r["objective/scores"] for r in rows[-3:]) / 3
    assert end > start + 0.15, (start, end)
    assert "loss/value" not in rows[-1] and "val/explained_variance" not in rows[-1]
    assert rows[0]["policy/first_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    out = root / estimator
    assert AutoModelForCausalLM.from_pretrained(out) is not None
    assert not (out / "value_model").exists() and not (out / "value_head.safetensors").exists()


@pytest.mark.parametrize("options", [{}, {"value_head_on_policy": True},
                                     {"advantage_estimator": "rloo", "samples_per_prompt": 4}])
def test_sampler_and_recomputed_old_logprobs_give_the_same_update(setup, options):
    """The old log-probs from the sampler (the default) and from a no-grad policy pass over
    the rollout give the same run to float rounding, at a temperature other than 1: the
    same weights after two steps of 2 minibatches x 4 epochs, which moved them far more."""
    import torch
    from safetensors.torch import load_file

    root, model, prompts = setup
    name = "_".join(str(v) for v in options.values()) or "gae"
    runs = {}
    for source in ("sampler", "recompute"):
        rows = _run(root, model, prompts, f"old_{source}_{name}", 0.05, total_episodes=64, temperature=0.7,
                    num_minibatches=2, old_logprobs=source, **options)
        assert all(r["policy/first_ratio_max_dev"] < 1e-5 for r in rows)
        runs[source] = load_file(str(root / f"old_{source}_{name}" / "model.safetensors"))
    start = load_file(f"{model}/model.safetensors")
    moved = max(float((runs["sampler"][k] - start[k]).abs().max()) for k in start)
    apart = max(float((runs["sampler"][k] - runs["recompute"][k]).abs().max()) for k in start)
    assert moved > 1e-3 and apart < 1e-5, (moved, apart)
    if not options:
        a, b = (load_file(str(root / f"old_{s}_gae" / "value_model" / "model.safetensors")) for s in runs)
        assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)


def test_episode_prompts_repeat_each_prompt_k_times_and_resume_in_place():
    from rlhfkit.trainers.ppo.trainer import episode_prompts

    steps = [episode_prompts(10, step, 8, 0, 0, k=4) for step in range(5)]
    for index in steps:
        assert [index[i] for i in range(0, 8, 4)] == [index[i + 3] for i in range(0, 8, 4)]
        assert len(set(index[:4])) == 1 and len(set(index[4:])) == 1
    firsts = [i for index in steps for i in index[::4]]
    assert sorted(firsts[:10]) == list(range(10))  # 2 prompts per step: one pass over 10 prompts in 5 steps
    assert episode_prompts(10, 3, 8, 0, 0, k=1) == episode_prompts(10, 3, 8, 0, 0)


@pytest.mark.parametrize("options,message", [
    ({"advantage_estimator": "rloo"}, "samples_per_prompt >= 2"),
    ({"advantage_estimator": "vtrace", "samples_per_prompt": 2}, "gae, rloo or grpo"),
    ({"advantage_estimator": "grpo", "samples_per_prompt": 4, "value_model": "x"}, "trains no value function"),
    ({"samples_per_prompt": 3}, "divisible by samples_per_prompt"),
])
def test_critic_free_options_are_checked(options, message):
    from rlhfkit.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        PPOConfig(rollout_batch_size=64, **options).sizes(1)


def test_critic_learning_rate_is_its_own(setup):
    """learning_rate 0 with critic_learning_rate > 0: the policy stays bit-identical
    while the value model trains (one Adam, two parameter groups)."""
    import torch
    from safetensors.torch import load_file

    root, model, prompts = setup
    _run(root, model, prompts, "critic_lr", 0.1, total_episodes=64, learning_rate=0.0, critic_learning_rate=1e-2)
    out = root / "critic_lr"
    before, after = load_file(f"{model}/model.safetensors"), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    value = load_file(str(out / "value_model" / "model.safetensors"))
    assert any(not torch.equal(before[k], value[k]) for k in before if k in value)
