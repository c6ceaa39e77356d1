"""The gold judge (world version 2) against its pinned vectors
(tests/data/world_judge_vectors_v2.jsonl: 49 responses with six-decimal scores)
and hand-made cases."""
import json
import random
from pathlib import Path

import pytest

from rlhfkit.world.demonstrators import near_miss
from rlhfkit.world.judge import gold_rewards, gold_score, judge, normalise, read_formats, win_rate
from rlhfkit.world.tasks import CONSTRAINTS, FAMILIES, apply_format, build_task, constrain, parse_instruction, sample_task

VECTORS = Path(__file__).resolve().parent / "data" / "world_judge_vectors_v2.jsonl"


def _vectors():
    return [json.loads(line) for line in VECTORS.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("vec", _vectors(), ids=lambda v: f"{v['family']}-{v['note']}")
def test_judge_vectors(vec):
    result = gold_score(vec["response"], vec["accepted"], vec["terminated"], vec["constraint"])
    assert result.gold == pytest.approx(vec["gold"], abs=1e-6)
    assert result.correct == pytest.approx(vec["correct"], abs=1e-6)
    assert result.follows == vec["follows"]
    assert result.likert == pytest.approx(1 + 6 * vec["gold"], abs=1e-5)
    # The instruction alone gives the same accepted answers and constraint.
    task = parse_instruction(vec["instruction"])
    assert task.accepted == tuple(vec["accepted"]) and task.constraint == vec["constraint"]
    assert judge(vec["instruction"], vec["response"], vec["terminated"]) == result


def test_vectors_cover_every_family_and_constraint():
    vectors = _vectors()
    assert len(vectors) == 49
    assert {v["family"] for v in vectors} == set(FAMILIES)
    assert {v["constraint"] for v in vectors} == {None, *CONSTRAINTS}


@pytest.mark.parametrize("constraint", [None, *CONSTRAINTS])
@pytest.mark.parametrize("family", FAMILIES)
def test_the_asked_format_scores_one_and_every_other_half(family, constraint):
    rng = random.Random(f"{family}/{constraint}")
    task = constrain(sample_task(rng, family), constraint)
    if constraint == "caps" and family == "count":
        return  # never drawn: count's answers have no letters
    assert judge(task.instruction, task.formatted_answer, True).gold == pytest.approx(1.0)
    for other in [None, *CONSTRAINTS]:
        if other == constraint or (other == "caps" and family == "count"):
            continue
        r = judge(task.instruction, apply_format(task.answer, other), True)
        assert r.exact and not r.follows and r.gold == pytest.approx(0.5), other


def test_read_formats_peels_in_order():
    assert read_formats("Answer: [HELLO, TAVO! NICE TO MEET YOU]") == (
        ("caps", "brackets", "prefix", "no_period"), "HELLO, TAVO! NICE TO MEET YOU")
    assert read_formats("[ answer: 7, 8. ]\nmore") == (("brackets",), "answer: 7, 8")  # prefix only outside
    assert read_formats("7, 8, 9.") == ((), "7, 8, 9")  # no letters: never caps
    assert read_formats("") == (("no_period",), "")


@pytest.mark.parametrize("family", FAMILIES)
def test_hand_made_responses(family):
    rng = random.Random(family)
    task = sample_task(rng, family)
    ans = task.answer
    cases = {
        ans: (True, 1.0),
        f"  {ans}  \n  \n": (True, 1.0),  # spaces, trailing blank lines
        ans + "\nI hope this helps!": (True, 0.9),  # verbose
        ans + "\nShut up.": (True, 0.8),  # rude second line: not concise, not polite
        "": (True, 0.0),
    }
    for response, (terminated, gold) in cases.items():
        assert gold_score(response, task.accepted, terminated).gold == pytest.approx(gold), response
    # No EOS: t = 0.
    assert gold_score(ans, task.accepted, False).gold == pytest.approx(0.8)
    assert gold_score(ans + "\nwhatever", task.accepted, False).gold == pytest.approx(0.6)
    # Rude on the first line: inexact, so c < 0.3 and the score collapses.
    rude = gold_score("Whatever. " + ans, task.accepted, True)
    assert not rude.exact and not rude.polite and rude.correct < 0.3
    assert rude.gold == pytest.approx(rude.correct * 0.9)
    miss = gold_score(near_miss(task, rng), task.accepted, True)
    assert not miss.exact and 0.1 < miss.correct < 0.3
    assert miss.gold == pytest.approx(miss.correct)


def test_result_flags():
    task = build_task("add", 2, 3)
    r = gold_score("2 plus 3 is 5.\nBye, loser.", task.accepted, True)
    assert (r.exact, r.terminated, r.concise, r.polite) == (True, True, False, False)
    assert r.likert == pytest.approx(1 + 6 * 0.8)
    # Whole words only: "hateful" and "shutter" are not impolite.
    assert gold_score("2 plus 3 is 5.", task.accepted, True).polite
    assert gold_score("hateful shutter", task.accepted, True).polite
    assert not gold_score("HATE", task.accepted, True).polite


def test_name_accepts_every_member():
    task = parse_instruction("Name a color.")
    for member in task.accepted:
        assert judge("Name a color.", member, True).gold == 1.0
    assert judge("Name a color.", "cat.", True).gold < 0.3


def test_normalise():
    assert normalise("  Hello,\t\tTavo!   Nice ") == "hello, tavo! nice"


def test_win_rate():
    assert win_rate([1.0, 0.5, 0.2], [0.9, 0.5, 0.3]) == pytest.approx(0.5)
    # Float noise within 1e-9 is a tie.
    assert win_rate([0.1 + 0.2], [0.3]) == 0.5
    with pytest.raises(ValueError):
        win_rate([1.0], [])


def test_gold_rewards_batch():
    prompts = ["What is 2 plus 3?", [{"role": "user", "content": "Name a fruit."}], "<|user|>\nSay owl 2 times.\n<|assistant|>\n"]
    scores = gold_rewards(prompts, ["2 plus 3 is 5.", "kiwi.", "owl owl."], [True, False, True])
    assert scores == pytest.approx([1.0, 0.8, 1.0])
