"""Model and tokenizer hygiene: pad distinct from EOS, a chat template when the
tokenizer has none, a clear error without EOS; scalar heads; safetensors only."""
import pytest
import torch
from transformers import AutoTokenizer

from rlhfkit.models.loading import load_causal_lm, load_scalar_model, load_tokenizer
from rlhfkit.models.tokenizer import DEFAULT_CHAT_TEMPLATE, prepare_tokenizer
from rlhfkit.testing import save_tiny_model, tiny_tokenizer


def test_pad_equal_to_eos_is_replaced_and_embeddings_grow(tmp_path):
    directory = save_tiny_model(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(directory)
    tok.pad_token = tok.eos_token  # the classic mistake: EOS would be masked out of the loss
    tok.chat_template = None
    tok.save_pretrained(directory)
    loaded = load_tokenizer(directory)
    assert loaded.pad_token_id != loaded.eos_token_id
    assert loaded.chat_template == DEFAULT_CHAT_TEMPLATE
    model = load_causal_lm(directory, loaded)
    assert model.get_input_embeddings().weight.shape[0] >= len(loaded)
    assert model.config.pad_token_id == loaded.pad_token_id


def test_tokenizer_without_eos_is_a_clear_error():
    tok = tiny_tokenizer()
    tok.eos_token = None
    with pytest.raises(ValueError, match="no EOS token"):
        prepare_tokenizer(tok)


def test_new_reward_head_is_normal_and_value_head_zero(tmp_path):
    directory = save_tiny_model(tmp_path / "m", hidden=64)
    tok = load_tokenizer(directory)
    reward = load_scalar_model(directory, tok, new_head="normal")
    std = float(reward.score.weight.std())
    assert abs(std - 1 / (64 + 1) ** 0.5) < 0.05  # N(0, 1/sqrt(d+1))
    value = load_scalar_model(directory, tok, new_head="zero")
    assert torch.count_nonzero(value.score.weight) == 0
    reward.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    again = load_scalar_model(str(tmp_path / "rm"), tok, new_head="zero")  # a trained head is kept
    assert torch.equal(again.score.weight, reward.score.weight)


def test_local_weights_only_through_safetensors(tmp_path):
    directory = save_tiny_model(tmp_path / "m")
    tok = load_tokenizer(directory)
    (tmp_path / "m" / "model.safetensors").rename(tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_causal_lm(directory, tok)


def test_response_logits_project_only_the_response_and_match_the_full_forward(tiny_model_dir):
    """`logits_to_keep` must give exactly the slice of the full logits that predicts the
    response, with left padding, and the fallback (a model without the argument) too."""
    from rlhfkit.models.forward import response_logits
    from rlhfkit.testing import full_logits

    model = load_causal_lm(tiny_model_dir, load_tokenizer(tiny_model_dir)).eval()
    torch.manual_seed(0)
    ids = torch.randint(3, 100, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    P = 5
    full = full_logits(model, ids, mask)[:, P - 1:-1]
    part, _ = response_logits(model, ids, mask, P)
    assert part.shape == (3, 12 - P, full.shape[-1])
    torch.testing.assert_close(part, full, rtol=0, atol=0)

    class NoKeep(torch.nn.Module):  # forward without logits_to_keep: full logits, same slice
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, position_ids, use_cache):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=use_cache)

    fallback, out = response_logits(NoKeep(model), ids, mask, P)
    assert out.logits.shape[1] == 12
    torch.testing.assert_close(fallback, full, rtol=0, atol=0)


def test_mean_logprob_score_is_the_mean_response_log_likelihood_under_either_padding(tiny_model_dir):
    """reward_form=mean_logprob: s = 1/|y| sum_t log p(y_t | x, y_<t) over the response only,
    times the stored scale; padding side and the prompt do not enter."""
    from rlhfkit.data.collate import pad_sequences
    from rlhfkit.models.forward import mean_logprob_scores, reward_scores
    from rlhfkit.models.loading import REWARD_FORM_KEY, REWARD_SCALE_KEY, reward_form

    model = load_causal_lm(tiny_model_dir, load_tokenizer(tiny_model_dir)).eval()
    torch.manual_seed(0)
    rows = [(torch.randint(3, 100, (p,)).tolist(), torch.randint(3, 100, (a,)).tolist()) for p, a in [(4, 3), (6, 1), (2, 5)]]
    expected = []
    with torch.no_grad():
        for prompt, response in rows:
            ids = torch.tensor([prompt + response])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
            expected.append(sum(float(logp[len(prompt) + i - 1, t]) for i, t in enumerate(response)) / len(response))
        for side in ("right", "left"):
            ids, mask = pad_sequences([p + r for p, r in rows], 0, side=side)
            target, _ = pad_sequences([[0] * len(p) + [1] * len(r) for p, r in rows], 0, side=side)
            got = mean_logprob_scores(model, ids, mask, target)
            torch.testing.assert_close(got.double(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-5)
        assert reward_form(model) == ("head", 1.0)  # a plain checkpoint is read as a head-form model
        setattr(model.config, REWARD_FORM_KEY, "mean_logprob")
        setattr(model.config, REWARD_SCALE_KEY, 2.5)
        torch.testing.assert_close(reward_scores(model, ids, mask, target), 2.5 * got)
        setattr(model.config, REWARD_FORM_KEY, "logits")
        with pytest.raises(ValueError, match="rlhfkit_reward_form='logits'"):
            reward_form(model)
