"""Task families of the instruction world (docs/world.md, "Task families").

Every task is one instruction line and a set of accepted answers, each a single
line ending with a period. The word lists, ranges and answer formats follow
docs/world.md to the letter: the gold judge compares strings, so a changed comma
changes every score.

A task is built in one place per family (`build_task`), from its arguments.
The random generators draw the arguments and `parse_instruction` reads them back
out of an instruction string with a regex, so both go through the same builder
and can never disagree about the answer.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

# ---------------------------------------------------------------------------
# Word lists (docs/world.md). The order is part of the spec: `name` tasks list their
# accepted answers in this order, and accepted[0] is the list's first member.
# ---------------------------------------------------------------------------
FRUITS: tuple[str, ...] = (
    "apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "peach",
    "pear", "plum", "fig", "kiwi", "lime", "papaya", "apricot", "guava",
)
ANIMALS: tuple[str, ...] = (
    "cat", "dog", "cow", "pig", "hen", "fox", "owl", "bee", "ant", "rat", "bat",
    "elk", "yak", "goat", "lion", "wolf", "bear", "duck", "frog", "seal", "deer",
    "mole", "crab", "swan",
)
COLORS: tuple[str, ...] = (
    "red", "blue", "green", "pink", "gray", "gold", "black", "white", "brown",
    "purple", "yellow", "cyan", "teal", "tan", "navy", "violet",
)
WORDS: tuple[str, ...] = FRUITS + ANIMALS + COLORS

# `Name a {kind}.`: the kind as written in the instruction -> its list.
KINDS: dict[str, tuple[str, ...]] = {"fruit": FRUITS, "animal": ANIMALS, "color": COLORS}

# Pseudo-words: 2 or 3 syllables (equally likely), each one consonant then one vowel.
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"

FAMILIES: tuple[str, ...] = ("add", "compare", "count", "reverse", "sort", "repeat", "name", "greet")

# ---------------------------------------------------------------------------
# Explicit constraints (world version 2). Half of the prompts of every split
# carry one, appended to the instruction after one space; the asked format
# rewrites the first line of the canonical answer A as below. `caps` is never
# drawn for `count`, whose answers have no letters.
# ---------------------------------------------------------------------------
WORLD_VERSION = 2
CONSTRAINTS: dict[str, str] = {
    "caps": "Answer in capital letters.",  # A in upper case
    "brackets": "Put the answer in square brackets.",  # "[" + A + "]", the period inside
    "prefix": 'Begin with "Answer:".',  # "Answer: " + A
    "no_period": "Leave out the final period.",  # A without its final period
}
CONSTRAINED_SHARE = 0.5  # share of every split's prompts that carry a constraint


def allowed_constraints(family: str) -> tuple[str, ...]:
    """The constraints that may be drawn for a family (all but caps for count)."""
    return tuple(c for c in CONSTRAINTS if not (c == "caps" and family == "count"))


def apply_format(answer: str, fmt: str | None) -> str:
    """Rewrite the first line of `answer` in format `fmt` (None: unchanged).

    Lines after the first (a verbose answer's chatter) are kept as they are."""
    if fmt is None:
        return answer
    line, sep, rest = answer.partition("\n")
    if fmt == "caps":
        line = line.upper()
    elif fmt == "brackets":
        line = f"[{line}]"
    elif fmt == "prefix":
        line = f"Answer: {line}"
    elif fmt == "no_period":
        line = line[:-1] if line.endswith(".") else line
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {tuple(CONSTRAINTS)}")
    return line + sep + rest


def pseudo_word(rng: random.Random) -> str:
    """A pronounceable non-word such as `tavo` or `mireka` (docs/world.md).

    Consonant-vowel syllables mean a pseudo-word is never a palindrome, so its
    reversal is always a different string (the `reverse` family relies on it).
    """
    n_syllables = rng.choice((2, 3))
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(n_syllables))


def pseudo_name(rng: random.Random) -> str:
    """A pseudo-word with its first letter capitalised, e.g. `Tavo`."""
    return pseudo_word(rng).capitalize()


