"""Tier 2: the reward model's forms and training options on a tiny model: the
log-ratio form (a frozen reference that travels with the saved model), the scalar
head with its own learning rate and a warm start, centring and length control."""
import dataclasses
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rlhfkit.data.collate import pad_sequences
from rlhfkit.models.forward import mean_logprob_scores, reward_scores
from rlhfkit.models.loading import LogRatioRewardModel, load_reward_model
from rlhfkit.testing import save_tiny_model
from rlhfkit.trainers.reward import RewardConfig, train_reward_model

from conftest import read_metrics
from test_stages import _marker_preferences


def _encoded_pairs(tok, data):
    """ids, attention mask, target mask [2N, T] of every chosen (even rows) and rejected (odd rows) response."""
    seqs, targets = [], []
    for r in (json.loads(line) for line in open(data)):
        for k in ("chosen", "rejected"):
            p = tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], add_generation_prompt=True,
                                        tokenize=True, return_dict=True)["input_ids"]
            y = tok(r[k], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            seqs.append(p + y)
            targets.append([0] * len(p) + [1] * len(y))
    ids, mask = pad_sequences(seqs, tok.pad_token_id, side="right")
    target, _ = pad_sequences(targets, 0, side="right")
    return ids, mask, target


def _final(out):
    return [r for r in read_metrics(out / "metrics.jsonl") if r.get("final")][-1]


def _config(tmp_path, model_dir, data, **kw):
    base = dict(model=model_dir, data=data, output_dir=str(tmp_path / "rm"), num_epochs=6, learning_rate=2e-3,
                per_device_batch_size=16, eval_fraction=0.25, log_every=5, progress=False)
    return RewardConfig(**{**base, **kw})


def test_logratio_reward_model_learns_and_carries_its_frozen_reference(tmp_path):
    model_dir = save_tiny_model(tmp_path / "base", hidden=64)
    data = _marker_preferences(tmp_path)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids, mask, target = _encoded_pairs(tok, data)
    # untrained, the form scores every response 0 whatever its likelihood: the prior cancels
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    start = LogRatioRewardModel(base, AutoModelForCausalLM.from_pretrained(model_dir))
    start.config.rlhfkit_reward_form = "logratio"
    with torch.no_grad():
        assert mean_logprob_scores(base, ids, mask, target).std() > 0.01
        assert reward_scores(start, ids, mask, target).abs().max() == 0

    out = train_reward_model(_config(tmp_path, model_dir, data, reward_form="logratio", reward_scale=2.0))
    assert _final(out)["val/accuracy"] > 0.9
    # a plain Hugging Face directory for the policy, and the reference beside it, unchanged
    policy = AutoModelForCausalLM.from_pretrained(out).eval()
    reference = AutoModelForCausalLM.from_pretrained(out / "reference").eval()
    assert policy.config.rlhfkit_reward_form == "logratio" and policy.config.rlhfkit_reward_reference == "reference"
    for name, p in reference.state_dict().items():
        torch.testing.assert_close(p, base.state_dict()[name])
    assert any(not torch.equal(p, base.state_dict()[n]) for n, p in policy.state_dict().items())
    # load_reward_model brings both back, and the score is beta x the mean log-ratio, normalised as stored
    model = load_reward_model(str(out), tok).eval()
    assert isinstance(model, LogRatioRewardModel)
    with torch.no_grad():
        raw = reward_scores(model, ids, mask, target)
        by_hand = 2.0 * (mean_logprob_scores(policy, ids, mask, target) - mean_logprob_scores(reference, ids, mask, target))
    torch.testing.assert_close(raw, by_hand, rtol=0, atol=1e-5)
    normalised = (raw - policy.config.rlhfkit_reward_mean) / policy.config.rlhfkit_reward_std
    assert abs(float(normalised.mean())) < 0.05 and abs(float(normalised.std()) - 1) < 0.05
    assert float((normalised[0::2] > normalised[1::2]).float().mean()) > 0.9  # chosen above rejected


def test_logratio_reward_model_scores_ppo_rollouts(tmp_path):
    """PPO's scorer reads a logratio model through the same call as any reward model."""
    from rlhfkit.rewards import RewardModelScorer, ScoringBatch

    model_dir = save_tiny_model(tmp_path / "base", hidden=32)
    data = _marker_preferences(tmp_path, n=32)
    out = train_reward_model(_config(tmp_path, model_dir, data, reward_form="logratio", num_epochs=1))
    tok = AutoTokenizer.from_pretrained(out)
    model = load_reward_model(str(out), tok).eval()
    prompts = ["Say something about cat.", "Say something about fig."]
    responses = ["cat dog gold.", "fig owl cat."]
    prompt_seqs = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=True, return_dict=True)["input_ids"] for p in prompts]
    response_seqs = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in responses]
    prompt_ids, prompt_mask = pad_sequences(prompt_seqs, tok.pad_token_id, side="left")
    response_ids, response_mask = pad_sequences(response_seqs, tok.pad_token_id, side="right")
    batch = ScoringBatch(prompt_ids, prompt_mask, response_ids, response_mask,
                         [[{"role": "user", "content": p}] for p in prompts], responses, torch.tensor([True, True]),
                         [{}, {}])
    scores = RewardModelScorer(model, tok, tok)(batch)
    full, mask = pad_sequences([p + r for p, r in zip(prompt_seqs, response_seqs)], tok.pad_token_id, side="right")
    target, _ = pad_sequences([[0] * len(p) + [1] * len(r) for p, r in zip(prompt_seqs, response_seqs)], 0)
    with torch.no_grad():
        raw = reward_scores(model, full, mask, target)
    expected = (raw - model.config.rlhfkit_reward_mean) / model.config.rlhfkit_reward_std
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-4)


