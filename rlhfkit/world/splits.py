"""Disjoint, seeded splits of task instances (docs/world.md, "Splits and sizes").

Demonstrations, comparison prompts, PPO prompts, evaluation prompts and the
web-text corpus must not share instances, or the evaluation would measure
memorisation. Disjointness is enforced by *ownership*, not by bookkeeping: a
stable hash of the instruction text assigns every instance to exactly one split
(SPLIT_SHARES), and a split only keeps the instances it owns. So any two splits
are disjoint whatever their seeds and sizes, and a split can be regenerated
alone without generating the others first.

Ownership hashes the plain instruction, so a task cannot sit in one split plain
and in another with a constraint. After a task is drawn, half the time (seeded,
`draw_constraint`) it carries one explicit constraint drawn uniformly from those
allowed for its family (world version 2).

Each split draws from its own derived seed (`split_rng`). Families are spread
evenly: the k-th task drawn is of family FAMILIES[k mod 8] (so `eval` of size
1,000 has exactly 125 per family), then the list is shuffled.

Within a split, instances are unique while the split's share of a family lasts;
small families run out at paper sizes (count has 5,000 instances, 15% of them
750, for 13,000 / 8 = 1,625 demonstrations) and then repeat. The family `name`
has only three instructions and is shared by every split (docs/world.md's exception).
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence

from rlhfkit.world.tasks import FAMILIES, Task, constrain, draw_constraint, sample_task

# Share of the instance space each split owns. The web text gets the most
# because pretraining needs many instructions; eval's 10% still holds 1,000
# distinct add and 500 distinct count instances.
SPLIT_SHARES: dict[str, float] = {
    "webtext": 0.40,
    "sft": 0.15,
    "comparisons": 0.15,
    "ppo": 0.20,
    "eval": 0.10,
}
SPLITS: tuple[str, ...] = tuple(SPLIT_SHARES)
SHARED_FAMILIES: frozenset[str] = frozenset({"name"})

_BUCKETS = 10_000
# Split name -> [lo, hi) range of hash buckets, from the shares in order.
_RANGES: dict[str, tuple[int, int]] = {}
_lo = 0
for _name, _share in SPLIT_SHARES.items():
    _hi = _lo + round(_share * _BUCKETS)
    _RANGES[_name] = (_lo, _hi)
    _lo = _hi
assert _lo == _BUCKETS, "SPLIT_SHARES must sum to 1"

# Candidates tried for an unseen instance before a repeat is accepted; after
# _EXHAUSTED consecutive failures a family counts as used up and repeats freely
# (keeps large PPO and web-text draws fast once a small family runs out).
_MAX_TRIES = 16
_EXHAUSTED = 32


def owner(instruction: str) -> str:
    """The split that owns an instruction (a stable hash, identical on every run
    and machine; Python's hash() is salted per process and would not do)."""
    digest = hashlib.blake2b(instruction.encode("utf-8"), digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") % _BUCKETS
    for name, (lo, hi) in _RANGES.items():
        if lo <= bucket < hi:
            return name
    raise AssertionError("unreachable: buckets cover the range")


def split_rng(name: str, seed: int) -> random.Random:
    """The split's own random stream, derived from its name and the seed.
    (String seeds are hashed with SHA-512 by `random`, so this is stable.)"""
    return random.Random(f"rlhfkit.world.split/{name}/{seed}")


def _check_name(name: str) -> None:
    if name not in SPLIT_SHARES:
        raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")


def iter_split(
    name: str, seed: int, families: Sequence[str] = FAMILIES, *, random_families: bool = False
) -> Iterator[Task]:
    """Endless stream of the split's tasks, families in round-robin order (or drawn
    uniformly at random with `random_families`, which the web text uses so that
    a worksheet's instructions do not follow the families in a fixed cycle).

    Used directly by the web-text generator, which needs an open-ended supply;
    `make_split` takes a prefix of it and shuffles.
    """
    _check_name(name)
    rng = split_rng(name, seed)
    seen: set[str] = set()
    misses = dict.fromkeys(families, 0)  # consecutive slots that found no unseen instance
    k = 0
    while True:
        family = rng.choice(families) if random_families else families[k % len(families)]
        k += 1
        if family in SHARED_FAMILIES:
            yield constrain(sample_task(rng, family), draw_constraint(rng, family))
            continue
        fallback = None
        for _ in range(1 if misses[family] >= _EXHAUSTED else _MAX_TRIES):
            task = sample_task(rng, family)
            while owner(task.instruction) != name:
                task = sample_task(rng, family)
            if task.instruction not in seen:
                misses[family] = 0
                break
            fallback = task
        else:
            task = fallback  # this split's share of the family is (nearly) used up
            misses[family] += 1
        seen.add(task.instruction)
        yield constrain(task, draw_constraint(rng, family))


def make_split(name: str, n: int, seed: int, families: Sequence[str] = FAMILIES) -> list[Task]:
    """`n` tasks of split `name` ("sft", "comparisons", "ppo", "eval", "webtext").

    Deterministic in (name, n, seed); disjoint from every other split (except
    family `name`); families as even as n allows (counts differ by at most 1).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    stream = iter_split(name, seed, families)
    tasks = [next(stream) for _ in range(n)]
    random.Random(f"rlhfkit.world.split-order/{name}/{seed}").shuffle(tasks)
    return tasks
