"""Two processes (accelerate launch, gloo on the CPU) give the one-process result: every
stage with the same global batch ends with the same weights and logs the same losses;
the data is sharded without overlap; only the main process writes; a two-process run
resumes from its checkpoints to the weights it would have reached (docs/scale-out.md).

One launch runs every two-process job (one torch import for all); the one-process jobs
run in this process through the same driver (tests/dist_driver.py)."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import read_metrics, write_jsonl
from rlhfkit.testing import save_tiny_model

HERE = Path(__file__).parent
WORDS = "cat dog cow pig hen fox owl bee ant rat red blue green pink gray gold lime fig pear plum".split()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(jobs, tmp: Path, processes: int = 2, extra_args=(), timeout: int = 240) -> subprocess.CompletedProcess:
    """Run the jobs under `accelerate launch` with `processes` CPU processes."""
    path = tmp / f"jobs-{os.getpid()}-{len(list(tmp.glob('jobs-*')))}.json"
    path.write_text(json.dumps(jobs))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *extra_args, "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(HERE / "dist_driver.py"), str(path)]
    if "--config_file" not in extra_args:
        cmd.insert(3, "--multi_gpu")  # torchrun's launcher; on a machine without CUDA the trainers join gloo
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def run_here(jobs) -> None:
    from dist_driver import run_job

    n = torch.get_num_threads()
    try:
        for job in jobs:
            run_job(job)
    finally:
        torch.set_num_threads(n)


def weights(out) -> dict[str, torch.Tensor]:
    out = Path(out)
    tensors = load_file(str(out / "model.safetensors"))
    if (out / "value_head.safetensors").exists():
        tensors.update({f"value_head.{k}": v for k, v in load_file(str(out / "value_head.safetensors")).items()})
    return tensors


def assert_same_weights(a, b, atol=2e-5):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    assert worst <= atol, f"largest weight difference {worst:.3g}"


def _common(out, **kw):
    return dict(output_dir=str(out), seed=3, learning_rate=2e-3, lr_scheduler="constant", log_every=1,
                eval_fraction=0.0, checkpoint_minutes=0.0, max_length=64, **kw)


def _ppo(out, model, prompts, **kw):
    base = dict(output_dir=str(out), model=model, prompts=prompts, seed=3, learning_rate=3e-3, log_every=1,
                checkpoint_minutes=0.0, rollout_batch_size=8, per_device_train_batch_size=8,
                generation_batch_size=8, response_length=6, ppo_epochs=2, total_episodes=24, kl_coef=0.05,
                missing_eos_penalty=0.0, num_samples_logged=2)
    return {**base, **kw}


def jobs_for(root: Path, model: str, data: dict, processes: int) -> list[dict]:
    """The same global batch over `processes`: per-device batch = global / processes."""
    d = root / f"p{processes}"
    per = 4 // processes
    return [
        {"stage": "sft", "config": {**_common(d / "sft", model=model, data=data["sft"], per_device_batch_size=per,
                                              gradient_accumulation_steps=2)}},
        {"stage": "rm", "config": {**_common(d / "rm", model=model, data=data["pairs"], per_device_batch_size=per,
                                             gradient_accumulation_steps=2)}},
        {"stage": "dpo", "config": {**_common(d / "dpo", model=model, data=data["pairs"],
                                              per_device_batch_size=per, gradient_accumulation_steps=2)}},
        {"stage": "ppo", "sampler": "row_seeded",
         "config": _ppo(d / "ppo", model, data["prompts"], value_head_on_policy=True)},
        {"stage": "ppo", "sampler": "row_seeded",
         "config": _ppo(d / "rloo", model, data["prompts"], advantage_estimator="rloo", samples_per_prompt=2,
                        whiten_advantages="batch")},
    ]


def resumable_jobs(root: Path, model: str, data: dict) -> list[dict]:
    """Two-process runs with a checkpoint after every step, PPO with its own sampler."""
    d = root / "resume"
    return [
        {"stage": "sft", "config": {**_common(d / "sft", model=model, data=data["sft"], per_device_batch_size=2,
                                              gradient_accumulation_steps=1, checkpoint_every=1,
                                              keep_checkpoints=3)}},
        {"stage": "ppo", "config": _ppo(d / "ppo", model, data["prompts"], checkpoint_every=1, keep_checkpoints=3,
                                        value_head_on_policy=True)},
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale_out")
    model = save_tiny_model(root / "model")
    data = {
        "sft": write_jsonl(root / "sft.jsonl", [{"prompt": f"Say {w}.", "completion": f" {w} {w}!"}
                                                for w in WORDS[:24]]),
        "pairs": write_jsonl(root / "pairs.jsonl", [{"prompt": f"Say {w}:", "chosen": f" {w} apple",
                                                     "rejected": f" {w} {WORDS[(i + 5) % len(WORDS)]}"}
                                                    for i, w in enumerate(WORDS[:16])]),
        "prompts": write_jsonl(root / "prompts.jsonl", [{"prompt": f"Say {w}."} for w in WORDS[:8]]),
    }
    launch(jobs_for(root, model, data, 2) + resumable_jobs(root, model, data), root)
    run_here(jobs_for(root, model, data, 1))
    return root, model, data


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo", "ppo", "rloo"])
@pytest.mark.multiprocess
def test_two_processes_end_with_the_one_process_weights(runs, stage):
    root, _, _ = runs
    assert_same_weights(root / "p1" / stage, root / "p2" / stage)


@pytest.mark.parametrize("stage,keys", [
    ("sft", ["loss/train", "tokens", "grad_norm"]),
    ("rm", ["loss/reward", "grad_norm"]),
    ("dpo", ["loss/dpo", "grad_norm"]),
    ("ppo", ["objective/scores", "objective/kl", "response/length"]),
    ("rloo", ["objective/scores", "objective/kl", "response/length"]),
])
@pytest.mark.multiprocess
def test_two_processes_log_the_one_process_numbers_once(runs, stage, keys):
    root, _, _ = runs
    one, two = read_metrics(root / "p1" / stage / "metrics.jsonl"), read_metrics(root / "p2" / stage / "metrics.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two]  # every row once: only the main process writes
    for a, b in zip(one, two):
        for k in keys:
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), (a["step"], k)
    if stage in ("ppo", "rloo"):  # samples: the main process's rows, which are the global batch's first rows
        s1 = read_metrics(root / "p1" / stage / "samples.jsonl")
        s2 = read_metrics(root / "p2" / stage / "samples.jsonl")
        assert [(r["step"], r["prompt"], r["response"]) for r in s1] == \
            [(r["step"], r["prompt"], r["response"]) for r in s2]
    info = json.loads((root / "p2" / stage / "run_info.json").read_text())
    assert info["argv"]


def test_ppo_prompts_are_sharded_without_overlap():
    from rlhfkit.trainers.ppo.trainer import episode_prompts

    for k in (1, 2):
        for step in range(4):
            one = episode_prompts(10, step, 8, 0, 5, k=k)
            shards = [episode_prompts(10, step, 4, r, 5, k=k, world=2) for r in range(2)]
            assert shards[0] + shards[1] == one  # the global batch, cut in two contiguous shards
            per_prompt = [p for s in shards for p in s[::k]]
            if step == 0:
                assert len(set(per_prompt)) == len(per_prompt)  # first pass: no prompt on both processes


@pytest.mark.multiprocess
def test_two_process_runs_resume_to_the_weights_they_would_have_reached(runs):
    root, model, data = runs
    jobs = resumable_jobs(root, model, data)
    finished = {}
    for job in jobs:
        out = Path(job["config"]["output_dir"])
        finished[out] = {k: v.clone() for k, v in weights(out).items()}
        steps = sorted((out / "checkpoints").glob("step-*"))
        assert len(steps) >= 2
        shutil.rmtree(steps[-1])  # resume from the one before the newest: two steps replayed
        (out / "model.safetensors").unlink()
    result = launch(jobs, root)
    assert result.stdout.count("resumed") + result.stderr.count("resumed") >= 2
    for out, before in finished.items():
        after = weights(out)
        worst = max((before[k] - after[k]).abs().max().item() for k in before)
        assert worst <= 1e-6, (out.name, worst)
        rows = read_metrics(out / "metrics.jsonl")
        assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})  # no step logged twice


def test_row_filters_are_refused_under_several_processes():
    from rlhfkit.config import ConfigError
    from rlhfkit.trainers.ppo.config import PPOConfig

    for options in ({"dynamic_sampling": True}, {"overlong": "filter"}):
        cfg = PPOConfig(rollout_batch_size=16, advantage_estimator="grpo", samples_per_prompt=4, **options)
        assert cfg.sizes(1).local_rollout == 16
        with pytest.raises(ConfigError, match="one process only"):
            cfg.sizes(2)
