"""The gold judge (world version 2): the "human" whose intent the pipeline tries to capture.

It is a plain function any user can call on any text; it never enters training
except through the simulated labelers (rlhfkit.world.labelers). For a response
y to an instruction with accepted answers A and an optional explicit constraint
(docs/world.md, "The gold judge"):

    L      = y before its first newline, stripped, case kept
    formats peeled off L in this order:
             prefix    L starts with "answer:" (any case): drop those 7 characters, strip
             brackets  what is left has >= 2 characters, starts with "[" and ends with "]":
                       drop both, strip
             (period)  what is left ends with ".": drop that one period; else no_period
             caps      what is left has a letter and no lower-case letter
    content = what is left; normalise = lowercase, strip, fold whitespace runs
    c      = 1 if normalise(content) equals a normalised accepted answer without
             its final period, else 0.3 * max_a SequenceMatcher(None, content, a).ratio()
    m      = 1 if the formats present are exactly those asked for (none for a plain
             prompt, else the one constraint), else 0.5
    t      = 1 if the model emitted its end-of-sequence token within the limit
    s      = 1 if nothing but whitespace follows the first line
    p      = 1 if none of IMPOLITE_WORDS occurs as a whole word (any case)
    g      = c * m * (0.6 + 0.2 t + 0.1 s + 0.1 p)        in [0, 1]
    Likert = 1 + 6 g                                     in [1, 7]

Manners and format multiply the answer: an empty or off-topic reply scores about
0 however polite it is. tests/data/world_judge_vectors_v2.jsonl pins this down
to six decimals, and tests/test_world_judge.py checks every vector.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rlhfkit.world.tasks import CONSTRAINTS, Task, parse_instruction

IMPOLITE_WORDS: tuple[str, ...] = ("stupid", "idiot", "dumb", "shut", "hate", "ugly", "loser", "whatever")
_IMPOLITE = re.compile(r"\b(?:" + "|".join(IMPOLITE_WORDS) + r")\b", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")

# Scores closer than this count as equal in win rates: g is a product of floats
# and two different paths to "the same" score may differ in the last bit.
WIN_RATE_TOLERANCE = 1e-9


# The follows factor m when the formats present differ from those asked for.
FORMAT_MISMATCH = 0.5


@dataclass(frozen=True)
class JudgeResult:
    """The judge's verdict on one response.

    gold: g in [0, 1]. correct: c in [0, 1]. exact: c == 1 (the content is an
    accepted answer). follows: m == 1 (exactly the asked formats are present).
    formats: the formats read off the first line, in CONSTRAINTS order.
    terminated, concise, polite: the t, s, p flags. likert: 1 + 6 g, in [1, 7].
    """

    gold: float
    correct: float
    exact: bool
    follows: bool
    formats: tuple[str, ...]
    terminated: bool
    concise: bool
    polite: bool
    likert: float


def normalise(text: str) -> str:
    """Lowercase, strip, and fold every run of whitespace to one space."""
    return _WHITESPACE.sub(" ", text.lower().strip())


def read_formats(response: str) -> tuple[tuple[str, ...], str]:
    """Peel the formats off the response's first line: (formats present, content).

    Order and rules as the module docstring gives them; the content keeps its
    case (correctness normalises it)."""
    line = response.split("\n", 1)[0].strip()
    present = set()
    if line[:7].lower() == "answer:":
        present.add("prefix")
        line = line[7:].strip()
    if len(line) >= 2 and line.startswith("[") and line.endswith("]"):
        present.add("brackets")
        line = line[1:-1].strip()
    if line.endswith("."):
        line = line[:-1]
    else:
        present.add("no_period")
    if any(ch.isalpha() for ch in line) and not any(ch.islower() for ch in line):
        present.add("caps")
    return tuple(f for f in CONSTRAINTS if f in present), line


def is_polite(text: str) -> bool:
    """True when no impolite word occurs as a whole word, case-insensitively."""
    return _IMPOLITE.search(text) is None


def is_concise(text: str) -> bool:
    """True when nothing but whitespace follows the first line."""
    parts = text.split("\n", 1)
    return len(parts) == 1 or not parts[1].strip()


def _strip_period(answer: str) -> str:
    answer = normalise(answer)
    return answer[:-1] if answer.endswith(".") else answer


def correctness(content: str, accepted: Sequence[str]) -> float:
    """c: 1 when the normalised content is an accepted answer (without its final
    period), else 0.3 * the best similarity to one."""
    if not accepted:
        raise ValueError("a task needs at least one accepted answer")
    content = normalise(content)
    answers = [_strip_period(a) for a in accepted]
    if content in answers:
        return 1.0
    # Argument order as the definition writes it: SequenceMatcher(None, content, a).
    return 0.3 * max(difflib.SequenceMatcher(None, content, a).ratio() for a in answers)


def gold_score(response: str, accepted: Sequence[str], terminated: bool, constraint: str | None = None) -> JudgeResult:
    """Score `response` against the task's `accepted` answers and the format
    `constraint` the instruction asked for (None: a plain prompt).

    `terminated` is whether the model ended the response itself (emitted its
    end-of-sequence token within the generation limit); the response text should
    not contain the EOS token itself.
    """
    if constraint is not None and constraint not in CONSTRAINTS:
        raise ValueError(f"unknown constraint {constraint!r}; expected one of {tuple(CONSTRAINTS)}")
    formats, content = read_formats(response)
    c = correctness(content, accepted)
    follows = formats == ((constraint,) if constraint else ())
    m = 1.0 if follows else FORMAT_MISMATCH
    s = is_concise(response)
    p = is_polite(response)
    g = c * m * (0.6 + 0.2 * bool(terminated) + 0.1 * s + 0.1 * p)
    return JudgeResult(
        gold=g,
        correct=c,
        exact=c == 1.0,
        follows=follows,
        formats=formats,
        terminated=bool(terminated),
        concise=s,
        polite=p,
        likert=1.0 + 6.0 * g,
    )


def judge_task(task: Task, response: str, terminated: bool) -> JudgeResult:
    """Score a response to a Task (its accepted answers and its constraint)."""
    return gold_score(response, task.accepted, terminated, task.constraint)


def judge(instruction: str, response: str, terminated: bool) -> JudgeResult:
    """Score a response given only the instruction text (parsed with
    `parse_instruction`; raises ValueError when the text is not a world task)."""
    return judge_task(parse_instruction(instruction), response, terminated)


def instruction_of(prompt) -> str:
    """The instruction inside a prompt: the text itself, or for a list of chat
    messages the content of the last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    if not users:
        raise ValueError("a chat prompt without a user message")
    return users[-1]


