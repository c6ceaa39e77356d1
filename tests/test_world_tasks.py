"""Task families: word lists, ranges, answers, and parse_instruction round trips."""
import random
import subprocess
import sys

import pytest

from rlhfkit.world.tasks import (
    ANIMALS, COLORS, CONSONANTS, FAMILIES, FRUITS, GENERATORS, VOWELS, WORDS, build_task, parse_instruction,
    pseudo_word, sample_task,
)


def test_word_lists():
    assert len(FRUITS) == 16 and len(ANIMALS) == 24 and len(COLORS) == 16
    assert WORDS == FRUITS + ANIMALS + COLORS and len(set(WORDS)) == len(WORDS)
    assert FRUITS[0] == "apple" and ANIMALS[-1] == "swan" and COLORS[-1] == "violet"
    assert tuple(GENERATORS) == FAMILIES


def test_pseudo_words():
    rng = random.Random(0)
    words = [pseudo_word(rng) for _ in range(2000)]
    assert {len(w) for w in words} == {4, 6}
    assert 0.45 < sum(len(w) == 4 for w in words) / len(words) < 0.55
    for w in words:
        assert all(c in CONSONANTS for c in w[::2]) and all(v in VOWELS for v in w[1::2])


def test_examples_from_world_md():
    assert parse_instruction("Count from 7 to 10.").answer == "7, 8, 9, 10."
    assert parse_instruction("Sort these words: pear, cat, blue.").answer == "blue, cat, pear."
    assert parse_instruction("Say owl 3 times.").answer == "owl owl owl."
    assert parse_instruction("Spell tavo backwards.").answer == "ovat."
    assert "teal." in parse_instruction("Name a color.").accepted
    assert parse_instruction("What is 53 plus 16?").answer == "53 plus 16 is 69."
    assert parse_instruction("Which is larger, 29 or 631?").answer == "631 is larger."
    assert parse_instruction("Say hello to Tezu.").answer == "Hello, Tezu! Nice to meet you."


def test_ranges():
    rng = random.Random(1)
    for _ in range(300):
        a, b = sample_task(rng, "add").args
        assert 0 <= a <= 99 and 0 <= b <= 99
        a, b = sample_task(rng, "compare").args
        assert a != b and 0 <= a <= 999 and 0 <= b <= 999
        a, b = sample_task(rng, "count").args
        assert 0 <= a <= 999 and 2 <= b - a <= 6
        words = sample_task(rng, "sort").args
        assert len(set(words)) == 3 and set(words) <= set(WORDS)
        w, n = sample_task(rng, "repeat").args
        assert 2 <= n <= 5
        task = sample_task(rng, "greet")
        assert task.args[0][0].isupper() and task.args[0][1:].islower()


@pytest.mark.parametrize("family", FAMILIES)
def test_parse_round_trip(family):
    rng = random.Random(family)
    for _ in range(100):
        task = sample_task(rng, family)
        assert parse_instruction(task.instruction) == task
        for answer in task.accepted:
            assert answer.endswith(".") and "\n" not in answer
        # A chat-rendered prompt parses too.
        assert parse_instruction(f"<|user|>\n{task.instruction}\n<|assistant|>\n") == task


def test_name_canonical_is_first_member():
    task = build_task("name", "fruit")
    assert task.instruction == "Name a fruit." and task.answer == "apple."
    assert task.accepted == tuple(f"{f}." for f in FRUITS)
    assert parse_instruction("Name a animal.").family == "name"


@pytest.mark.parametrize("text", ["", "Hello there.", "What is 2 minus 3?", "Count from 9 to 3.", "Name a car."])
def test_parse_rejects_unknown_text(text):
    with pytest.raises(ValueError):
        parse_instruction(text)


def test_tasks_are_hashable():
    rng = random.Random(2)
    assert len({sample_task(rng) for _ in range(50)}) > 1


def test_the_world_is_a_simulator_without_torch():
    """rlhfkit/world/ holds the simulator only; the experiment that trains in it
    (rlhfkit/experiment/) is the part that needs torch."""
    modules = ", ".join(f"rlhfkit.world.{m}" for m in ("tasks", "judge", "demonstrators", "labelers", "webtext",
                                                       "splits"))
    code = f"import sys, rlhfkit.world, {modules}; sys.exit(int('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
