"""One point of a data study (labeler_noise, data, shift): a reward model on a variant
of the comparisons and PPO against it, per seed, measured on fixed prompts: the RM's
accuracy against gold on the run's held-out rankings and the policy's gold on the
evaluation prompts. The held-out rankings and evaluation prompts are the same for
every point and seed, so the intervals pair over them."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from rlhfkit.experiment.studies.common import Study, cached_values, rm_accuracy_values


def train_point(study: Study, name: str, comparisons: Callable[[int], Sequence[dict] | Path],
                heldout: Sequence[dict], with_policy: bool = True) -> dict[int, dict]:
    """{seed: {"rm_accuracy": per held-out ranking, "eval": the policy's per-prompt values}}
    for the point `name`, whose comparisons for a seed are comparisons(seed)."""
    out = {}
    for seed in study.cfg.seeds:
        where = study.out / name / f"seed_{seed}"
        rm = study.reward_model(where / "rm", comparisons(seed), seed)
        result = {"rm_accuracy": cached_values(where / "rm_accuracy.json", lambda: rm_accuracy_values(rm, heldout))}
        if with_policy:
            policy = study.ppo(where / "ppo", seed, reward_model=rm)
            result["eval"] = study.evaluate(policy, where / "eval.json", seed)
        out[seed] = result
    return out
