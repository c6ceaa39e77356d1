"""TRL's option names do what they do in TRL: max_steps counts optimizer steps,
dataset_train_split / dataset_test_split pick a DatasetDict's splits, the LoRA options
reach the adapter (and save_adapter_only keeps it unmerged), chat_template reaches the
tokenizer of every trainer."""
import json

import pytest
from conftest import read_metrics, write_jsonl

from rlhfkit.cli import main
from rlhfkit.trainers.data_plan import run_plan, train_and_eval_records
from rlhfkit.trainers.dpo import DPOConfig, train_dpo
from rlhfkit.trainers.reward import RewardConfig, train_reward_model
from rlhfkit.trainers.sft import SFTConfig, train_sft

DEMOS = [{"prompt": f"Say {w}.", "completion": f"{w}."} for w in "abcdefgh"] * 2
PREFS = [{"prompt": f"Say {w}.", "chosen": f"{w}.", "rejected": "no."} for w in "abcd"] * 2
TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] "


def test_max_steps_is_optimizer_steps_over_as_many_passes_as_needed(tiny_model_dir, tmp_path):
    cfg = SFTConfig(per_device_batch_size=4, gradient_accumulation_steps=2, max_steps=5)
    plan = run_plan(cfg, 16)  # 2 optimizer steps per pass over 16 examples
    assert len(plan) == 5 and all(len(step) == 2 for step in plan)
    assert len(run_plan(SFTConfig(per_device_batch_size=4, gradient_accumulation_steps=2), 16)) == 2  # num_epochs 1
    data = write_jsonl(tmp_path / "d.jsonl", DEMOS)
    out = train_sft(SFTConfig(model=str(tiny_model_dir), data=data, output_dir=str(tmp_path / "o"), max_steps=7,
                              per_device_batch_size=8, eval_fraction=0, log_every=1, progress=False))
    assert [row["step"] for row in read_metrics(out / "metrics.jsonl")] == list(range(1, 8))


def test_dataset_splits_of_a_datasetdict(tiny_model_dir, tmp_path):
    datasets = pytest.importorskip("datasets")
    train = [dict(r, kind="train") for r in DEMOS]
    test = [{"prompt": "Say z.", "completion": "z.", "kind": "test"}] * 3
    path = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(train),
                          "test": datasets.Dataset.from_list(test)}).save_to_disk(str(path))
    from rlhfkit.data.loading import load_sft

    cfg = SFTConfig(data=str(path), dataset_test_split="test")
    got_train, got_eval = train_and_eval_records(load_sft, cfg, cfg.columns())
    assert len(got_train) == 16 and [r.completion for r in got_eval] == ["z."] * 3
    cfg = SFTConfig(data=str(path), dataset_train_split="test", eval_fraction=0)
    got_train, got_eval = train_and_eval_records(load_sft, cfg, cfg.columns())
    assert [r.completion for r in got_train] == ["z."] * 3 and got_eval == []
    out = train_sft(SFTConfig(model=str(tiny_model_dir), data=str(path), dataset_test_split="test",
                              output_dir=str(tmp_path / "o"), progress=False, per_device_batch_size=8))
    assert "loss/val" in read_metrics(out / "metrics.jsonl")[-1]


def test_lora_options_reach_the_adapter_and_save_adapter_only_keeps_it(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", DEMOS)
    out = train_sft(SFTConfig(model=str(tiny_model_dir), data=data, output_dir=str(tmp_path / "adapter"),
                              use_lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.1,
                              lora_target_modules=["q_proj", "v_proj"], save_adapter_only=True, progress=False,
                              eval_fraction=0, per_device_batch_size=8, learning_rate=1e-2))
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (4, 8, 0.1)
    assert set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(adapter["base_model_name_or_path"])
    assert PeftModel.from_pretrained(base, str(out)).active_adapter == "default"  # loads as PEFT saves it
    # the next stage starts from the adapter directory: its base with the adapter merged
    import torch

    from rlhfkit.models.loading import load_causal_lm, load_scalar_model, load_tokenizer

    tokenizer = load_tokenizer(str(out))
    merged = load_causal_lm(str(out), tokenizer)
    q = merged.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(q, base.model.layers[0].self_attn.q_proj.weight)  # the adapter is in
    rm = load_scalar_model(str(out), tokenizer)
    assert torch.allclose(rm.model.layers[0].self_attn.q_proj.weight, q)
    prefs = write_jsonl(tmp_path / "p.jsonl", PREFS)
    assert train_reward_model(RewardConfig(model=str(out), data=prefs, output_dir=str(tmp_path / "rm"),
                                           use_lora=True, lora_alpha=32, progress=False, eval_fraction=0,
                                           per_device_batch_size=4)).joinpath("model.safetensors").exists()


def test_save_adapter_only_needs_lora():
    from rlhfkit.config import ConfigError

    with pytest.raises(ConfigError, match="save_adapter_only needs use_lora"):
        SFTConfig(save_adapter_only=True)
    with pytest.raises(ConfigError, match="a reward model is saved whole"):
        RewardConfig(use_lora=True, save_adapter_only=True)


def test_chat_template_reaches_every_trainers_tokenizer(tiny_model_dir, tmp_path):
    prefs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": [{"role": "user", "content": "Say a."}], "chosen": "a.",
                                                "rejected": "b."}] * 8)
    out = train_dpo(DPOConfig(model=str(tiny_model_dir), data=prefs, output_dir=str(tmp_path / "dpo"),
                              chat_template=TEMPLATE, progress=False, eval_fraction=0, per_device_batch_size=4))
    assert (out / "chat_template.jinja").read_text() == TEMPLATE
    rm = train_reward_model(RewardConfig(model=str(tiny_model_dir), data=prefs, output_dir=str(tmp_path / "rm"),
                                         chat_template=TEMPLATE, progress=False, eval_fraction=0,
                                         per_device_batch_size=4))
    assert (rm / "chat_template.jinja").read_text() == TEMPLATE


def test_pipeline_algo_grpo_says_how_to_run_it(capsys):
    with pytest.raises(SystemExit) as info:
        main(["pipeline", "--algo", "grpo", "--model", "m"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "--algo ppo --ppo.advantage_estimator grpo --ppo.samples_per_prompt" in err and "orpo" not in err