@dataclass(frozen=True)
class Task:
    """One instance of a task family.

    `accepted[0]` is the canonical answer. For `name` every member of the list is
    accepted, in list order, so `accepted[0]` is the list's first member (e.g.
    "apple."); it is a reference answer, not the only right one.

    `args` are the values the instruction was built from, kept so that
    demonstrators can construct family-specific near misses (an off-by-one sum
    needs a and b) without re-parsing the text:

        add (a, b) | compare (a, b) | count (a, b) | reverse (w,) |
        sort (w1, w2, w3) in instruction order | repeat (w, n) | name (kind,) |
        greet (name,)

    The dataclass is frozen and every field is a tuple, so tasks hash and can be
    deduplicated in sets.
    """

    family: str
    instruction: str
    accepted: tuple[str, ...]
    args: tuple = ()
    constraint: str | None = None  # a key of CONSTRAINTS, or None for a plain prompt

    @property
    def answer(self) -> str:
        """The canonical answer (accepted[0]), in the plain format."""
        return self.accepted[0]

    @property
    def formatted_answer(self) -> str:
        """The canonical answer in the format the instruction asks for."""
        return apply_format(self.answer, self.constraint)

    @property
    def base_instruction(self) -> str:
        """The instruction without its constraint sentence."""
        if self.constraint is None:
            return self.instruction
        return self.instruction[: -len(CONSTRAINTS[self.constraint]) - 1]


def constrain(task: Task, constraint: str | None) -> Task:
    """The same task with `constraint`'s sentence appended to its instruction
    (None: the plain task). The accepted answers stay the plain ones: the judge
    peels formats off a response before it checks the content."""
    base = Task(task.family, task.base_instruction, task.accepted, task.args)
    if constraint is None:
        return base
    if constraint not in CONSTRAINTS:
        raise ValueError(f"unknown constraint {constraint!r}; expected one of {tuple(CONSTRAINTS)}")
    return Task(task.family, f"{base.instruction} {CONSTRAINTS[constraint]}", task.accepted, task.args, constraint)


def draw_constraint(rng: random.Random, family: str, share: float = CONSTRAINED_SHARE) -> str | None:
    """With probability `share` a constraint drawn uniformly from those allowed for
    the family, else None. Always consumes two draws, so streams stay aligned."""
    constrained = rng.random() < share
    pick = rng.choice(allowed_constraints(family))
    return pick if constrained else None


# ---------------------------------------------------------------------------
# Builders: arguments -> Task. The single source of truth for the table.
# ---------------------------------------------------------------------------
def _add(a: int, b: int) -> Task:
    return Task("add", f"What is {a} plus {b}?", (f"{a} plus {b} is {a + b}.",), (a, b))


def _compare(a: int, b: int) -> Task:
    return Task("compare", f"Which is larger, {a} or {b}?", (f"{max(a, b)} is larger.",), (a, b))


def _count(a: int, b: int) -> Task:
    if b < a:
        raise ValueError(f"count needs a <= b, got {a} > {b}")
    answer = ", ".join(str(i) for i in range(a, b + 1)) + "."
    return Task("count", f"Count from {a} to {b}.", (answer,), (a, b))


def _reverse(w: str) -> Task:
    return Task("reverse", f"Spell {w} backwards.", (f"{w[::-1]}.",), (w,))


def _sort(*words: str) -> Task:
    answer = ", ".join(sorted(words)) + "."
    return Task("sort", f"Sort these words: {', '.join(words)}.", (answer,), tuple(words))


def _repeat(w: str, n: int) -> Task:
    return Task("repeat", f"Say {w} {n} times.", (" ".join([w] * n) + ".",), (w, n))


def _name(kind: str) -> Task:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(KINDS)}")
    # Written "Name a animal." on purpose: docs/world.md's template is `Name a {kind}.`.
    return Task("name", f"Name a {kind}.", tuple(f"{x}." for x in KINDS[kind]), (kind,))


def _greet(name: str) -> Task:
    return Task("greet", f"Say hello to {name}.", (f"Hello, {name}! Nice to meet you.",), (name,))


_BUILDERS: dict[str, Callable[..., Task]] = {
    "add": _add,
    "compare": _compare,
    "count": _count,
    "reverse": _reverse,
    "sort": _sort,
    "repeat": _repeat,
    "name": _name,
    "greet": _greet,
}


def build_task(family: str, *args) -> Task:
    """Build a task from its family and arguments, e.g. `build_task("add", 53, 16)`."""
    try:
        builder = _BUILDERS[family]
    except KeyError:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}") from None
    return builder(*args)


# ---------------------------------------------------------------------------
# Generators: rng -> Task, with docs/world.md's ranges.
# ---------------------------------------------------------------------------
def _gen_add(rng: random.Random) -> Task:
    return _add(rng.randint(0, 99), rng.randint(0, 99))


def _gen_compare(rng: random.Random) -> Task:
    a, b = rng.sample(range(1000), 2)  # a != b, both in 0..999
    return _compare(a, b)


