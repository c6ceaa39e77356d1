"""Tier 2: SFT and the reward model end to end on a tiny model, asserting that
something was learned, plus determinism and the CLI a new user would run."""
import dataclasses
import json
import random
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rlhfkit.models.forward import scores_at
from rlhfkit.trainers.reward import RewardConfig, train_reward_model
from rlhfkit.trainers.sft import SFTConfig, train_sft
from rlhfkit.testing import save_tiny_model

from conftest import read_metrics, write_jsonl

WORDS = ["cat", "dog", "red", "fig", "owl", "pear"]


def _pairs_data(tmp_path):
    combos = [(a, b) for a in WORDS for b in WORDS if a != b]
    random.Random(0).shuffle(combos)
    held_out, train = combos[:5], combos[5:]
    rows = lambda cs: [{"prompt": [{"role": "user", "content": f"Say {a} then {b}."}], "completion": f"{a} {b}."}
                       for a, b in cs]
    return write_jsonl(tmp_path / "train.jsonl", rows(train) * 3), write_jsonl(tmp_path / "eval.jsonl", rows(held_out)), held_out


@torch.no_grad()
def _greedy(model_dir, prompt, n=8):
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1]:])


def test_sft_learns_a_pattern_and_reproduces_held_out_completions(tmp_path):
    model_dir = save_tiny_model(tmp_path / "base", hidden=64)
    train, held, held_out = _pairs_data(tmp_path)
    out = train_sft(SFTConfig(model=model_dir, data=train, eval_data=held, output_dir=str(tmp_path / "sft"),
                              num_epochs=30, learning_rate=3e-3, per_device_batch_size=16, warmup_ratio=0.05,
                              log_every=5, progress=False))
    rows = read_metrics(out / "metrics.jsonl")
    train_losses = [r["loss/train"] for r in rows if "loss/train" in r]
    assert train_losses[-1] < 0.3 * train_losses[0]
    correct = sum(_greedy(out, f"Say {a} then {b}.").startswith(f"{a} {b}.<|endoftext|>") for a, b in held_out)
    assert correct >= 4, "the SFT model should reproduce held-out completions, EOS included"
    # a plain transformers load with the chat template
    assert AutoTokenizer.from_pretrained(out).chat_template


def _marker_preferences(tmp_path, n=96):
    rng = random.Random(0)
    rows = []
    for i in range(n):
        w = rng.choice(WORDS)
        other = rng.choice([x for x in WORDS if x != w])
        good, bad = f"{w} {other} gold.", f"{w} {other} cat."
        rows.append({"prompt": f"Say something about {w}.", "chosen": good, "rejected": bad})
    return write_jsonl(tmp_path / "prefs.jsonl", rows)


