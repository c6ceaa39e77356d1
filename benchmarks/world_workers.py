"""Is `rlhfkit run --workers 2` worth it on a given CPU? Two of the world's stages, taken
from a finished run directory, each timed as one job on two threads and as two copies
side by side on one thread each; prints the wall seconds and the work-per-second ratio
(2 x one job / two side by side: above 1, two at a time finishes a run's stages sooner).

    python benchmarks/world_workers.py runs/world      # a finished `rlhfkit run` directory

DPO runs half an epoch of the run's dpo/ stage options, PPO 1,024 episodes of its ppo/
stage's; outputs go to a temporary directory.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = r'''
import sys, torch
from rlhfkit.config import from_dict, load_yaml
kind, run, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
options = load_yaml(f"{run}/{kind}/config.yaml")
options.update(output_dir=out, num_threads=threads, progress=False)
if kind == "dpo":
    from rlhfkit.trainers.dpo import DPOConfig, train_dpo
    train_dpo(from_dict(DPOConfig, {**options, "num_epochs": 0.5}))
else:
    from rlhfkit.experiment.stages import train_ppo_with_gold
    from rlhfkit.trainers.ppo.config import PPOConfig
    train_ppo_with_gold(from_dict(PPOConfig, {**options, "total_episodes": 1024}))
'''


def timed(kind: str, run: str, outs: list[Path], threads: int) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", JOB, kind, run, str(o), str(threads)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for o in outs]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"{kind} failed:\n{err.decode()[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished `rlhfkit run` directory (its dpo/ and ppo/ stages)")
    run = parser.parse_args().run_dir
    for kind in ("dpo", "ppo"):
        if not (Path(run) / kind / "config.yaml").exists():
            raise SystemExit(f"{run}/{kind}/config.yaml not found: run `rlhfkit run --algo ppo,dpo` there first")
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("dpo", "ppo"):
            one = timed(kind, run, [Path(tmp) / f"{kind}-one"], 2)
            two = timed(kind, run, [Path(tmp) / f"{kind}-a", Path(tmp) / f"{kind}-b"], 1)
            figures[kind] = {"one_job_2_threads_s": round(one, 1), "two_jobs_1_thread_each_s": round(two, 1),
                             "work_per_second_ratio": round(2 * one / two, 3)}
            print(json.dumps({kind: figures[kind]}), flush=True)


if __name__ == "__main__":
    main()