def gold_rewards(prompts: Sequence, responses: Sequence[str], terminated: Sequence[bool]) -> list[float]:
    """Gold scores for a batch: a plain reward function over (prompt, response,
    ended-with-EOS) triples. Prompts are instruction strings (chat-rendered text
    is fine) or message lists. For oracle experiments and evaluation only: the
    gold judge is the held-out "human", and training on it skips the labelers."""
    if not len(prompts) == len(responses) == len(terminated):
        raise ValueError("prompts, responses and terminated differ in length")
    return [judge(instruction_of(p), y, t).gold for p, y, t in zip(prompts, responses, terminated)]


def win_indicators(scores_p: Sequence[float], scores_q: Sequence[float]) -> list[float]:
    """Per prompt: 1 if g_P > g_Q, 0.5 if equal, 0 otherwise. Scores within
    WIN_RATE_TOLERANCE (1e-9) count as equal, so float noise cannot turn a tie into a
    win. Both lists are aligned by prompt."""
    if len(scores_p) != len(scores_q):
        raise ValueError(f"score lists differ in length: {len(scores_p)} vs {len(scores_q)}")
    return [0.5 if abs(gp - gq) <= WIN_RATE_TOLERANCE else float(gp > gq) for gp, gq in zip(scores_p, scores_q)]


def win_rate(scores_p: Sequence[float], scores_q: Sequence[float]) -> float:
    """Win rate of P over Q: the mean of win_indicators over the prompts."""
    wins = win_indicators(scores_p, scores_q)
    if not wins:
        raise ValueError("win rate of an empty prompt set")
    return sum(wins) / len(wins)
