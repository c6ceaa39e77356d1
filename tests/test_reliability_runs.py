"""What a run does with its output directory and its size: a rerun into a finished
stage's directory compares the finished model's settings as a checkpoint's (the same:
nothing to do; others: refused by name unless --resume force), a full disk at any save
is one line naming the directory and the bytes with nothing half-written left, and the
step plan costs what the run takes, not what num_epochs says, with the run's length
printed at the start."""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from rlhfkit.cli import main
from rlhfkit.trainers.checkpoint import FINISHED

from conftest import read_metrics, write_jsonl

WORDS = ["cat", "dog", "owl", "fig", "red", "yak"]


@pytest.fixture
def files(tmp_path):
    sft = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": f"Say {w}.", "completion": f"{w} {w}."} for w in WORDS])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"Say {w}.", "chosen": f"{w} {w}.", "rejected": "no."}
                                                   for w in WORDS])
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say {w}."} for w in WORDS[:4]])
    reward = tmp_path / "reward.py"
    reward.write_text("def f(prompts, responses):\n    return [float(len(r)) for r in responses]\n")
    return {"sft": sft, "pairs": pairs, "prompts": prompts, "reward": f"{reward}:f"}


def _argv(stage, model, files, out):
    common = ["--model", model, "--output_dir", str(out), "--progress", "false", "--learning_rate", "0.001"]
    if stage == "ppo":
        return ["ppo", *common, "--prompts", files["prompts"], "--reward_model", "", "--reward_functions",
                files["reward"], "--total_episodes", "8", "--rollout_batch_size", "4", "--generation_batch_size", "4",
                "--per_device_train_batch_size", "4", "--response_length", "4"]
    data = files["sft"] if stage == "sft" else files["pairs"]
    return [stage, *common, "--data", data, "--eval_fraction", "0", "--per_device_batch_size", "3"]


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo", "ppo"])
def test_a_rerun_into_a_finished_stage_compares_its_settings(tmp_path, tiny_model_dir, files, stage, capsys):
    out = tmp_path / "out"
    argv = _argv(stage, tiny_model_dir, files, out)
    assert main(argv) == 0
    assert json.loads((out / FINISHED).read_text())["options"]["learning_rate"] == 0.001
    weights = (out / "model.safetensors").read_bytes()
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    rows = read_metrics(out / "metrics.jsonl")
    capsys.readouterr()

    assert main(argv + ["--progress", "true"]) == 0  # the same settings (progress changes no result): nothing to do
    assert "already holds the model these settings train; nothing to do" in capsys.readouterr().out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp and read_metrics(out / "metrics.jsonl") == rows

    assert main(argv + ["--learning_rate", "0.005"]) == 1  # other settings: refused by name, the model kept
    err = capsys.readouterr().err
    assert "holds a finished model made with other settings: learning_rate 0.001 -> 0.005" in err
    assert "--resume force" in err and len(err.strip().splitlines()) == 1
    assert (out / "model.safetensors").read_bytes() == weights
    assert "learning_rate: 0.001" in (out / "config.yaml").read_text()

    assert main(argv + ["--learning_rate", "0.005", "--resume", "force"]) == 0  # trains again and replaces it
    assert (out / "model.safetensors").read_bytes() != weights
    assert json.loads((out / FINISHED).read_text())["options"]["learning_rate"] == 0.005
    assert "learning_rate: 0.005" in (out / "config.yaml").read_text()


def test_changed_data_under_a_finished_model_is_named(tmp_path, tiny_model_dir, files, capsys):
    argv = _argv("sft", tiny_model_dir, files, tmp_path / "out")
    assert main(argv) == 0
    with open(files["sft"], "a") as f:
        f.write(json.dumps({"prompt": "Say elk.", "completion": "elk elk."}) + "\n")
    assert main(argv) == 1
    assert "data file" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a full disk

_FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from rlhfkit.cli import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.slow
@pytest.mark.parametrize("save,limit", [("checkpoint_weights", 50_000), ("checkpoint_state", 200_000),
                                        ("final", 50_000)])