def test_head_learning_rate_trains_the_head_alone_and_a_warm_start_keeps_no_stale_keys(tmp_path):
    model_dir = save_tiny_model(tmp_path / "base", hidden=64)
    data = _marker_preferences(tmp_path)
    # the trunk nearly frozen (lr 1e-7): only the head's own rate can learn the preference
    slow = _config(tmp_path, model_dir, data, learning_rate=1e-7, reward_form="head")
    assert _final(train_reward_model(slow))["val/accuracy"] < 0.75
    out = train_reward_model(dataclasses.replace(slow, head_learning_rate=3e-2, output_dir=str(tmp_path / "fast")))
    assert _final(out)["val/accuracy"] > 0.9
    trunk = AutoModelForSequenceClassification.from_pretrained(out).model.state_dict()
    start = AutoModelForCausalLM.from_pretrained(model_dir).model.state_dict()
    assert max(float((trunk[k] - start[k]).abs().max()) for k in start) < 1e-4  # the trunk barely moved
    # a warm start: a head on a mean_logprob reward model's trunk is a head-form model, normalised afresh
    lp = train_reward_model(_config(tmp_path, model_dir, data, reward_form="mean_logprob", num_epochs=1,
                                    output_dir=str(tmp_path / "lp")))
    warm = train_reward_model(_config(tmp_path, str(lp), data, reward_form="head", num_epochs=1,
                                      normalize_on="none", output_dir=str(tmp_path / "warm")))
    config = AutoModelForSequenceClassification.from_pretrained(warm).config
    assert config.rlhfkit_reward_form == "head" and config.rlhfkit_reward_scale == 1.0
    assert not hasattr(config, "rlhfkit_reward_mean")  # the likelihood model's normalisation is not the head's


def test_centring_and_length_debias_train_and_log_their_terms(tmp_path):
    model_dir = save_tiny_model(tmp_path / "base", hidden=64)
    data = _marker_preferences(tmp_path)
    out = train_reward_model(_config(tmp_path, model_dir, data, reward_form="logratio", normalize_on="none",
                                     center_rewards_coefficient=0.1, length_debias=1.0))
    rows = read_metrics(out / "metrics.jsonl")
    assert _final(out)["val/accuracy"] > 0.9
    logged = [r for r in rows if "loss/centering" in r]
    assert logged and all("loss/length_corr" in r and "rewards/length_weight" in r for r in logged)
    # the Bradley-Terry term is taken on r + w x length, so loss/total is not loss/reward plus penalties
    assert all(abs(r["loss/length_corr"]) <= 1 and r["loss/centering"] >= 0 for r in logged)
    with pytest.raises(Exception, match="length_debias must be >= 0"):
        train_reward_model(_config(tmp_path, model_dir, data, length_debias=-1.0, output_dir=str(tmp_path / "x")))
