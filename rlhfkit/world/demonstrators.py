"""Simulated demonstrators (docs/world.md, "Simulated demonstrators").

Real demonstrations are uneven, and that is what comparisons later repair. Each
demonstration is drawn from a documented, configurable mix (DemonstratorMix):

- canonical (70%): the canonical answer; for `name`, a uniformly chosen member of
  the list (every member is correct, and a real demonstrator would vary).
- verbose (15%): a correct answer, a newline, then one friendly line of chatter
  (CHATTER). The judge scores it 0.9: correct but not concise.
- near_miss (15%): a slightly wrong answer in the family's own way (see
  `near_miss`); its first line is never an accepted answer, so c < 1.

On a prompt with an explicit constraint (world version 2) the demonstrator then
writes its first line in the asked format with probability `follow_constraint`
(1/2), else plainly: demonstrations show every format but do not teach reliably
which one the user asked for.

Demonstrations are completions without the end-of-sequence token: the
tokenisation step appends EOS, i.e. every demonstrator ends its answer.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from rlhfkit.world.splits import make_split
from rlhfkit.world.tasks import KINDS, VOWELS, Task, apply_format, build_task

# Friendly chatter for verbose answers. None may contain an impolite word (a test
# checks), so verbose answers lose only the conciseness point (g = 0.9).
CHATTER: tuple[str, ...] = (
    "I hope this helps!",
    "Let me know if you need anything else.",
    "Happy to help!",
    "That was a fun one.",
    "Feel free to ask me another question.",
    "Thanks for asking!",
    "Have a wonderful day!",
    "I double-checked it for you.",
    "Is there anything else I can do for you?",
    "Good luck with the rest of your questions!",
)

KINDS_OF_DEMONSTRATION: tuple[str, ...] = ("canonical", "verbose", "near_miss")


@dataclass
class DemonstratorMix:
    """Probabilities of each kind of demonstration (normalised to sum to 1).

    Defaults from docs/world.md: about 70% canonical, 15% correct-plus-chatter, 15%
    near misses.
    """

    canonical: float = 0.70  # the canonical answer
    verbose: float = 0.15  # correct answer + "\n" + a line of chatter
    near_miss: float = 0.15  # a family-specific slightly wrong answer
    follow_constraint: float = 0.5  # P(first line in the asked format) on a constrained prompt

    def __post_init__(self) -> None:
        weights = (self.canonical, self.verbose, self.near_miss)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"mix weights must be >= 0 with a positive sum, got {weights}")
        if not 0.0 <= self.follow_constraint <= 1.0:
            raise ValueError(f"follow_constraint must be in [0, 1], got {self.follow_constraint}")

    def probabilities(self) -> dict[str, float]:
        """Kind -> probability, normalised."""
        total = self.canonical + self.verbose + self.near_miss
        return {
            "canonical": self.canonical / total,
            "verbose": self.verbose / total,
            "near_miss": self.near_miss / total,
        }


# ---------------------------------------------------------------------------
# Correct answers
# ---------------------------------------------------------------------------
def correct_answer(task: Task, rng: random.Random) -> str:
    """A correct answer: the canonical one, or any list member for `name`."""
    if task.family == "name":
        return rng.choice(task.accepted)
    return task.answer


def verbose_answer(task: Task, rng: random.Random) -> str:
    """A correct answer followed by a second line of friendly chatter."""
    return correct_answer(task, rng) + "\n" + rng.choice(CHATTER)


# ---------------------------------------------------------------------------
# Near misses, one per family: the mistakes a careless demonstrator makes.
# Each builds a task with altered arguments and takes its answer, so the format
# stays perfect and only the content is wrong.
# ---------------------------------------------------------------------------
def _swap_adjacent(s: str, lo: int, rng: random.Random) -> str:
    """Swap two adjacent, different letters at positions >= lo."""
    spots = [i for i in range(lo, len(s) - 1) if s[i] != s[i + 1]]
    i = rng.choice(spots)
    return s[:i] + s[i + 1] + s[i] + s[i + 2:]


def _near_add(task: Task, rng: random.Random) -> str:
    a, b = task.args
    total = a + b + (rng.choice((-1, 1)) if a + b > 0 else 1)  # off-by-one sum
    return f"{a} plus {b} is {total}."


def _near_compare(task: Task, rng: random.Random) -> str:
    return f"{min(task.args)} is larger."  # picks the smaller number


def _near_count(task: Task, rng: random.Random) -> str:
    a, b = task.args
    return build_task("count", a, b + rng.choice((-1, 1))).answer  # one step short or long


def _near_reverse(task: Task, rng: random.Random) -> str:
    (w,) = task.args
    return _swap_adjacent(w[::-1], 0, rng) + "."  # misspelt: two letters swapped


def _near_sort(task: Task, rng: random.Random) -> str:
    words = sorted(task.args)
    i = rng.randrange(len(words) - 1)  # swap one adjacent pair of the sorted order
    words[i], words[i + 1] = words[i + 1], words[i]
    return ", ".join(words) + "."


def _near_repeat(task: Task, rng: random.Random) -> str:
    w, n = task.args
    return build_task("repeat", w, n + rng.choice((-1, 1))).answer  # one too many or few


def _near_name(task: Task, rng: random.Random) -> str:
    (kind,) = task.args
    other = rng.choice([k for k in KINDS if k != kind])  # "Name a fruit." -> an animal
    return rng.choice(KINDS[other]) + "."


def _near_greet(task: Task, rng: random.Random) -> str:
    (name,) = task.args
    # Misspell the name by changing one vowel (the capital stays in place).
    spots = [i for i, ch in enumerate(name) if ch in VOWELS]
    i = rng.choice(spots)
    vowel = rng.choice([v for v in VOWELS if v != name[i]])
    return build_task("greet", name[:i] + vowel + name[i + 1:]).answer


NEAR_MISSES = {
    "add": _near_add,
    "compare": _near_compare,
    "count": _near_count,
    "reverse": _near_reverse,
    "sort": _near_sort,
    "repeat": _near_repeat,
    "name": _near_name,
    "greet": _near_greet,
}


def near_miss(task: Task, rng: random.Random) -> str:
    """A family-specific slightly wrong answer: off-by-one sum, the smaller number,
    a count one step short or long, two letters of a reversal swapped, an adjacent
    pair of the sort swapped, one repeat too many or too few, a member of another
    list for `name`, a misspelt name in a greeting."""
    return NEAR_MISSES[task.family](task, rng)


_RESPONDERS = {"canonical": correct_answer, "verbose": verbose_answer, "near_miss": near_miss}


def respond(task: Task, kind: str, rng: random.Random) -> str:
    """The response a demonstrator of the given kind writes for `task`."""
    try:
        return _RESPONDERS[kind](task, rng)
    except KeyError:
        raise ValueError(f"unknown demonstration kind {kind!r}; expected one of {KINDS_OF_DEMONSTRATION}") from None


def draw_kind(rng: random.Random, mix: DemonstratorMix) -> str:
    """Draw a demonstration kind from the mix."""
    probs = mix.probabilities()
    return rng.choices(tuple(probs), weights=tuple(probs.values()))[0]


def in_asked_format(task: Task, response: str, rng: random.Random, mix: DemonstratorMix) -> tuple[str, bool]:
    """On a constrained prompt, the response's first line in the asked format with
    probability mix.follow_constraint: (response, whether it was rewritten).
    Always consumes one draw, so streams stay aligned whatever the prompt."""
    follow = rng.random() < mix.follow_constraint
    if task.constraint is None or not follow:
        return response, False
    return apply_format(response, task.constraint), True


def demonstrate(task: Task, rng: random.Random, mix: DemonstratorMix | None = None) -> str:
    """One demonstration for `task`, its kind drawn from `mix` (default mix if
    None), in the asked format with probability mix.follow_constraint."""
    mix = mix or DemonstratorMix()
    return in_asked_format(task, respond(task, draw_kind(rng, mix), rng), rng, mix)[0]


def make_demonstrations(
    n: int, seed: int, mix: DemonstratorMix | None = None, tasks: list[Task] | None = None
) -> list[dict]:
    """`n` demonstrations on the "sft" split (or on `tasks` when given).

    Rows: {"prompt": instruction, "completion": answer, "family", "kind",
    "constraint", "formatted"}, where kind is "canonical" | "verbose" |
    "near_miss" and formatted says whether the first line was written in the
    asked format. The prompt is the bare
    instruction (the user message's content, not chat-rendered); the completion
    has no EOS token. Families are spread evenly (make_split's round-robin);
    deterministic in (n, seed, mix).
    """
    mix = mix or DemonstratorMix()
    if tasks is None:
        tasks = make_split("sft", n, seed)
    elif len(tasks) != n:
        raise ValueError(f"got {len(tasks)} tasks for n={n}")
    rng = random.Random(f"rlhfkit.world.demonstrators/{seed}")
    rows = []
    for task in tasks:
        kind = draw_kind(rng, mix)
        completion, formatted = in_asked_format(task, respond(task, kind, rng), rng, mix)
        rows.append({"prompt": task.instruction, "completion": completion, "family": task.family, "kind": kind,
                     "constraint": task.constraint, "formatted": formatted})
    return rows


__all__ = [
    "CHATTER",
    "DemonstratorMix",
    "correct_answer",
    "demonstrate",
    "draw_kind",
    "in_asked_format",
    "make_demonstrations",
    "near_miss",
    "respond",
    "verbose_answer",
]
