"""Verifiable rewards: a checker in place of a reward model (RL from verifiable rewards,
as in DeepSeek-R1 and Tulu 3's RLVR). Final-answer extraction, exact and numeric
matching, and a format check, shipped as batched reward functions with the signature
every rlhfkit reward function has, `f(prompts, responses, **kwargs) -> scores`:

    rlhfkit ppo ... --reward_functions rlhfkit.rewards.verifiers:answer_reward rlhfkit.rewards.verifiers:format_reward \\
                    --reward_weights format_reward=0.1

The gold answer is read from each prompt record's `answer` column (it reaches the
function as `metadata[i]["answer"]`). Each function is logged on its own as
`objective/scores_<name>`: for `answer_reward` that is the batch's accuracy, for
`format_reward` the share of well-formed responses. Build other combinations with
`make_answer_reward(extract=..., match=..., answer_key=...)`. Plain Python: no torch in
this module.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from fractions import Fraction

_ANSWER_LINE = re.compile(r"^\s*(?:final\s+)?answer\s*[:=]\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|[-+]?\.\d+")


def answer_line(text: str) -> str | None:
    """The text after the last `Answer:` line ("Final answer:", "answer =" too), or None."""
    found = _ANSWER_LINE.findall(text)
    return found[-1] if found else None


def boxed(text: str) -> str | None:
    r"""The content of the last \boxed{...} (nested braces kept), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None  # unbalanced: no answer


def last_number(text: str) -> str | None:
    """The last number in the text (1,234 / -5 / 2.5 / 3/4), or None."""
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def auto(text: str) -> str | None:
    """The `Answer:` line, else the last \\boxed{}, else the last number."""
    for extract in (answer_line, boxed, last_number):
        got = extract(text)
        if got:
            return got
    return None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "answer_line": answer_line, "boxed": boxed, "last_number": last_number, "auto": auto}


def normalize(answer: str) -> str:
    r"""Case, surrounding space, $...$, \text{}, a trailing period and inner spaces dropped."""
    s = answer.replace("$", "").strip()
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    s = s.rstrip(".").strip()
    return re.sub(r"\s+", "", s).lower()


def parse_number(answer: str) -> float | None:
    """A number from an answer string ("1,234", "-2.50", "3/4", "50%" -> 0.5), or None
    (also for one too large for a float, "1e400": a policy's answer must never end a run)."""
    s = normalize(answer).replace(",", "")
    percent = s.endswith("%")
    s = s.rstrip("%")
    try:
        value = float(Fraction(s))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value / 100 if percent else value


def exact_match(predicted: str | None, gold: str) -> bool:
    """The normalised strings are equal."""
    return predicted is not None and normalize(predicted) == normalize(str(gold))


def numeric_match(predicted: str | None, gold: str, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Both parse as numbers and agree within tolerance; otherwise the exact match."""
    if predicted is None:
        return False
    a, b = parse_number(predicted), parse_number(str(gold))
    if a is None or b is None:
        return exact_match(predicted, gold)
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


MATCHERS: dict[str, Callable[[str | None, str], bool]] = {"exact": exact_match, "numeric": numeric_match}


def make_answer_reward(extract: str = "auto", match: str = "numeric", answer_key: str = "answer",
                       name: str | None = None) -> Callable:
    """A batched reward: 1.0 where the extracted final answer matches metadata[i][answer_key], else 0.0."""
    if extract not in EXTRACTORS or match not in MATCHERS:
        raise ValueError(f"extract must be one of {sorted(EXTRACTORS)} and match one of {sorted(MATCHERS)}")
    extractor, matcher = EXTRACTORS[extract], MATCHERS[match]

    def reward(prompts: Sequence, responses: Sequence[str], metadata: Sequence[dict]) -> list[float]:
        scores = []
        for i, response in enumerate(responses):
            if answer_key not in metadata[i]:
                raise ValueError(f"verifier: prompt record {i} has no {answer_key!r} column to check against")
            scores.append(float(matcher(extractor(response), metadata[i][answer_key])))
        return scores

    reward.__name__ = name or f"{match}_{extract}_reward"
    return reward


answer_reward = make_answer_reward("auto", "numeric", name="answer_reward")
exact_answer_reward = make_answer_reward("auto", "exact", name="exact_answer_reward")
boxed_answer_reward = make_answer_reward("boxed", "numeric", name="boxed_answer_reward")


def format_reward(prompts: Sequence, responses: Sequence[str]) -> list[float]:
    """1.0 when the response ends with exactly one non-empty `Answer:` line, its last line,
    after some working; else 0.0."""
    scores = []
    for response in responses:
        lines = [line for line in response.strip().splitlines() if line.strip()]
        ok = (len(lines) >= 2 and len(_ANSWER_LINE.findall(response)) == 1
              and _ANSWER_LINE.fullmatch(lines[-1]) is not None and bool(answer_line(lines[-1])))
        scores.append(float(ok))
    return scores
