"""Reliability: kill -9 a real training subprocess mid-stage (at more than one
point), re-run the same command, and get the weights of an uninterrupted run bit
for bit; damaged checkpoints are detected and skipped; non-finite steps are
skipped and a diverging run stops with its checkpoint intact."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.testing import save_tiny_model
from rlhfkit.trainers.checkpoint import CheckpointManager
from rlhfkit.trainers.errors import DivergenceError

from conftest import read_metrics, write_jsonl

ENV = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}


def _checkpoint_steps(out: Path) -> list[int]:
    root = out / "checkpoints"
    return sorted(int(p.name.split("-")[1]) for p in root.glob("step-*")) if root.exists() else []


def _kill_after_checkpoint(cmd, out: Path, at_least: int, timeout=120) -> None:
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if any(s >= at_least for s in _checkpoint_steps(out)):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; make it longer"


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs by {(a[k] - b[k]).abs().max()}"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    return root, save_tiny_model(root / "base")


def _straight_then_killed_twice(cmd, tmp_path, first: int, second: int):
    """Run `cmd(out)` uninterrupted, and again killed (-9) after checkpoints `first`
    and `second`, resumed each time; the final weights must match bit for bit.
    Returns the killed run's directory."""
    subprocess.run(cmd(tmp_path / "straight"), env=ENV, check=True, capture_output=True)
    killed = tmp_path / "killed"
    _kill_after_checkpoint(cmd(killed), killed, first)
    _kill_after_checkpoint(cmd(killed), killed, second)
    subprocess.run(cmd(killed), env=ENV, check=True, capture_output=True)
    _assert_same(_weights(tmp_path / "straight"), _weights(killed))
    return killed


@pytest.mark.kill
def test_sft_resumes_bit_for_bit_after_kill_9(base, tmp_path):
    root, model = base
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"Say {w}.", "completion": f"{w} {w}."}
                                              for w in ["cat", "dog", "owl", "fig", "red", "yak"] * 8])

    def cmd(out):
        return [sys.executable, "-m", "rlhfkit.cli", "sft", "--model", model, "--data", data, "--output_dir", str(out),
                "--num_epochs", "12", "--per_device_batch_size", "4", "--learning_rate", "1e-3", "--checkpoint_every",
                "5", "--keep_checkpoints", "2", "--progress", "false", "--eval_fraction", "0", "--log_every", "1"]

    killed = _straight_then_killed_twice(cmd, tmp_path, 10, 60)
    steps = [r["step"] for r in read_metrics(killed / "metrics.jsonl") if "loss/train" in r]
    assert steps == sorted(set(steps)), "a resumed run logs each step once"
    assert len(_checkpoint_steps(killed)) <= 2, "old checkpoints are rotated away"


@pytest.mark.kill
def test_ppo_resumes_bit_for_bit_after_kill_9(base, tmp_path):
    root, model = base
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Say {w}."} for w in ["cat", "dog", "owl", "fig"] * 4])
    reward = tmp_path / "reward.py"
    reward.write_text(textwrap.dedent("""
        def ends(prompts, responses, terminated):
            return [1.0 if t else -len(r) / 50 for r, t in zip(responses, terminated)]
    """))

    def cmd(out):
        return [sys.executable, "-m", "rlhfkit.cli", "ppo", "--model", model, "--prompts", prompts, "--output_dir",
                str(out), "--reward_functions", f"{reward}:ends", "--total_episodes", "480", "--rollout_batch_size",
                "16", "--per_device_train_batch_size", "8", "--num_minibatches", "2", "--response_length", "8",
                "--learning_rate", "1e-3", "--checkpoint_every", "4", "--progress", "false", "--log_every", "1"]

    killed = _straight_then_killed_twice(cmd, tmp_path, 4, 16)
    _assert_same(load_file(str(tmp_path / "straight" / "value_model" / "model.safetensors")),
                 load_file(str(killed / "value_model" / "model.safetensors")))
    a = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    b = read_metrics(killed / "metrics.jsonl")
    assert [r["objective/scores"] for r in a] == [r["objective/scores"] for r in b]


