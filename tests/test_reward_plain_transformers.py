"""A reward model `rlhfkit rm` saved, read by plain transformers with the one line the
model card and docs/metrics.md give, scores its normalisation texts with mean 0 and
standard deviation 1, as rlhfkit reads it."""
import pytest
import torch
from conftest import write_jsonl
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rlhfkit.data.tokenize import prompt_token_ids
from rlhfkit.trainers.reward import RewardConfig, train_reward_model

PAIRS = [{"prompt": f"Say {w}.", "chosen": f"{w} {w}.", "rejected": f"no {i}."}
         for i, w in enumerate(["cat", "dog", "red", "fig", "owl", "pear", "lime", "bee"])]


def test_plain_transformers_scores_mean_0_std_1_with_the_documented_line(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "prefs.jsonl", PAIRS)
    out = train_reward_model(RewardConfig(model=str(tiny_model_dir), data=data, output_dir=str(tmp_path / "rm"),
                                          eval_fraction=0, per_device_batch_size=4, progress=False, num_epochs=2))
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    raw = []
    torch.set_grad_enabled(False)
    for row in PAIRS:  # the normalisation texts: every comparison response, EOS-terminated
        for response in (row["chosen"], row["rejected"]):
            ids = prompt_token_ids(tokenizer, row["prompt"]) + tokenizer(response, add_special_tokens=False)[
                "input_ids"] + [tokenizer.eos_token_id]
            raw.append(model(input_ids=torch.tensor([ids])).logits[0, 0])
    torch.set_grad_enabled(True)
    raw = torch.stack(raw)
    # the line: what a head without a bias cannot hold is subtracted by hand
    scores = raw - model.config.rlhfkit_reward_mean
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert scores.std().item() == pytest.approx(1.0, abs=1e-3)  # the sample std, as normalisation_stats
    assert model.config.rlhfkit_reward_std == 1.0  # the std is folded into the head's weights
