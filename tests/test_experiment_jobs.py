"""The run's job scheduler (rlhfkit.experiment.jobs): each job after the jobs it waits
for, the longest ready one first, in worker processes; an error is raised, and what
finished is kept."""
from __future__ import annotations

import operator
import time

import pytest

from rlhfkit.experiment.jobs import Job, run_jobs


def test_one_worker_runs_the_jobs_in_order_in_this_process():
    calls = []
    jobs = [Job("a", "a", calls.append, ("a",)), Job("b", "b", calls.append, ("b",), after=("a",)),
            Job("c", "c", operator.add, (2, 3))]
    assert run_jobs(jobs, 1, 1) == {"a": None, "b": None, "c": 5}
    assert calls == ["a", "b"]


def test_workers_wait_for_what_a_job_needs_and_return_every_result():
    start = time.time()
    jobs = [Job("slow", "eval x", time.sleep, (1.0,)), Job("after slow", "eval y", time.time, (), after=("slow",)),
            Job("sum", "eval z", operator.add, (2, 3))]
    results = run_jobs(jobs, 2, 1)
    assert results["sum"] == 5 and results["slow"] is None
    assert results["after slow"] >= start + 1.0  # started only once "slow" had finished


def test_the_first_error_is_raised_after_the_running_jobs_finish():
    jobs = [Job("bad", "ppo", int, ("not a number",)), Job("sleep", "dpo", time.sleep, (0.5,)),
            Job("later", "eval q", operator.add, (1, 1), after=("bad",))]
    with pytest.raises(ValueError, match="not a number"):
        run_jobs(jobs, 2, 1)


def test_a_job_waiting_for_an_unknown_job_is_refused():
    with pytest.raises(ValueError, match="not in the run"):
        run_jobs([Job("a", "a", operator.add, (1, 1), after=("nowhere",))], 2, 1)