def _gen_count(rng: random.Random) -> Task:
    a = rng.randint(0, 999)
    return _count(a, a + rng.randint(2, 6))


def _gen_reverse(rng: random.Random) -> Task:
    return _reverse(pseudo_word(rng))


def _gen_sort(rng: random.Random) -> Task:
    return _sort(*rng.sample(WORDS, 3))


def _gen_repeat(rng: random.Random) -> Task:
    w = rng.choice(WORDS) if rng.random() < 0.5 else pseudo_word(rng)
    return _repeat(w, rng.randint(2, 5))


def _gen_name(rng: random.Random) -> Task:
    return _name(rng.choice(tuple(KINDS)))


def _gen_greet(rng: random.Random) -> Task:
    return _greet(pseudo_name(rng))


GENERATORS: dict[str, Callable[[random.Random], Task]] = {
    "add": _gen_add,
    "compare": _gen_compare,
    "count": _gen_count,
    "reverse": _gen_reverse,
    "sort": _gen_sort,
    "repeat": _gen_repeat,
    "name": _gen_name,
    "greet": _gen_greet,
}


def sample_task(rng: random.Random, family: str | None = None) -> Task:
    """Draw one task: of `family`, or of a uniformly chosen family when None."""
    if family is None:
        family = rng.choice(FAMILIES)
    try:
        gen = GENERATORS[family]
    except KeyError:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}") from None
    return gen(rng)


# ---------------------------------------------------------------------------
# Parsing: instruction text -> Task, so a reward function that sees only the
# prompt can still judge. Patterns are full matches, so they cannot overlap
# (`Say hello to X.` never matches `Say {w} {n} times.`).
# ---------------------------------------------------------------------------
_PATTERNS: tuple[tuple[str, re.Pattern, Callable[[re.Match], tuple]], ...] = (
    ("add", re.compile(r"What is (\d+) plus (\d+)\?"), lambda m: (int(m[1]), int(m[2]))),
    ("compare", re.compile(r"Which is larger, (\d+) or (\d+)\?"), lambda m: (int(m[1]), int(m[2]))),
    ("count", re.compile(r"Count from (\d+) to (\d+)\."), lambda m: (int(m[1]), int(m[2]))),
    ("reverse", re.compile(r"Spell (\S+) backwards\."), lambda m: (m[1],)),
    ("sort", re.compile(r"Sort these words: ([a-z]+(?:, [a-z]+)+)\."), lambda m: tuple(m[1].split(", "))),
    ("repeat", re.compile(r"Say (\S+) (\d+) times\."), lambda m: (m[1], int(m[2]))),
    ("name", re.compile(r"Name an? (fruit|animal|color)\."), lambda m: (m[1],)),
    ("greet", re.compile(r"Say hello to (\S+)\."), lambda m: (m[1],)),
)

# Longest count a parsed instruction may ask for: guards against building a huge
# answer string from a hostile or garbled prompt.
_MAX_COUNT_SPAN = 10_000


def _parse_line(line: str) -> Task | None:
    for constraint, sentence in CONSTRAINTS.items():
        if line.endswith(" " + sentence):
            task = _parse_plain(line[: -len(sentence) - 1].rstrip())
            return None if task is None else constrain(task, constraint)
    return _parse_plain(line)


def _parse_plain(line: str) -> Task | None:
    for family, pattern, get_args in _PATTERNS:
        m = pattern.fullmatch(line)
        if m is None:
            continue
        args = get_args(m)
        if family == "count" and not 0 <= args[1] - args[0] <= _MAX_COUNT_SPAN:
            return None
        if family == "repeat" and not 1 <= args[1] <= _MAX_COUNT_SPAN:
            return None
        return build_task(family, *args)
    return None


def parse_instruction(instruction: str) -> Task:
    """Rebuild the Task (with its accepted answers and constraint) from an
    instruction string.

    The stripped text must be one instruction exactly as the table writes it.
    Failing that, each line is tried and the last line that is an instruction
    wins, so a prompt rendered with a chat template ("<|user|>\\nWhat is 2 plus
    3?\\n<|assistant|>\\n") still parses. Raises ValueError for any other text.
    """
    text = instruction.strip()
    task = _parse_line(text)
    if task is not None:
        return task
    for line in reversed(text.splitlines()):
        task = _parse_line(line.strip())
        if task is not None:
            return task
    raise ValueError(f"not an instruction of the world: {instruction!r}")
