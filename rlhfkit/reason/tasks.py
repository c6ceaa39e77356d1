"""The reasoning world's problems, their one right working, a sloppy demonstrator,
and the exact check of a response's working and answer. No torch.

Two procedures with digit-level steps, each step on its own line, least significant
digit first, then the final line:

    add  "347+586\\n"  ->  "7+6+0=13\\n4+8+1=13\\n3+5+1=09\\nAnswer: 933"
    mul  "347*6\\n"    ->  "7*6+0=42\\n4*6+4=28\\n3*6+2=20\\nAnswer: 2082"

Each step writes the two digits (or the digit and the multiplier), the carry in from
the step before, and the step's result in two digits: its last digit is the answer's
digit there and its first the next carry. Every line has the same width, so the digit
a step needs sits at a fixed distance back, which a small model learns quickly. The working fixes the answer, so it can be checked exactly:
a response's working is right when every step line is the canonical one, and its
answer right when the `Answer:` line holds the true result.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

OPS = ("add", "mul")


@dataclass(frozen=True)
class Problem:
    op: str  # "add" or "mul"
    a: int
    b: int  # the second addend, or the one-digit multiplier

    @property
    def prompt(self) -> str:
        return f"{self.a}{'+' if self.op == 'add' else '*'}{self.b}\n"

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "add" else self.a * self.b


def sample_problem(rng: random.Random, digits: tuple[int, int] = (3, 3)) -> Problem:
    """An addition of two n-digit numbers or an n-digit number times a digit 2-9, n in digits."""
    n = rng.randint(*digits)
    lo, hi = 10 ** (n - 1), 10**n - 1
    if rng.random() < 0.5:
        return Problem("add", rng.randint(lo, hi), rng.randint(lo, hi))
    return Problem("mul", rng.randint(lo, hi), rng.randint(2, 9))


def steps(p: Problem) -> list[tuple[int, int, int, int]]:
    """The canonical steps (x, y, carry_in, result), least significant digit first."""
    xs = [int(d) for d in str(p.a)[::-1]]
    ys = [int(d) for d in str(p.b)[::-1]] if p.op == "add" else [p.b] * len(xs)
    ys += [0] * (len(xs) - len(ys))
    out, carry = [], 0
    for x, y in zip(xs, ys):
        result = (x + y if p.op == "add" else x * y) + carry
        out.append((x, y, carry, result))
        carry = result // 10
    return out


def step_line(op: str, x: int, y: int, carry: int, result: int) -> str:
    return f"{x}+{y}+{carry}={result:02d}" if op == "add" else f"{x}*{y}+{carry}={result:02d}"


def answer_from_steps(step_list: list[tuple[int, int, int, int]]) -> int:
    """The number the steps write: each result's last digit, and the last result's tens in front."""
    digits = [r % 10 for *_, r in step_list]
    head = step_list[-1][3] // 10 if step_list else 0
    return int((str(head) if head else "") + "".join(str(d) for d in reversed(digits)) or "0")


def working(p: Problem) -> str:
    """The canonical response: the step lines and the Answer line."""
    lines = [step_line(p.op, *s) for s in steps(p)]
    return "\n".join(lines + [f"Answer: {p.answer}"])


def sloppy_working(p: Problem, rng: random.Random, slip_rate: float) -> str:
    """A demonstrator that slips: with probability slip_rate per step, a step's result is off
    by +-1 or +-10 (later steps then follow the wrong carry, and the answer follows the
    working); and, rarely, the answer line is copied wrong under right working, or written
    right under a wrong step (worked out "in the head"). Returns the response text."""
    lines, carry = [], 0
    xs = [int(d) for d in str(p.a)[::-1]]
    ys = [int(d) for d in str(p.b)[::-1]] if p.op == "add" else [p.b] * len(xs)
    written = []
    for x, y in zip(xs, ys):
        result = (x + y if p.op == "add" else x * y) + carry
        if rng.random() < slip_rate:
            result = min(99, max(0, result + rng.choice([-1, 1, -10, 10])))
        written.append((x, y, carry, result))
        lines.append(step_line(p.op, x, y, carry, result))
        carry = result // 10
    answer = answer_from_steps(written)
    u = rng.random()
    if u < slip_rate / 4:
        answer = answer + rng.choice([-1, 1, 10, -10])  # miscopied answer
    elif u < slip_rate / 2:
        answer = p.answer  # the right answer whatever the working says
    return "\n".join(lines + [f"Answer: {answer}"])


def times_table(multiplier: int, carry: int = 0) -> str:
    """One times table, "0*7+0=00" ... "9*7+0=63", written as the steps write a product
    (the operand's digit, the multiplier, the carry in, two digits), the carried one adding
    `carry` to each product: the facts a multiplication step needs, which the worked problems
    alone, with their slips, do not teach a tiny model (docs/reasoning.md). Pretraining text."""
    return "\n".join(step_line("mul", digit, multiplier, carry, digit * multiplier + carry) for digit in range(10))


@dataclass(frozen=True)
class Verdict:
    answer_right: bool  # the Answer line holds the true result
    working_right: bool  # every step line is the canonical one, none missing or extra
    well_formed: bool  # step lines followed by one Answer line, nothing else


def check(p: Problem, response: str) -> Verdict:
    """Judge a response's answer and working exactly."""
    lines = [line.strip() for line in response.strip().split("\n")]
    answer_lines = [i for i, line in enumerate(lines) if line.startswith("Answer:")]
    well_formed = len(answer_lines) == 1 and answer_lines[0] == len(lines) - 1
    written = lines[:answer_lines[-1]] if answer_lines else lines
    canonical = [step_line(p.op, *s) for s in steps(p)]
    answer_text = lines[answer_lines[-1]][len("Answer:"):].strip() if answer_lines else ""
    return Verdict(answer_right=answer_text == str(p.answer), working_right=written == canonical,
                   well_formed=well_formed)
