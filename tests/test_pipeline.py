"""`rlhfkit pipeline`: SFT -> RM -> PPO in one run directory, each stage feeding the
next; re-running skips finished stages. And PPO-ptx's pretraining term."""
import dataclasses
import json
import subprocess
import sys

import pytest

from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlhfkit.testing import save_tiny_model
from rlhfkit.trainers.ppo.config import PPOConfig
from rlhfkit.trainers.ppo.trainer import train_ppo

from conftest import read_metrics, write_jsonl

WORDS = ["cat", "dog", "owl", "fig", "red", "yak"]
ENV = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_pipeline_runs_three_stages_in_one_directory_and_resumes(tmp_path):
    model = save_tiny_model(tmp_path / "base")
    demos = write_jsonl(tmp_path / "demos.jsonl", [{"prompt": [{"role": "user", "content": f"Say {w}."}],
                                                    "completion": f"{w}."} for w in WORDS * 4])
    prefs = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": [{"role": "user", "content": f"Say {w}."}],
                                                    "responses": [f"{w}.", f"{w} {w} {w}.", "no."],
                                                    "ranking": [0, 1, 2]} for w in WORDS * 2])
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": [{"role": "user", "content": f"Say {w}."}]}
                                                       for w in WORDS])
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlhfkit.cli", "pipeline", "--model", model, "--demonstrations", demos,
           "--comparisons", prefs, "--prompts", prompts, "--out", str(out), "--sft.num_epochs", "1",
           "--sft.progress", "false", "--rm.progress", "false", "--ppo.progress", "false",
           "--ppo.total_episodes", "12", "--ppo.rollout_batch_size", "6", "--ppo.response_length", "6",
           "--ppo.kl_coef", "0.1"]
    first = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert AutoModelForCausalLM.from_pretrained(out / "sft") is not None
    assert AutoModelForSequenceClassification.from_pretrained(out / "rm").config.num_labels == 1
    assert AutoModelForCausalLM.from_pretrained(out / "ppo") is not None
    ppo_cfg = (out / "ppo" / "config.yaml").read_text()
    assert f"model: {out / 'sft'}" in ppo_cfg and f"reward_model: {out / 'rm'}" in ppo_cfg
    assert read_metrics(out / "ppo" / "metrics.jsonl")[-1]["objective/beta"] == 0.1
    mtime = (out / "ppo" / "model.safetensors").stat().st_mtime_ns
    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert again.returncode == 0 and "already done" in again.stdout
    assert (out / "ppo" / "model.safetensors").stat().st_mtime_ns == mtime
    assert set(json.loads((out / "stages.json").read_text())["seconds"]) == {"sft", "rm", "ppo"}


def test_ppo_ptx_adds_the_pretraining_loss_and_keeps_its_likelihood(tmp_path):
    model = save_tiny_model(tmp_path / "base")
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Say {w}."} for w in WORDS * 2])
    texts = write_jsonl(tmp_path / "web.jsonl", [{"text": f"the {w} sat on the mat."} for w in WORDS * 4])

    def run(name, coef):
        cfg = PPOConfig(model=model, prompts=prompts, output_dir=str(tmp_path / name), total_episodes=16 * 8,
                        rollout_batch_size=16, per_device_train_batch_size=16, response_length=6, learning_rate=3e-3,
                        progress=False, log_every=1, kl_coef=0.0, ptx_data=texts, ptx_coef=coef, ptx_batch_size=8)
        train_ppo(cfg, reward_fns=[lambda prompts, responses: [float(len(r)) / 20 for r in responses]])
        return read_metrics(tmp_path / name / "metrics.jsonl")

    with_ptx = run("ptx", 1.0)
    assert all("loss/ptx" in r for r in with_ptx)
    assert with_ptx[-1]["loss/ptx"] < with_ptx[0]["loss/ptx"]  # the pretraining texts are being learned
    assert "loss/ptx" not in run("plain", 0.0)[-1]


