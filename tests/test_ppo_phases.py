"""PPO phases on hand-built rollouts and a tiny model: where rewards land, what
padding carries, temperature consistency, ratio exactly 1 at the first minibatch."""
import pytest
import torch

from rlhfkit.data.collate import pad_sequences
from rlhfkit.models.forward import response_logprobs
from rlhfkit.generation.samplers import HFSampler, LocalSampler, truncate_after_eos
from rlhfkit.generation.rollout import Rollout
from rlhfkit.testing import tiny_llama, tiny_tokenizer
from rlhfkit.trainers.ppo.config import PPOConfig
from rlhfkit.trainers.ppo.trainer import advantages, shape_rewards

EOS, PAD = 0, 1


def _rollout(response_ids, response_mask, scores, logprobs, ref_logprobs, values=None):
    B, A = response_ids.shape
    return Rollout(prompt_ids=torch.full((B, 2), 5), prompt_mask=torch.ones(B, 2, dtype=torch.long),
                   response_ids=response_ids, response_mask=response_mask, eos=(response_ids == EOS).any(1),
                   prompt_index=torch.arange(B), logprobs=logprobs, ref_logprobs=ref_logprobs,
                   values=values if values is not None else torch.zeros(B, A), scores=scores)


def test_truncate_after_first_eos_pads_the_rest():
    tokens = torch.tensor([[7, EOS, 8, EOS], [7, 8, 9, 9], [EOS, 3, 3, 3]])
    gen = truncate_after_eos(tokens, EOS, PAD)
    assert gen.response_ids.tolist() == [[7, EOS, PAD, PAD], [7, 8, 9, 9], [EOS, PAD, PAD, PAD]]
    assert gen.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert gen.eos.tolist() == [True, False, True]


