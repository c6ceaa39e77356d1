"""The method stages and evaluations of a run as jobs, run one after another in this
process or `--workers` at a time, each in a process of its own.

The world's models are tiny (0.87M parameters): one stage cannot keep two cores busy
(its matrix products are too small to split well), so two stages side by side, one
thread each, finish sooner than the same two one after the other on two threads. A
job is a module-level function and its arguments (a worker process receives it by
pickling); it writes its own directory and `.done` marker, so a job that finished is
kept when another fails, and re-running the command resumes. Jobs that share a file
(the bases' evaluation, ORPO's pairs) are prepared before the jobs start or dropped
as duplicates, so no two processes ever write one directory.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass

import torch

# Rough seconds of each stage on a 2-core CPU (the world's defaults), to start the longest
# first: the last jobs to finish are then short ones, and the workers end together.
EXPECTED_SECONDS = {"orpo": 300, "dpo": 160, "ipo": 160, "kto": 160, "ppo_ai_direct": 145, "ppo": 85, "ppo_ai": 85,
                    "ppo_gold": 85, "ppo_ptx": 95, "rloo": 50, "grpo": 50, "eval bon": 60, "eval base_large": 64}
EVAL_SECONDS = 15


@dataclass(frozen=True)
class Job:
    """One stage of one seed: fn(*args), after the jobs named in `after` (same run)."""

    key: str  # unique in the run: "<seed>/<name>", or the shared directory for a shared evaluation
    name: str  # the stage: a method ("ppo") or an evaluation ("eval ppo")
    fn: Callable
    args: tuple
    after: tuple[str, ...] = ()

    @property
    def expected_seconds(self) -> float:
        return EXPECTED_SECONDS.get(self.name, EVAL_SECONDS if self.name.startswith("eval") else 100)


def run_jobs(jobs: Sequence[Job], workers: int, threads: int) -> dict[str, object]:
    """{job.key: fn(*args)} for every job, each after the jobs it waits for. One worker:
    in order, in this process. Several: the longest ready job first, each in a spawned
    process with `threads` torch threads; the first error is raised once the jobs already
    running have finished (their results are on disk), and nothing new starts."""
    if workers <= 1:
        return {job.key: job.fn(*job.args) for job in jobs}
    keys = {job.key for job in jobs}
    missing = [f"{job.key} waits for {a}" for job in jobs for a in job.after if a not in keys]
    if missing:
        raise ValueError(f"jobs wait for jobs that are not in the run: {missing[:3]}")
    pending, results, running = list(jobs), {}, {}
    context = multiprocessing.get_context("spawn")  # no fork of a process whose torch threads already ran
    with ProcessPoolExecutor(workers, mp_context=context, initializer=torch.set_num_threads,
                             initargs=(threads,)) as pool:
        error = None
        while (pending and error is None) or running:
            if error is None:
                ready = sorted((j for j in pending if all(a in results for a in j.after)),
                               key=lambda j: -j.expected_seconds)
                for job in ready[:workers - len(running)]:
                    pending.remove(job)
                    running[pool.submit(job.fn, *job.args)] = job
            if not running:
                raise RuntimeError(f"no job can start: {[j.key for j in pending]} wait for each other")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                try:
                    results[job.key] = future.result()
                except BaseException as e:  # the first error; the running jobs may finish and be kept
                    error = error or e
        if error is not None:
            raise error
    return results