def test_a_full_disk_at_any_save_is_one_line_and_leaves_nothing_half_written(tmp_path, tiny_model_dir, files, save,
                                                                             limit):
    """A file-size limit (RLIMIT_FSIZE) makes every write past it fail as a full disk does,
    without root or a mount: the model's 123 kB of weights (safetensors) do not fit under
    50 kB, the optimizer's 250 kB (torch.save) not under 200 kB."""
    out = tmp_path / "out"
    argv = _argv("sft", tiny_model_dir, files, out) + (["--checkpoint_every", "1"] if save != "final" else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    run = subprocess.run([sys.executable, "-c", _FULL_DISK, str(limit), *argv], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 1, run.stderr
    err = run.stderr.strip()
    where = out if save == "final" else out / "checkpoints"
    assert f"disk full: writing {where} needs about" in err and "bytes;" in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name]
    assert not leftovers and not (out / "model.safetensors").exists() and not (out / FINISHED).exists()
    assert not list(out.glob("checkpoints/step-*"))


def test_out_of_space_reads_each_writers_wording():
    from rlhfkit.io import out_of_space

    assert out_of_space(OSError(28, "No space left on device"))
    assert out_of_space(RuntimeError("unexpected pos 64 vs 0: No space left on device"))
    assert out_of_space(Exception("Error while serializing: I/O error: File too large (os error 27)"))
    wrapped = RuntimeError("writer failed")
    wrapped.__cause__ = OSError(122, "Disk quota exceeded")
    assert out_of_space(wrapped) and not out_of_space(ValueError("bad value"))


# ----------------------------------------------------------------------------- sizes

def test_the_plan_costs_what_runs_not_what_num_epochs_says():
    from rlhfkit.trainers.data_plan import step_plan

    start = time.perf_counter()
    plan = step_plan(24, 4, 1, 1e6, seed=0)  # a million epochs: planned in no time, drawn as the steps come
    assert len(plan) == 6_000_000 and sorted(i for m in plan[:6] for b in m for i in b) == list(range(24))
    assert sorted(i for m in plan[-6:] for b in m for i in b) == list(range(24))
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("epochs", ["1e300", "1e308", "1e12"])
def test_absurd_num_epochs_is_refused_at_once(tmp_path, tiny_model_dir, files, epochs, capsys):
    start = time.perf_counter()
    argv = _argv("sft", tiny_model_dir, files, tmp_path / "out") + ["--num_epochs", epochs]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"num_epochs {float(epochs):g} over 6 examples makes" in err and "lower --num_epochs" in err, err
    assert len(err.strip().splitlines()) == 1 and time.perf_counter() - start < 60


@pytest.mark.slow
def test_the_lazy_plan_is_the_plan_drawn_up_front(tmp_path):
    """The same batches as the whole-run plan it replaces (a resume after it reads the same
    order): that plan, written out here as it was."""
    import math
    import random

    from rlhfkit.trainers.data_plan import GROUP_WINDOW, step_plan

    def drawn_up_front(n, mb, acc, epochs, seed, lengths=None):
        micro, n_total, epoch = [], int(math.ceil(epochs * n)), 0
        while sum(len(m) for m in micro) < n_total:
            order = list(range(n))
            random.Random(seed * 1_000_003 + epoch).shuffle(order)
            order = order[: n_total - sum(len(m) for m in micro)]
            if lengths is None:
                micro.extend(order[i:i + mb] for i in range(0, len(order), mb))
            else:
                batches = []
                for w in range(0, len(order), GROUP_WINDOW * mb):
                    chunk = sorted(order[w:w + GROUP_WINDOW * mb], key=lambda i: -lengths[i])
                    batches.extend(chunk[i:i + mb] for i in range(0, len(chunk), mb))
                random.Random(seed * 1_000_003 + epoch + 7_777).shuffle(batches)
                micro.extend(batches)
            epoch += 1
        return [micro[i:i + acc] for i in range(0, len(micro), acc)]

    rng = random.Random(1)
    for trial in range(200):
        n, mb, acc = rng.randint(1, 400), rng.randint(1, 12), rng.randint(1, 4)
        epochs = rng.choice([1e-9, 0.3, 1.0, 1.5, 2.0, 3.7])
        lengths = [rng.randint(1, 50) for _ in range(n)] if trial % 2 else None
        plan = step_plan(n, mb, acc, epochs, trial, lengths)
        assert plan == drawn_up_front(n, mb, acc, epochs, trial, lengths), (n, mb, acc, epochs)


@pytest.mark.slow
def test_each_stage_prints_its_length_at_the_start(tmp_path, tiny_model_dir, files, capsys):
    assert main(_argv("sft", tiny_model_dir, files, tmp_path / "sft") + ["--num_epochs", "2"]) == 0
    assert "plan: 4 optimizer steps of up to 3 examples (2 epoch(s) over 6 examples)" in capsys.readouterr().out
    assert main(_argv("ppo", tiny_model_dir, files, tmp_path / "ppo")) == 0
    assert "plan: 2 PPO steps of 4 episodes (8 episodes, 8 optimizer steps)" in capsys.readouterr().out


def test_absurd_total_episodes_is_refused_with_the_count(tmp_path, tiny_model_dir, files, capsys):
    argv = _argv("ppo", tiny_model_dir, files, tmp_path / "out")
    argv[argv.index("--total_episodes") + 1] = "1e18"
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "total_episodes 1e+18 makes 2.5e+17 PPO steps of 4 episodes" in err and "lower --total_episodes" in err


def test_a_full_disk_outside_the_saves_is_one_line_and_other_os_errors_keep_their_traceback(tmp_path, monkeypatch,
                                                                                          capsys):
    import errno

    import rlhfkit.trainers.sft as sft

    def write_fails(number, text):
        def train(cfg):
            raise OSError(number, text, str(tmp_path / "metrics.jsonl"))
        return train

    monkeypatch.setattr(sft, "train_sft", write_fails(errno.ENOSPC, "No space left on device"))
    assert main(["sft", "--output_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"disk full: could not write {tmp_path / 'metrics.jsonl'} (No space left on device)" in err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.setattr(sft, "train_sft", write_fails(errno.EIO, "Input/output error"))
    with pytest.raises(OSError, match="Input/output error"):
        main(["sft", "--output_dir", str(tmp_path)])


def test_a_finished_marker_without_its_model_trains_again(tmp_path, tiny_model_dir, files, capsys):
    out = tmp_path / "out"
    argv = _argv("sft", tiny_model_dir, files, out)
    assert main(argv) == 0
    (out / "model.safetensors").unlink()  # the model moved away: the marker alone does not make the stage done
    assert main(argv) == 0
    assert "is there but the model is not; the stage runs again" in capsys.readouterr().out
    assert (out / "model.safetensors").exists() and (out / FINISHED).exists()