def test_score_lands_on_last_response_token_and_nothing_after_eos():
    ids = torch.tensor([[7, EOS, PAD, PAD], [7, 8, 9, 9]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    logp = torch.tensor([[-1.0, -2.0, -9.0, -9.0], [-1.0, -1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, -3.0, -3.0], [-1.0, -2.0, -1.0, -1.0]])
    ro = _rollout(ids, mask, torch.tensor([2.0, -1.0]), logp * mask, ref * mask)
    shape_rewards(ro, beta=0.1, estimator="k1")
    # k1 = logp - ref on real tokens, 0 after EOS
    assert torch.allclose(ro.kl, torch.tensor([[0.5, -1.0, 0, 0], [0, 1.0, 0, 0]]))
    expected = torch.tensor([[-0.05, 0.1 + 2.0, 0, 0], [0, -0.1, 0, -1.0]])
    assert torch.allclose(ro.rewards, expected)
    cfg = PPOConfig(gamma=1.0, lam=0.95, whiten_advantages="none")
    advantages(ro, cfg)
    assert (ro.advantages[0, 2:] == 0).all() and (ro.returns[0, 2:] == 0).all()


@pytest.mark.parametrize("old_logprobs,sampler_gave_them", [("sampler", True), ("recompute", True),
                                                            ("sampler", False)])
def test_missing_eos_penalty_is_applied_in_score_rollout(old_logprobs, sampler_gave_them):
    """The penalty, nothing after EOS; the sampler's old log-probs are kept unless recomputed
    (asked for, or a sampler that gave none)."""
    from rlhfkit.rewards import WeightedReward
    from rlhfkit.trainers.ppo.trainer import score_rollout

    tok = tiny_tokenizer()
    model = tiny_llama(tok).eval()
    from transformers import LlamaForSequenceClassification

    value_config = model.config.__class__(**{**model.config.to_dict(), "num_labels": 1})
    value = LlamaForSequenceClassification(value_config).eval()
    ids = torch.tensor([[5, 6, tok.eos_token_id, tok.pad_token_id], [5, 6, 7, 8]])
    gen = truncate_after_eos(ids, tok.eos_token_id, tok.pad_token_id)
    sampled = torch.full((2, 4), -1.0) * gen.response_mask  # the sampler's, kept unless recomputed
    ro = Rollout(prompt_ids=torch.tensor([[9, 10], [9, 10]]), prompt_mask=torch.ones(2, 2, dtype=torch.long),
                 response_ids=gen.response_ids, response_mask=gen.response_mask, eos=gen.eos,
                 prompt_index=torch.tensor([0, 1]), logprobs=sampled if sampler_gave_them else None)

    class Rec:
        prompt, metadata = "p", {}

    reward = WeightedReward([lambda batch: torch.ones(2)], names=["one"])
    from rlhfkit.models.actor_critic import ActorCritic

    cfg = PPOConfig(missing_eos_penalty=1.0, old_logprobs=old_logprobs)
    score_rollout(ro, ActorCritic(model, value), model, reward, tok, [Rec(), Rec()], cfg, 2, {})
    assert ro.scores.tolist() == [1.0, 0.0]
    assert (ro.logprobs[0, 3:] == 0).all() and (ro.values[0, 3:] == 0).all()
    assert torch.equal(ro.logprobs, sampled) == (old_logprobs == "sampler" and sampler_gave_them)


@pytest.mark.parametrize("backend", [LocalSampler, HFSampler])
def test_sampler_logprobs_equal_a_recomputed_forward_at_temperature(backend):
    """The log-prob each sampler returns for a sampled token is the one a full, cache-free
    forward over [left-padded prompt | response] gives at the same temperature, to float
    rounding, for prompts of different lengths; 0 after EOS."""
    tok = tiny_tokenizer()
    model = tiny_llama(tok).eval()
    eos_bias = torch.zeros(len(tok))
    eos_bias[tok.eos_token_id] = 3.0  # EOS likely enough that some rows stop early
    model.lm_head.register_forward_hook(lambda module, inputs, out: out + eos_bias)
    prompts = ["What is 12 plus 7?", "Say hello.", "Count from 3 to 6. Sort these words: pear, cat, blue."]
    ids, mask = pad_sequences([tok(p)["input_ids"] for p in prompts], tok.pad_token_id, side="left")
    assert len(set(mask.sum(1).tolist())) == 3  # three prompt lengths, two rows left-padded
    P = ids.shape[1]
    torch.manual_seed(0)
    gen = backend(model, tok.eos_token_id, tok.pad_token_id, 12, 0.7).generate(ids, mask)
    assert gen.eos.any() and (gen.response_mask == 0).any()
    seq = torch.cat([ids, gen.response_ids], 1)
    am = torch.cat([mask, gen.response_mask], 1)
    with torch.no_grad():
        recomputed = response_logprobs(model, seq, am, P, temperature=0.7) * gen.response_mask
    torch.testing.assert_close(gen.sampler_logprobs, recomputed, rtol=0, atol=1e-5)
    assert (gen.sampler_logprobs[gen.response_mask == 0] == 0).all()
    # the temperature matters: recomputing at 1.0 gives different log-probs
    with torch.no_grad():
        other = response_logprobs(model, seq, am, P, temperature=1.0) * gen.response_mask
    assert not torch.allclose(recomputed, other, atol=1e-3)


def test_values_alone_equal_the_joint_pass_on_the_policy_trunk():
    """With the value head on the policy trunk, the values-only pass (no LM head) gives the
    values of the joint log-probs-and-values pass."""
    from rlhfkit.models.actor_critic import ActorCritic

    tok = tiny_tokenizer()
    ac = ActorCritic(tiny_llama(tok)).eval()
    torch.nn.init.normal_(ac.value_head.weight)
    ids, mask = pad_sequences([tok("Say hello to Tavo. Hello")["input_ids"], tok("Say cat")["input_ids"]],
                              tok.pad_token_id, side="left")
    with torch.no_grad():
        _, joint = ac(ids, mask, 3, 1.0)
        alone = ac.values(ids, mask, 3)
    torch.testing.assert_close(alone, joint, rtol=0, atol=1e-6)


def test_local_and_hf_backends_sample_the_same_tokens():
    tok = tiny_tokenizer()
    model = tiny_llama(tok).eval()
    ids = torch.tensor([tok("Count from 3 to 6.")["input_ids"]] * 3)
    mask = torch.ones_like(ids)
    torch.manual_seed(1)
    a = LocalSampler(model, tok.eos_token_id, tok.pad_token_id, 8, 1.0).generate(ids, mask)
    torch.manual_seed(1)
    b = HFSampler(model, tok.eos_token_id, tok.pad_token_id, 8, 1.0).generate(ids, mask)
    assert torch.equal(a.response_ids, b.response_ids)


def test_local_sampler_cache_samples_what_a_growing_cache_samples(monkeypatch):
    """The preallocated KV cache changes where keys and values live, not what attention
    sees: with transformers' DynamicLayer (which grows by concatenation) in its place, the
    same seed samples the same tokens with the same log-probs, bit for bit, on left-padded
    prompts of three lengths."""
    from transformers.cache_utils import DynamicLayer

    import rlhfkit.generation.samplers as samplers

    tok = tiny_tokenizer()
    model = tiny_llama(tok).eval()
    prompts = ["What is 12 plus 7?", "Say hello.", "Count from 3 to 6. Sort these words: pear, cat, blue."]
    ids, mask = pad_sequences([tok(p)["input_ids"] for p in prompts], tok.pad_token_id, side="left")

    def sample():
        torch.manual_seed(3)
        return LocalSampler(model, tok.eos_token_id, tok.pad_token_id, 16, 1.0).generate(ids, mask)

    preallocated = sample()
    monkeypatch.setattr(samplers, "_preallocated_layer_class", lambda: lambda capacity: DynamicLayer())
    growing = sample()
    assert preallocated.response_mask.sum() > 3 * 8  # long enough that the cache grew well past the prompt
    assert torch.equal(preallocated.response_ids, growing.response_ids)
    assert torch.equal(preallocated.sampler_logprobs, growing.sampler_logprobs)


def test_local_generator_at_temperature_0_is_greedy():
    """T = 0 takes the argmax: every generated token is the argmax of a full,
    cache-free forward pass over the left-padded prompt and the tokens before it."""
    from rlhfkit.testing import full_logits

    tok = tiny_tokenizer()
    model = tiny_llama(tok).eval()
    ids, mask = pad_sequences([tok("What is 12 plus 7?")["input_ids"], tok("Say hello.")["input_ids"]],
                              tok.pad_token_id, side="left")
    P = ids.shape[1]
    gen = LocalSampler(model, tok.eos_token_id, tok.pad_token_id, 6, 0.0).generate(ids, mask)
    seq = torch.cat([ids, gen.response_ids], 1)
    full_mask = torch.cat([mask, gen.response_mask], 1)
    with torch.no_grad():
        logits = full_logits(model, seq, full_mask)[:, P - 1:-1]
    real = gen.response_mask.bool()
    assert torch.equal(logits.argmax(-1)[real], gen.response_ids[real])


def test_mean_logprob_reward_model_scores_the_response_alone_with_its_normalisation():
    """PPO's reward from a reward_form=mean_logprob model: (beta * mean log p(response |
    prompt) - mean) / std, equal through the policy's token ids and through re-tokenised text."""
    from rlhfkit.models.loading import REWARD_FORM_KEY, REWARD_MEAN_KEY, REWARD_SCALE_KEY, REWARD_STD_KEY
    from rlhfkit.rewards import RewardModelScorer, ScoringBatch

    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=1).eval()
    for key, value in ((REWARD_FORM_KEY, "mean_logprob"), (REWARD_SCALE_KEY, 2.0), (REWARD_MEAN_KEY, -3.0),
                       (REWARD_STD_KEY, 0.5)):
        setattr(model.config, key, value)
    prompts = ["Say cat.", "Name a fruit please."]
    responses = ["cat cat", "fig"]
    prompt_seqs = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=True, return_dict=True)["input_ids"] for p in prompts]
    response_seqs = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in responses]
    expected = []
    with torch.no_grad():
        for p, r in zip(prompt_seqs, response_seqs):
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + r])).logits[0], -1)
            mean = sum(float(logp[len(p) + i - 1, t]) for i, t in enumerate(r)) / len(r)
            expected.append((2.0 * mean + 3.0) / 0.5)
    prompt_ids, prompt_mask = pad_sequences(prompt_seqs, tok.pad_token_id, side="left")
    response_ids, response_mask = pad_sequences(response_seqs, tok.pad_token_id, side="right")
    batch = ScoringBatch(prompt_ids, prompt_mask, response_ids, response_mask, [[{"role": "user", "content": p}]
                         for p in prompts], responses, torch.tensor([True, True]), [{}, {}])
    scorer = RewardModelScorer(model, tok, tok)
    torch.testing.assert_close(scorer(batch), torch.tensor(expected), rtol=0, atol=1e-4)
    scorer.same_tokens = False  # the path for a reward model with another vocabulary
    torch.testing.assert_close(scorer(batch), torch.tensor(expected), rtol=0, atol=1e-4)
