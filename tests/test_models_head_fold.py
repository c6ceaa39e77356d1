"""A head-form reward model scores the same through plain transformers as inside
rlhfkit once its stored normalisation is folded into the head
(rlhfkit.models.loading.fold_reward_normalisation)."""
import torch
from transformers import AutoModelForSequenceClassification

from rlhfkit.models.forward import reward_scores
from rlhfkit.models.loading import (
    REWARD_MEAN_KEY,
    REWARD_STD_KEY,
    fold_reward_normalisation,
    load_reward_model,
    load_scalar_model,
    load_tokenizer,
    reward_normalisation,
    save_pretrained_dir,
    scalar_head,
)
from rlhfkit.testing import save_tiny_model

TEXTS = ["What is 12 plus 7? 19.", "Say hello to Tavo. Hello!", "red blue green"]


def _batch(tokenizer):
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in TEXTS]
    width = max(map(len, ids))  # right padding: transformers reads the last non-pad token, rlhfkit the last real one
    input_ids = torch.tensor([x + [tokenizer.pad_token_id] * (width - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    return input_ids, mask


def _rlhfkit_scores(model, input_ids, mask) -> torch.Tensor:
    """What PPO and best-of-n read: (raw - mean) / std with the stored normalisation."""
    mean, std = reward_normalisation(model)
    return (reward_scores(model, input_ids, mask, mask) - mean) / std


def _reward_model(tmp_path, mean: float, std: float):
    base = save_tiny_model(tmp_path / "base")
    tokenizer = load_tokenizer(base)
    model = load_scalar_model(base, tokenizer).eval()
    setattr(model.config, REWARD_MEAN_KEY, mean)
    setattr(model.config, REWARD_STD_KEY, std)
    return model, tokenizer


@torch.no_grad()
def test_folded_head_scores_like_rlhfkit_through_plain_transformers(tmp_path):
    model, tokenizer = _reward_model(tmp_path, mean=0.4, std=2.5)
    input_ids, mask = _batch(tokenizer)
    expected = _rlhfkit_scores(model, input_ids, mask)
    # Llama's score head has no bias, as every decoder-only classifier in transformers: the std
    # is folded, the mean stays in config.json as mean / std
    assert not fold_reward_normalisation(model)
    save_pretrained_dir(model, tokenizer, tmp_path / "rm")

    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    logits = plain(input_ids=input_ids, attention_mask=mask).logits[:, 0]
    assert torch.allclose(logits - plain.config.rlhfkit_reward_mean, expected, atol=1e-5)
    assert plain.config.rlhfkit_reward_mean == 0.4 / 2.5 and plain.config.rlhfkit_reward_std == 1.0

    reloaded = load_reward_model(str(tmp_path / "rm"), tokenizer).eval()  # rlhfkit reads the same scores as before
    assert torch.allclose(_rlhfkit_scores(reloaded, input_ids, mask), expected, atol=1e-5)
    assert not fold_reward_normalisation(reloaded)  # folding again changes nothing
    assert torch.allclose(_rlhfkit_scores(reloaded, input_ids, mask), expected, atol=1e-5)


@torch.no_grad()
def test_head_with_a_bias_holds_the_whole_normalisation(tmp_path):
    model, tokenizer = _reward_model(tmp_path, mean=-1.5, std=0.5)
    old = scalar_head(model)
    model.score = torch.nn.Linear(old.in_features, 1, bias=True)
    model.score.weight.copy_(old.weight)
    model.score.bias.fill_(0.25)
    input_ids, mask = _batch(tokenizer)
    expected = _rlhfkit_scores(model, input_ids, mask)
    assert fold_reward_normalisation(model)
    assert reward_normalisation(model) == (0.0, 1.0)
    logits = model(input_ids=input_ids, attention_mask=mask).logits[:, 0]  # the classifier's own forward
    assert torch.allclose(logits, expected, atol=1e-5)


def test_mean_logprob_reward_model_is_left_alone(tmp_path):
    base = save_tiny_model(tmp_path / "base")
    tokenizer = load_tokenizer(base)
    model = load_scalar_model(base, tokenizer)  # a base model has no trained head to load as a reward model
    model.config.rlhfkit_reward_form = "mean_logprob"
    setattr(model.config, REWARD_STD_KEY, 3.0)
    assert not fold_reward_normalisation(model)
    assert reward_normalisation(model) == (0.0, 3.0)
