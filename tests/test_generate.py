"""`rlhfkit generate`: N samples per prompt from a model, and best-of-n with a reward
model (the kept response is the highest-scoring of the N, as the reward model scores it)."""
import json

import pytest
import torch
from conftest import write_jsonl

from rlhfkit.cli import main
from rlhfkit.generation.generate import GenerateConfig, generate, score
from rlhfkit.models.loading import (
    REWARD_MEAN_KEY,
    load_reward_model,
    load_scalar_model,
    load_tokenizer,
    save_pretrained_dir,
)
from rlhfkit.models.tokenizer import as_user_message

PROMPTS = [{"prompt": "Say a."}, {"prompt": [{"role": "user", "content": "Say b."}]}, {"prompt": "Count to 3."}]


def _read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def reward_model(tiny_model_dir, tmp_path):
    """A reward model with a random head and a stored mean, as `rlhfkit rm` saves one."""
    tokenizer = load_tokenizer(str(tiny_model_dir))
    torch.manual_seed(1)
    model = load_scalar_model(str(tiny_model_dir), tokenizer)
    setattr(model.config, REWARD_MEAN_KEY, 0.5)
    save_pretrained_dir(model, tokenizer, tmp_path / "rm")
    return str(tmp_path / "rm")


def test_samples_n_responses_per_prompt(tiny_model_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    path = generate(GenerateConfig(model=str(tiny_model_dir), prompts=prompts, n=3, max_new_tokens=8,
                                   output_dir=str(tmp_path / "g"), per_device_batch_size=4))
    rows = _read(path)
    # plain strings as one user message: the tiny model's tokenizer has a chat template of its own
    assert [r["prompt"] for r in rows] == [as_user_message(p["prompt"]) for p in PROMPTS]
    assert [r["index"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert len(r["responses"]) == len(r["terminated"]) == 3 and r["response"] == r["responses"][0]
        assert "scores" not in r
    assert len({y for r in rows for y in r["responses"]}) > 3  # sampled, not one greedy answer repeated
    assert (tmp_path / "g" / "config.yaml").exists()
    again = _read(generate(GenerateConfig(model=str(tiny_model_dir), prompts=prompts, n=3, max_new_tokens=8,
                                          output_dir=str(tmp_path / "g2"), per_device_batch_size=2)))
    assert len(again) == 3  # another batch size gives the same shape (values may differ: batching differs)


def test_best_of_n_keeps_the_highest_scoring_response(tiny_model_dir, reward_model, tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    out = tmp_path / "bon"
    assert main(["generate", "--model", str(tiny_model_dir), "--prompts", prompts, "--n", "4", "--reward_model",
                 reward_model, "--output_dir", str(out), "--max_new_tokens", "8"]) == 0
    assert f"wrote {out / 'generations.jsonl'}" in capsys.readouterr().out
    rows = _read(out / "generations.jsonl")
    tokenizer = load_tokenizer(reward_model)
    rm = load_reward_model(reward_model, tokenizer).eval()
    for r in rows:
        assert len(r["scores"]) == 4 and r["score"] == max(r["scores"])
        assert r["response"] == r["responses"][r["best"]] and r["scores"][r["best"]] == r["score"]
        # the scores are the reward model's, normalised as stored, recomputed one at a time
        again = score(rm, tokenizer, [r["prompt"]] * 4, r["responses"], r["terminated"], batch_size=1)
        assert again == pytest.approx(r["scores"], abs=1e-4)
    raw = score(rm, tokenizer, [rows[0]["prompt"]], [rows[0]["response"]], [rows[0]["terminated"][rows[0]["best"]]],
                batch_size=1, normalise=False)
    assert raw[0] - 0.5 == pytest.approx(rows[0]["score"], abs=1e-4)  # the stored mean was subtracted


def test_generate_needs_model_and_prompts(capsys):
    assert main(["generate", "--model", "", "--prompts", ""]) == 1
    assert "generate needs --model and --prompts" in capsys.readouterr().err


def test_trl_names_are_read_as_generates(tmp_path):
    from rlhfkit.config import from_dict

    cfg = from_dict(GenerateConfig, {"model_name_or_path": "m", "dataset_name": "p.jsonl", "num_generations": 8,
                                     "max_completion_length": 64, "reward_model_path": "rm"})
    assert (cfg.model, cfg.prompts, cfg.n, cfg.max_new_tokens, cfg.reward_model) == ("m", "p.jsonl", 8, 64, "rm")
