"""Splits: disjoint, deterministic, families spread evenly."""
from collections import Counter

from rlhfkit.world.splits import SPLITS, make_split, owner


def test_splits_disjoint_and_deterministic():
    splits = {name: make_split(name, 800, seed=0) for name in SPLITS}
    for name, tasks in splits.items():
        assert tasks == make_split(name, 800, seed=0)
        assert all(owner(t.base_instruction) == name for t in tasks if t.family != "name")
    # disjoint on the plain instruction: a task is never plain in one split and constrained in another
    instructions = {name: {t.base_instruction for t in tasks if t.family != "name"} for name, tasks in splits.items()}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not instructions[a] & instructions[b], (a, b)
    # Different seeds: different tasks, still owned by the split.
    other = make_split("sft", 800, seed=1)
    assert other != splits["sft"] and all(owner(t.base_instruction) == "sft" for t in other if t.family != "name")


def test_half_the_prompts_carry_an_allowed_constraint():
    from rlhfkit.world.tasks import CONSTRAINTS, allowed_constraints, parse_instruction

    for name in SPLITS:
        tasks = make_split(name, 2000, seed=0)
        constrained = [t for t in tasks if t.constraint]
        assert 0.46 < len(constrained) / len(tasks) < 0.54, name
        assert all(t.constraint in allowed_constraints(t.family) for t in constrained)
        assert not any(t.family == "count" and t.constraint == "caps" for t in tasks)
        assert set(Counter(t.constraint for t in constrained)) == set(CONSTRAINTS)
        for t in constrained[:50]:  # the instruction carries the sentence and parses back
            assert t.instruction == f"{t.base_instruction} {CONSTRAINTS[t.constraint]}"
            assert parse_instruction(t.instruction) == t


def test_eval_spread_evenly_and_unique():
    tasks = make_split("eval", 1000, seed=0)
    assert set(Counter(t.family for t in tasks).values()) == {125}
    non_name = [t.instruction for t in tasks if t.family != "name"]
    assert len(set(non_name)) == len(non_name)


def test_small_family_repeats_when_exhausted():
    # count has 5,000 instances, eval owns about 500; asking for more repeats them.
    tasks = make_split("eval", 700, seed=0, families=("count",))
    assert 400 < len({t.instruction for t in tasks}) < 700
