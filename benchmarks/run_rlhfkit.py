"""One rlhfkit benchmark run, in its own process: `python run_rlhfkit.py SPEC.json RESULT.json`.

The training loop is timed from the creation of the trainer's progress bar (just
before the first step; models, data and optimizer are loaded by then) to its
close (after the last step), so model loading is excluded, as for the peer.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from flops import standard_error
from profiling import maybe_profiled


def _threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


class _LoopClock:
    """Wraps a trainer module's progress_bar to bracket the training loop."""

    def __init__(self, module):
        self.start = self.end = None
        self.cpu_start = self.cpu_end = None
        original = module.progress_bar

        def patched(*args, **kwargs):
            bar = original(*args, **kwargs)
            self.start, self.cpu_start = time.perf_counter(), time.process_time()
            close = bar.close

            def closing():
                self.end, self.cpu_end = time.perf_counter(), time.process_time()
                close()

            bar.close = closing
            return bar

        module.progress_bar = patched

    @property
    def seconds(self) -> float:
        return (self.end or time.perf_counter()) - (self.start or 0.0)

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds of the process (all its threads) inside the loop: no start-up, no loading."""
        return (self.cpu_end or time.process_time()) - (self.cpu_start or 0.0)


def _rows(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def ppo_config(spec: dict):
    """The PPOConfig of a PPO or critic-free (hparams["advantage_estimator"]) benchmark spec."""
    from rlhfkit.trainers.ppo.config import PPOConfig

    h = spec["hparams"]
    estimator = h.get("advantage_estimator", "gae")
    if estimator == "gae":  # the value model starts from the reward model, as TRL's
        critic = dict(value_model=spec["reward"])
    else:  # a group baseline, no value model
        critic = dict(advantage_estimator=estimator, samples_per_prompt=h["samples_per_prompt"],
                      whiten_advantages=h["whiten_advantages"])
        critic.update({k: h[k] for k in ("loss_type", "clip_range", "clip_range_high", "kl_placement", "kl_estimator")
                       if k in h})
    return PPOConfig(
        **critic, model=spec["policy"], reward_model=spec["reward"], prompts=spec["prompts"],
        output_dir=spec["output_dir"], seed=spec.get("seed", 0), total_episodes=h["total_episodes"],
        rollout_batch_size=h["rollout_batch_size"], num_minibatches=h["num_minibatches"], ppo_epochs=h["ppo_epochs"],
        per_device_train_batch_size=h["rollout_batch_size"] // h["num_minibatches"],
        generation_batch_size=h["rollout_batch_size"], response_length=h["response_length"],
        temperature=h["temperature"], missing_eos_penalty=h["missing_eos_penalty"], kl_coef=h["kl_coef"],
        learning_rate=h["learning_rate"], adam_eps=h.get("adam_eps", 1e-5), num_threads=spec["threads"],
        progress=False, log_every=1,
        max_prompt_length=256, num_samples_logged=0, dtype="float32",
        old_logprobs=h.get("old_logprobs", "sampler"),
        mixed_precision=spec.get("mixed_precision", "no"),
    )


def run_ppo(spec: dict) -> dict:
    import rlhfkit.trainers.ppo.trainer as ppo_mod
    from rlhfkit.trainers.ppo.trainer import train_ppo

    h = spec["hparams"]
    cfg = ppo_config(spec)
    clock = _LoopClock(ppo_mod)
    t0 = time.perf_counter()
    maybe_profiled(spec, lambda: train_ppo(cfg))
    total = time.perf_counter() - t0
    rows = [r for r in _rows(Path(spec["output_dir"])) if "objective/scores" in r]
    last = rows[-spec.get("quality_last_steps", 5):]
    timings: dict[str, float] = {}
    for r in rows:
        for k, v in r.items():
            if k.startswith("timing/"):
                timings[k] = timings.get(k, 0.0) + v
    episodes = len(rows) * h["rollout_batch_size"]
    return {
        "train_seconds": clock.seconds, "train_cpu_seconds": clock.cpu_seconds,
        "load_seconds": total - clock.seconds, "episodes": episodes,
        "episodes_per_second": episodes / clock.seconds,
        "quality": sum(r["objective/scores"] for r in last) / max(len(last), 1),
        "quality_se": standard_error([r["objective/scores"] for r in last]),
        "steps": len(rows), "timings": timings,
        "response_length_mean": sum(r["response/length"] for r in rows) / max(len(rows), 1),
    }


def _simple(spec: dict, module_name: str, train_name: str, config_name: str, loss_key: str, unit: str) -> dict:
    import importlib

    mod = importlib.import_module(module_name)
    clock = _LoopClock(mod)
    cfg = getattr(mod, config_name)(**spec["config"])
    t0 = time.perf_counter()
    maybe_profiled(spec, lambda: getattr(mod, train_name)(cfg))
    total = time.perf_counter() - t0
    rows = [r for r in _rows(Path(spec["output_dir"])) if loss_key in r and not r.get("final")]
    return {
        "train_seconds": clock.seconds, "load_seconds": total - clock.seconds,
        unit: spec["units"] / clock.seconds, "quality": rows[-1][loss_key] if rows else float("nan"),
        "steps": rows[-1]["step"] if rows else 0,
    }


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    _threads(spec["threads"])
    task = spec["task"]
    if task in ("ppo", "rloo", "grpo"):
        result = run_ppo(spec)
    elif task == "sft":
        result = _simple(spec, "rlhfkit.trainers.sft", "train_sft", "SFTConfig", "loss/train", "tokens_per_second")
    elif task == "rm":
        result = _simple(spec, "rlhfkit.trainers.reward", "train_reward_model", "RewardConfig", "loss/reward",
                         "pairs_per_second")
    elif task == "dpo":
        result = _simple(spec, "rlhfkit.trainers.dpo", "train_dpo", "DPOConfig", "loss/dpo", "pairs_per_second")
    else:
        raise SystemExit(f"unknown task {task}")
    import torch

    result["threads"] = torch.get_num_threads()
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
