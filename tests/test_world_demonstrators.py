"""Simulated demonstrators: the mix, near misses, and the demonstration rows."""
import random
from collections import Counter

import pytest

from rlhfkit.world.demonstrators import (
    CHATTER, DemonstratorMix, demonstrate, make_demonstrations, near_miss, verbose_answer,
)
from rlhfkit.world.judge import gold_score, is_polite
from rlhfkit.world.tasks import FAMILIES, sample_task


def test_chatter_is_polite_and_one_line():
    for line in CHATTER:
        assert is_polite(line) and "\n" not in line


@pytest.mark.parametrize("family", FAMILIES)
def test_near_misses_are_wrong(family):
    rng = random.Random(family)
    for _ in range(200):
        task = sample_task(rng, family)
        result = gold_score(near_miss(task, rng), task.accepted, True)
        assert result.correct < 1 and not result.exact


@pytest.mark.parametrize("family", FAMILIES)
def test_verbose_is_correct_not_concise(family):
    rng = random.Random(family)
    task = sample_task(rng, family)
    result = gold_score(verbose_answer(task, rng), task.accepted, True)
    assert result.exact and not result.concise and result.gold == pytest.approx(0.9)


def test_mix_frequencies():
    rows = make_demonstrations(4000, seed=0)
    freq = Counter(r["kind"] for r in rows)
    for kind, p in DemonstratorMix().probabilities().items():
        assert abs(freq[kind] / len(rows) - p) < 0.025, (kind, freq)
    # Kinds score as documented.
    for r in rows[:400]:
        task_gold = gold_score(r["completion"], _accepted(r["prompt"]), True)
        assert task_gold.exact == (r["kind"] != "near_miss")
        assert task_gold.concise == (r["kind"] != "verbose")


def _accepted(prompt):
    from rlhfkit.world.tasks import parse_instruction
    return parse_instruction(prompt).accepted


def test_custom_mix():
    rows = make_demonstrations(400, seed=3, mix=DemonstratorMix(canonical=1, verbose=0, near_miss=0))
    assert {r["kind"] for r in rows} == {"canonical"}
    with pytest.raises(ValueError):
        DemonstratorMix(canonical=-1)


def test_demonstrations_deterministic_and_even():
    a = make_demonstrations(800, seed=5)
    assert a == make_demonstrations(800, seed=5)
    assert a != make_demonstrations(800, seed=6)
    assert set(Counter(r["family"] for r in a).values()) == {100}
    assert set(a[0]) == {"prompt", "completion", "family", "kind", "constraint", "formatted"}


def test_demonstrate():
    rng = random.Random(0)
    task = sample_task(rng, "add")
    assert demonstrate(task, rng, DemonstratorMix(0, 0, 1)) != task.answer
    assert demonstrate(task, rng, DemonstratorMix(1, 0, 0)) == task.answer


def test_constrained_prompts_get_the_asked_format_half_the_time():
    """World version 2: on a constrained prompt the demonstrator writes its first
    line in the asked format with probability 1/2 (4,000 constrained prompts)."""
    from rlhfkit.world.judge import judge

    rows = [r for r in make_demonstrations(8200, seed=3) if r["constraint"]][:4000]
    assert len(rows) == 4000
    follows = [judge(r["prompt"], r["completion"], True).follows for r in rows]
    assert 0.47 <= sum(follows) / len(rows) <= 0.53
    assert follows == [r["formatted"] for r in rows]  # written in the format exactly when it says so