def test_ptx_stream_position_survives_a_checkpoint(tmp_path):
    import torch

    from rlhfkit.models.loading import load_tokenizer
    from rlhfkit.trainers.ppo.ptx import PretrainingBatches

    model = save_tiny_model(tmp_path / "base")
    texts = write_jsonl(tmp_path / "web.jsonl", [{"text": f"the {w} number {i}."} for i, w in enumerate(WORDS * 3)])
    cfg = PPOConfig(model=model, prompts="unused", ptx_data=texts, ptx_batch_size=4)
    tok = load_tokenizer(model)
    first = PretrainingBatches(cfg, tok, "cpu")
    for _ in range(3):
        first.next_batch()
    state = first.state_dict()
    expected = [first.next_batch()["input_ids"] for _ in range(6)]  # crosses into a new pass
    resumed = PretrainingBatches(cfg, tok, "cpu")
    resumed.load_state_dict(state)
    assert all(torch.equal(a, resumed.next_batch()["input_ids"]) for a in expected)


def test_pipeline_algo_dpo_and_orpo(tmp_path):
    """--algo dpo: SFT then DPO from it on the comparisons; --algo orpo: one stage from
    the base model (no SFT); both raise the implicit-reward accuracy on their pairs."""
    from rlhfkit.config import ConfigError, from_dict
    from rlhfkit.pipeline import PipelineConfig, run_pipeline

    model = save_tiny_model(tmp_path / "base")
    demos = write_jsonl(tmp_path / "demos.jsonl", [{"prompt": [{"role": "user", "content": f"Say {w}."}],
                                                    "completion": f"{w}."} for w in WORDS * 4])
    prefs = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": [{"role": "user", "content": f"Say {w}."}],
                                                    "chosen": f"{w}.", "rejected": "no no no."} for w in WORDS * 4])
    for algo, lr in (("dpo", 3e-3), ("orpo", 3e-3)):
        cfg = from_dict(PipelineConfig, {"model": model, "demonstrations": demos, "comparisons": prefs,
                                         "output_dir": str(tmp_path / algo), "algo": algo,
                                         "sft": {"num_epochs": 1, "progress": False},
                                         "dpo": {"num_epochs": 4, "learning_rate": lr, "eval_fraction": 0.0,
                                                 "per_device_batch_size": 8, "progress": False, "log_every": 1}})
        out = run_pipeline(cfg)
        stages = set(json.loads((out / "stages.json").read_text())["seconds"])
        assert stages == ({"sft", "dpo"} if algo == "dpo" else {"orpo"})
        run_cfg = (out / algo / "config.yaml").read_text()
        assert f"model: {out / 'sft' if algo == 'dpo' else model}" in run_cfg
        assert f"loss: {'sigmoid' if algo == 'dpo' else 'orpo'}" in run_cfg
        rows = read_metrics(out / algo / "metrics.jsonl")
        acc = [r["rewards/accuracy"] for r in rows if "rewards/accuracy" in r]
        assert sum(acc[-3:]) / 3 > 0.9, acc
        assert AutoModelForCausalLM.from_pretrained(out / algo) is not None
    with pytest.raises(ConfigError, match="unknown method 'dpp'"):
        run_pipeline(PipelineConfig(model=model, comparisons=prefs, algo="dpp", output_dir=str(tmp_path / "x")))
    with pytest.raises(ValueError, match="needs --demonstrations"):
        run_pipeline(PipelineConfig(model=model, comparisons=prefs, algo="ipo", output_dir=str(tmp_path / "y")))


def test_a_finished_stage_rerun_with_other_options_is_kept_and_named(tmp_path):
    """Rerunning a finished stage never retrains it, but options that changed what it
    computes are named in the log (a user raising total_episodes on a finished run
    would otherwise read the old PPO as the new one); progress or thread count are not."""
    from rlhfkit.pipeline import run_stage

    calls, logs = [], []
    cfg = PPOConfig(total_episodes=2048, output_dir=str(tmp_path / "a"))
    assert run_stage("ppo", tmp_path, calls.append, cfg, log=logs.append) >= 0
    run_stage("ppo", tmp_path, calls.append, dataclasses.replace(cfg, progress=False, num_threads=1,
                                                                 output_dir=str(tmp_path / "b")), log=logs.append)
    run_stage("ppo", tmp_path, calls.append, dataclasses.replace(cfg, total_episodes=6144, kl_coef=0.1),
              log=logs.append)
    assert calls == [cfg]  # trained once
    assert logs[0] == f"[ppo] -> {tmp_path}" and logs[1].startswith("[ppo] done in ")  # the stage's time
    assert logs[2] == f"[ppo] already done: {tmp_path}"
    assert "total_episodes 2048 -> 6144" in logs[3] and "kl_coef 0.02 -> 0.1" in logs[3]
    assert f"delete {tmp_path} to train it" in logs[3]
