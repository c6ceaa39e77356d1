"""Kill -9 at named points (RLHFKIT_FAULT, rlhfkit.io.fault_point): during a
checkpoint save, then during the resumed run's rewrite of metrics.jsonl, then the
same command again: weights, metrics.jsonl and samples.jsonl equal an
uninterrupted run's, and nothing is left behind."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.trainers.ppo.config import PPOConfig
from rlhfkit.trainers.ppo.trainer import train_ppo
from rlhfkit.trainers.sft import SFTConfig, train_sft

from conftest import read_metrics, write_jsonl

pytestmark = pytest.mark.kill

ENV = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _options(model, prompts, reward, out) -> dict:
    return {"model": model, "prompts": prompts, "output_dir": str(out), "reward_functions": [f"{reward}:ends"],
            "total_episodes": 48, "rollout_batch_size": 8, "per_device_train_batch_size": 4, "num_minibatches": 2,
            "response_length": 6, "learning_rate": 1e-3, "checkpoint_every": 2, "progress": False, "log_every": 1,
            "num_samples_logged": 2, "num_threads": 1}


def _cli(options: dict, fault: str | None) -> int:
    argv = [sys.executable, "-m", "rlhfkit.cli", "ppo"]
    for k, v in options.items():
        argv += [f"--{k}", ",".join(v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else str(v)]
    env = {**ENV, **({"RLHFKIT_FAULT": fault} if fault else {})}
    return subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300).returncode


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("timing/")} for r in read_metrics(path)]


def test_ppo_killed_during_save_and_during_resume_rewrite_ends_identical(tiny_model_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Say {w}."} for w in ["cat", "dog", "owl", "fig"] * 2])
    reward = tmp_path / "reward.py"
    reward.write_text(textwrap.dedent("""
        def ends(prompts, responses, terminated):
            return [1.0 if t else -len(r) / 50 for r, t in zip(responses, terminated)]
    """))
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    threads = torch.get_num_threads()
    try:  # the uninterrupted run in this process (one thread, as the subprocesses)
        train_ppo(PPOConfig(**_options(tiny_model_dir, prompts, reward, straight)))
    finally:
        torch.set_num_threads(threads)
    options = _options(tiny_model_dir, prompts, reward, killed)

    assert _cli(options, "checkpoint.save:2") == -signal.SIGKILL  # inside the second save (step 4)
    assert list((killed / "checkpoints").glob(".tmp-step-*")), "the killed save left its temporary directory"
    assert len(read_metrics(killed / "metrics.jsonl")) == 4  # steps 1-4 logged; the checkpoint holds 2

    assert _cli(options, "resume.rewrite") == -signal.SIGKILL  # cutting metrics.jsonl back to step 2's rows
    assert not list((killed / "checkpoints").glob(".tmp-step-*")), "removed at start"
    assert list(killed.glob(".metrics.jsonl.tmp-*")) and len(read_metrics(killed / "metrics.jsonl")) == 4

    assert _cli(options, None) == 0
    for name in ("model.safetensors", "value_model/model.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(killed / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert _rows(killed / "metrics.jsonl") == _rows(straight / "metrics.jsonl")
    assert (killed / "samples.jsonl").read_text() == (straight / "samples.jsonl").read_text()
    assert len(read_metrics(killed / "samples.jsonl")) == 2 * 6
    leftovers = [p.name for p in killed.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]
    assert not leftovers and not (killed / ".lock").exists()


@pytest.mark.parametrize("fault", ["checkpoint.load"])
def test_sft_killed_while_loading_its_checkpoint_resumes_identically(tiny_model_dir, tmp_path, fault):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"Say {w}.", "completion": f"{w} {w}."}
                                              for w in ["cat", "dog", "owl", "fig", "red", "yak"] * 2])

    def options(out):
        return {"model": tiny_model_dir, "data": data, "output_dir": str(out), "per_device_batch_size": 4,
                "num_epochs": 3, "checkpoint_every": 3, "eval_fraction": 0, "progress": False, "log_every": 1,
                "learning_rate": 1e-3, "num_threads": 1}

    def cli(out, env_fault=None):
        argv = [sys.executable, "-m", "rlhfkit.cli", "sft"]
        for k, v in options(out).items():
            argv += [f"--{k}", str(v).lower() if isinstance(v, bool) else str(v)]
        env = {**ENV, **({"RLHFKIT_FAULT": env_fault} if env_fault else {})}
        return subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    threads = torch.get_num_threads()
    try:
        train_sft(SFTConfig(**options(straight)))
    finally:
        torch.set_num_threads(threads)
    assert cli(killed, "checkpoint.save:2").returncode == -signal.SIGKILL  # killed at step 6's save
    assert cli(killed, fault).returncode == -signal.SIGKILL  # and again while resuming from step 3
    done = cli(killed)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(killed / "metrics.jsonl") == _rows(straight / "metrics.jsonl")
    assert os.listdir(killed / "checkpoints") == os.listdir(straight / "checkpoints")