def test_reward_model_learns_a_marker_preference_and_is_normalised(tmp_path):
    model_dir = save_tiny_model(tmp_path / "base", hidden=64)
    data = _marker_preferences(tmp_path)
    out = train_reward_model(RewardConfig(model=model_dir, data=data, output_dir=str(tmp_path / "rm"), num_epochs=6,
                                          learning_rate=2e-3, per_device_batch_size=16, eval_fraction=0.25,
                                          log_every=5, progress=False))
    final = [r for r in read_metrics(out / "metrics.jsonl") if r.get("final")][-1]
    assert final["val/accuracy"] > 0.9
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    cfg = model.config
    # normalisation: the training responses score mean 0 and std 1 after (raw - mean) / std
    texts = [json.loads(line) for line in open(data)]
    seqs = [tok(r["prompt"] + r[k], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            for r in texts for k in ("chosen", "rejected")]
    from rlhfkit.data.collate import pad_sequences

    ids, mask = pad_sequences(seqs, tok.pad_token_id, side="right")
    with torch.no_grad():
        raw = scores_at(model, ids, mask)
    normalised = (raw - cfg.rlhfkit_reward_mean) / cfg.rlhfkit_reward_std
    assert abs(float(normalised.mean())) < 0.05
    assert abs(float(normalised.std()) - 1) < 0.05
    # the std is folded into the head: plain transformers' scores already have std 1 (the mean stays stored)
    assert cfg.rlhfkit_reward_std == 1.0 and abs(float(raw.std()) - 1) < 0.05


def test_normalisation_on_a_seeded_sample_of_the_responses(tmp_path):
    from rlhfkit.config import ConfigError
    from rlhfkit.data.loading import as_rankings, load_preferences
    from rlhfkit.models.loading import load_tokenizer
    from rlhfkit.data.loading import load_records
    from rlhfkit.trainers.reward import _encode, _normalisation_examples

    model_dir = save_tiny_model(tmp_path / "base", hidden=32)
    data = _marker_preferences(tmp_path, n=40)
    tok = load_tokenizer(model_dir)
    cfg = RewardConfig(model=model_dir, data=data)
    records = _encode(tok, as_rankings(load_records(load_preferences, data, cfg.columns(), "raise", None)), cfg)
    key = lambda examples: [tuple(e.input_ids) for e in examples]
    everything = key(_normalisation_examples(cfg, tok, records, None))
    assert len(everything) == 80  # chosen and rejected of every pair
    sample = key(_normalisation_examples(dataclasses.replace(cfg, normalize_max_texts=16), tok, records, None))
    assert len(sample) == 16 and all(s in everything for s in sample)
    assert sample == key(_normalisation_examples(dataclasses.replace(cfg, normalize_max_texts=16), tok, records, None))
    assert sample != key(_normalisation_examples(dataclasses.replace(cfg, normalize_max_texts=16, seed=1), tok,
                                                 records, None))
    assert key(_normalisation_examples(dataclasses.replace(cfg, normalize_max_texts=500), tok, records, None)) == everything
    with pytest.raises(ConfigError, match="normalize_max_texts"):
        train_reward_model(dataclasses.replace(cfg, normalize_max_texts=-1, output_dir=str(tmp_path / "rm")))


def test_k_way_rankings_train_with_all_pairs_per_prompt(tmp_path):
    model_dir = save_tiny_model(tmp_path / "base", hidden=32)
    rows = [{"prompt": f"Rate {w}.", "responses": [f"{w} gold gold.", f"{w} gold.", f"{w}."], "ranking": [0, 1, 2]}
            for w in WORDS * 8]
    data = write_jsonl(tmp_path / "rank.jsonl", rows)
    out = train_reward_model(RewardConfig(model=model_dir, data=data, output_dir=str(tmp_path / "rm"), num_epochs=5,
                                          learning_rate=2e-3, per_device_batch_size=8, eval_fraction=0.2,
                                          log_every=1, progress=False, normalize_on="none"))
    final = [r for r in read_metrics(out / "metrics.jsonl") if r.get("final")][-1]
    assert final["val/pairs"] == 3 * round(0.2 * len(rows))  # C(3,2) pairs per held-out prompt
    assert final["val/accuracy"] > 0.9


def test_same_seed_gives_same_weights(tmp_path):
    model_dir = save_tiny_model(tmp_path / "base")
    train, _, _ = _pairs_data(tmp_path)
    weights = []
    for run in ("a", "b"):
        out = train_sft(SFTConfig(model=model_dir, data=train, output_dir=str(tmp_path / run), num_epochs=1,
                                  learning_rate=1e-3, per_device_batch_size=8, progress=False, seed=3))
        weights.append(AutoModelForCausalLM.from_pretrained(out).state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_new_user_trains_sft_and_reward_model_through_the_cli(tmp_path):
    """Exactly what README tells a new user: a local model directory and JSONL files."""
    model_dir = save_tiny_model(tmp_path / "my-model")
    demos = write_jsonl(tmp_path / "demos.jsonl", [{"prompt": f"Say {w}.", "completion": f"{w}."} for w in WORDS * 4])
    prefs = _marker_preferences(tmp_path, n=24)
    cli = [sys.executable, "-m", "rlhfkit.cli"]
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    sft = subprocess.run(cli + ["sft", "--model", model_dir, "--data", demos, "--output_dir", str(tmp_path / "sft"),
                                "--num_epochs", "1", "--progress", "false"], capture_output=True, text=True, env=env)
    assert sft.returncode == 0, sft.stderr
    rm = subprocess.run(cli + ["rm", "--model", str(tmp_path / "sft"), "--data", prefs, "--output_dir",
                               str(tmp_path / "rm"), "--num_epochs", "1", "--progress", "false"],
                        capture_output=True, text=True, env=env)
    assert rm.returncode == 0, rm.stderr
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "sft") is not None
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").config.num_labels == 1
    bad = subprocess.run(cli + ["sft", "--model", model_dir, "--data", demos, "--learning_rat", "1"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "did you mean '--learning_rate'" in bad.stderr


def test_cli_reports_bad_data_with_file_line_and_field(tmp_path):
    model_dir = save_tiny_model(tmp_path / "m")
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a", "completion": "b."}\n{"prompt": "a", "completon": "b."}\n')
    result = subprocess.run([sys.executable, "-m", "rlhfkit.cli", "sft", "--model", model_dir, "--data", str(data),
                             "--output_dir", str(tmp_path / "o")], capture_output=True, text=True,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert "bad.jsonl:2" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("yaml_text,error", [("learning_rat: 1\n", "did you mean 'learning_rate'"),
                                              ("num_epochs: many\n", "expected a number")])
def test_config_file_errors_name_the_key(tmp_path, yaml_text, error):
    from rlhfkit.config import ConfigError, from_dict, load_yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=error):
        from_dict(SFTConfig, load_yaml(path), where=str(path))


def test_metrics_reach_tensorboard_through_accelerate_trackers(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model_dir = save_tiny_model(tmp_path / "m")
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Say a.", "completion": "a."}] * 16)
    out = train_sft(SFTConfig(model=model_dir, data=data, output_dir=str(tmp_path / "o"), report_to=["tensorboard"],
                              log_every=1, progress=False, eval_fraction=0))
    events = sorted(out.rglob("events.out.tfevents*"))
    assert events, "no TensorBoard event file written"
    scalars = set()
    for e in events:
        acc = EventAccumulator(str(e))
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
    assert "loss/train" in scalars


@pytest.mark.parametrize("stage", ["sft", "rm"])
def test_evaluations_between_logging_steps_are_logged(tmp_path, stage):
    """eval_every need not divide log_every: every evaluation reaches metrics.jsonl."""
    model_dir = save_tiny_model(tmp_path / "base", hidden=32)
    if stage == "sft":
        train, held, _ = _pairs_data(tmp_path)
        out = train_sft(SFTConfig(model=model_dir, data=train, eval_data=held, output_dir=str(tmp_path / stage),
                                  num_epochs=1, per_device_batch_size=8, eval_every=3, log_every=10,
                                  progress=False))
        key = "loss/val"
    else:
        out = train_reward_model(RewardConfig(model=model_dir, data=_marker_preferences(tmp_path),
                                              output_dir=str(tmp_path / stage), num_epochs=1,
                                              per_device_batch_size=8, eval_fraction=0.25, eval_every=3,
                                              log_every=10, progress=False, normalize_on="none"))
        key = "val/accuracy"
    rows = read_metrics(out / "metrics.jsonl")
    last = max(r["step"] for r in rows)
    evaluated = [r["step"] for r in rows if key in r and not r.get("final")]
    assert evaluated == list(range(3, last + 1, 3))
    assert all(r["step"] % 10 == 0 or r["step"] % 3 == 0 or r["step"] == last for r in rows)


def test_mean_logprob_reward_model_learns_is_normalised_and_stays_a_plain_causal_lm(tmp_path):
    from rlhfkit.config import ConfigError
    from rlhfkit.models.forward import reward_scores
    from rlhfkit.models.loading import load_reward_model

    model_dir = save_tiny_model(tmp_path / "base", hidden=64)
    data = _marker_preferences(tmp_path)
    cfg = RewardConfig(model=model_dir, data=data, output_dir=str(tmp_path / "rm"), num_epochs=6,
                       learning_rate=2e-3, per_device_batch_size=16, eval_fraction=0.25, log_every=5,
                       progress=False, reward_form="mean_logprob", reward_scale=2.0)
    out = train_reward_model(cfg)
    final = [r for r in read_metrics(out / "metrics.jsonl") if r.get("final")][-1]
    assert final["val/accuracy"] > 0.9
    plain = AutoModelForCausalLM.from_pretrained(out)  # the LM head is kept: a plain causal LM
    assert plain.config.rlhfkit_reward_form == "mean_logprob" and plain.config.rlhfkit_reward_scale == 2.0
    tok = AutoTokenizer.from_pretrained(out)
    model = load_reward_model(str(out), tok).eval()
    assert type(model) is type(plain)
    rows = [json.loads(line) for line in open(data)]
    seqs, targets = [], []
    for r in rows:
        for k in ("chosen", "rejected"):
            p = tok(r["prompt"], add_special_tokens=False)["input_ids"]
            y = tok(r[k], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            seqs.append(p + y)
            targets.append([0] * len(p) + [1] * len(y))
    from rlhfkit.data.collate import pad_sequences

    ids, mask = pad_sequences(seqs, tok.pad_token_id, side="right")
    target, _ = pad_sequences(targets, 0, side="right")
    with torch.no_grad():
        raw = reward_scores(model, ids, mask, target)
    normalised = (raw - model.config.rlhfkit_reward_mean) / model.config.rlhfkit_reward_std
    assert abs(float(normalised.mean())) < 0.05 and abs(float(normalised.std()) - 1) < 0.05
    assert float((normalised[0::2] > normalised[1::2]).float().mean()) > 0.9  # chosen above rejected
    # a sequence classifier has no LM head to score with; an unknown form is named
    head_rm = tmp_path / "head_rm"
    AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1).save_pretrained(head_rm)
    tok.save_pretrained(head_rm)
    with pytest.raises(ConfigError, match="sequence classifier"):
        train_reward_model(dataclasses.replace(cfg, model=str(head_rm), output_dir=str(tmp_path / "x")))
    with pytest.raises(ConfigError, match="reward_form must be one of head, mean_logprob"):
        train_reward_model(dataclasses.replace(cfg, reward_form="logits", output_dir=str(tmp_path / "y")))


def test_every_command_prints_its_help():
    """argparse %-formats help texts: a literal % in an option's help (the world's
    run has several) once made `rlhfkit run --help` raise instead of printing."""
    from rlhfkit.cli import build_parser

    from dataclasses import dataclass

    from rlhfkit.config import ConfigArgumentParser, add_config_arguments, option

    _, parsers = build_parser()
    for path, parser in parsers.items():
        text = parser.format_help()
        assert text.startswith(f"usage: rlhfkit {' '.join(path)} "), path
        assert "--config" in text, path

    @dataclass
    class WithPercent:
        share: float = option(0.5, "share of prompts, 50% by default")

    parser = ConfigArgumentParser(prog="x")
    add_config_arguments(parser, WithPercent)
    assert "50% by default" in parser.format_help()