def test_damaged_checkpoint_is_reported_and_skipped(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    for step in (1, 2):
        manager.save(step, {"model": {"w": torch.full((4,), float(step))}}, {"step": step})
    newest = tmp_path / "checkpoints" / "step-00000002" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:-3])  # truncated by a crash or a full disk
    messages = []
    good = manager.latest(log=messages.append)
    assert good.name == "step-00000001"
    assert "step-00000002" in messages[0] and "model.safetensors" in messages[0]
    tensors, state = CheckpointManager.load(good)
    assert state["step"] == 1 and torch.equal(tensors["model"]["w"], torch.ones(4))


def test_interrupted_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save(1, {"model": {"w": torch.ones(2)}}, {"step": 1})

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    from rlhfkit.trainers.errors import CheckpointError

    with pytest.raises(CheckpointError, match="disk full"):
        manager.save(2, {"model": {"w": torch.zeros(2)}}, {"step": 2})
    assert manager.latest().name == "step-00000001"
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_nonfinite_steps_are_skipped_then_the_run_stops(base, tmp_path, monkeypatch):
    import rlhfkit.trainers.sft as sft

    root, model = base
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Say a.", "completion": "a."}] * 64)
    calls = {"n": 0}
    real = sft.masked_nll_loss

    def flaky(*args, **kwargs):
        calls["n"] += 1
        loss, metrics = real(*args, **kwargs)
        if calls["n"] in (3,) or calls["n"] >= 9:  # one transient fault, then a lasting one
            loss = loss * float("nan")
        return loss, metrics

    monkeypatch.setattr(sft, "masked_nll_loss", flaky)
    cfg = sft.SFTConfig(model=model, data=data, output_dir=str(tmp_path / "o"), per_device_batch_size=4,
                        num_epochs=1, checkpoint_every=4, eval_fraction=0, progress=False, log_every=1,
                        max_nonfinite_steps=3)
    with pytest.raises(DivergenceError, match="non-finite loss"):
        sft.train_sft(cfg)
    rows = read_metrics(tmp_path / "o" / "metrics.jsonl")
    assert any(r.get("skipped_nonfinite") == 1 for r in rows)
    assert _checkpoint_steps(tmp_path / "o") == [4, 8]
    assert CheckpointManager(tmp_path / "o").latest() is not None


@pytest.mark.kill
def test_reward_model_resumes_bit_for_bit_after_kill_9(base, tmp_path):
    root, model = base
    rows = [{"prompt": f"Rate {w} {i}.", "responses": [f"{w} gold.", f"{w}.", "no."], "ranking": [0, 1, 2]}
            for i, w in enumerate(["cat", "dog", "owl", "fig"] * 10)]
    data = write_jsonl(tmp_path / "r.jsonl", rows)

    def cmd(out):
        return [sys.executable, "-m", "rlhfkit.cli", "rm", "--model", model, "--data", data, "--output_dir", str(out),
                "--num_epochs", "6", "--per_device_batch_size", "2", "--learning_rate", "1e-3", "--checkpoint_every",
                "10", "--progress", "false", "--eval_fraction", "0.1", "--log_every", "1"]

    _straight_then_killed_twice(cmd, tmp_path, 20, 70)


def test_dpo_skips_a_nonfinite_step_and_stops_on_a_lasting_one(base, tmp_path, monkeypatch):
    import rlhfkit.trainers.dpo as dpo

    root, model = base
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Say {w}.", "chosen": f"{w}.", "rejected": "no."}
                                              for w in ["cat", "dog", "owl", "fig"] * 8])
    calls = {"n": 0}
    real = dpo.preference_loss

    def flaky(*args, **kwargs):
        calls["n"] += 1
        loss, metrics = real(*args, **kwargs)
        if calls["n"] == 2 or calls["n"] >= 6:
            loss = loss * float("nan")
            metrics = {**metrics, "loss/dpo": loss.detach()}
        return loss, metrics

    monkeypatch.setattr(dpo, "preference_loss", flaky)
    cfg = dpo.DPOConfig(model=model, data=data, output_dir=str(tmp_path / "o"), per_device_batch_size=4,
                        num_epochs=1, eval_fraction=0, progress=False, log_every=1, max_nonfinite_steps=3,
                        learning_rate=1e-3)
    with pytest.raises(DivergenceError, match="dpo diverged.*non-finite loss"):
        dpo.train_dpo(cfg)
    rows = read_metrics(tmp_path / "o" / "metrics.jsonl")
    assert any(r.get("skipped_nonfinite") == 1 for r in rows)
