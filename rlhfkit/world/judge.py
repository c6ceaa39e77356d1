"""The gold judge: the "human" whose intent the pipeline tries to capture.

It is a plain function any user can call on any text; it never enters training
except through the simulated labelers (rlhfkit.world.labelers). Definition
(WORLD.md, "The gold judge"), for a response y with accepted answers A:

    line  = y before its first newline, normalised (lowercase, strip, fold
            whitespace runs to one space); answers are normalised the same way
    c     = 1 if line equals a normalised accepted answer,
            else 0.3 * max_a difflib.SequenceMatcher(None, line, a).ratio()
    t     = 1 if the model emitted its end-of-sequence token within the limit
    s     = 1 if nothing but whitespace follows the first line
    p     = 1 if none of IMPOLITE_WORDS occurs as a whole word (any case)
    g     = c * (0.6 + 0.2 t + 0.1 s + 0.1 p)          in [0, 1]
    Likert = 1 + 6 g                                  in [1, 7]

Manners multiply the answer: an empty or off-topic reply scores about 0 however
polite it is. The vectors in shared/world_judge_vectors.jsonl pin this down to
six decimals, and tests/test_world_judge.py checks every one.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rlhfkit.world.tasks import parse_instruction

IMPOLITE_WORDS: tuple[str, ...] = ("stupid", "idiot", "dumb", "shut", "hate", "ugly", "loser", "whatever")
_IMPOLITE = re.compile(r"\b(?:" + "|".join(IMPOLITE_WORDS) + r")\b", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")

# Scores closer than this count as equal in win rates: g is a product of floats
# and two different paths to "the same" score may differ in the last bit.
WIN_RATE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class JudgeResult:
    """The judge's verdict on one response.

    gold: g in [0, 1]. correct: c in [0, 1]. exact: c == 1 (the first line is an
    accepted answer). terminated, concise, polite: the t, s, p flags. likert:
    1 + 6 g, in [1, 7].
    """

    gold: float
    correct: float
    exact: bool
    terminated: bool
    concise: bool
    polite: bool
    likert: float


def normalise(text: str) -> str:
    """Lowercase, strip, and fold every run of whitespace to one space."""
    return _WHITESPACE.sub(" ", text.lower().strip())


def first_line(text: str) -> str:
    """The normalised text before the first newline (the part that is judged)."""
    return normalise(text.split("\n", 1)[0])


def is_polite(text: str) -> bool:
    """True when no impolite word occurs as a whole word, case-insensitively."""
    return _IMPOLITE.search(text) is None


def is_concise(text: str) -> bool:
    """True when nothing but whitespace follows the first line."""
    parts = text.split("\n", 1)
    return len(parts) == 1 or not parts[1].strip()


def correctness(response: str, accepted: Sequence[str]) -> float:
    """c: 1 for an exact (normalised) first line, else 0.3 * the best similarity."""
    if not accepted:
        raise ValueError("a task needs at least one accepted answer")
    line = first_line(response)
    answers = [normalise(a) for a in accepted]
    if line in answers:
        return 1.0
    # Argument order as WORLD.md writes it: SequenceMatcher(None, line, a).
    return 0.3 * max(difflib.SequenceMatcher(None, line, a).ratio() for a in answers)


def gold_score(response: str, accepted: Sequence[str], terminated: bool) -> JudgeResult:
    """Score `response` against the task's `accepted` answers.

    `terminated` is whether the model ended the response itself (emitted its
    end-of-sequence token within the generation limit); the response text should
    not contain the EOS token itself.
    """
    c = correctness(response, accepted)
    s = is_concise(response)
    p = is_polite(response)
    g = c * (0.6 + 0.2 * bool(terminated) + 0.1 * s + 0.1 * p)
    return JudgeResult(
        gold=g,
        correct=c,
        exact=c == 1.0,
        terminated=bool(terminated),
        concise=s,
        polite=p,
        likert=1.0 + 6.0 * g,
    )


def judge(instruction: str, response: str, terminated: bool) -> JudgeResult:
    """Score a response given only the instruction text (parsed with
    `parse_instruction`; raises ValueError when the text is not a world task)."""
    return gold_score(response, parse_instruction(instruction).accepted, terminated)


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


def win_rate(scores_p: Sequence[float], scores_q: Sequence[float]) -> float:
    """Win rate of P over Q: mean over prompts of 1 if g_P > g_Q, 0.5 if equal,
    0 otherwise. Scores within WIN_RATE_TOLERANCE (1e-9) count as equal, so
    float noise cannot turn a tie into a win. Both lists are aligned by prompt."""
    if len(scores_p) != len(scores_q):
        raise ValueError(f"score lists differ in length: {len(scores_p)} vs {len(scores_q)}")
    if not scores_p:
        raise ValueError("win rate of an empty prompt set")
    total = 0.0
    for gp, gq in zip(scores_p, scores_q):
        if abs(gp - gq) <= WIN_RATE_TOLERANCE:
            total += 0.5
        elif gp > gq:
            total += 1.0
    return total / len(scores_p)
