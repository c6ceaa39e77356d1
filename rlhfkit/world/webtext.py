"""Generated "web text": the pretraining corpus of the base models (docs/world.md, "Web text").

GPT-3 learned from the internet to add and spell, and also that a question is
often followed by another question, a digression, an insult, or a reply that
runs on. This corpus is built to give the base models the same two traits:

- capable: every instruction family appears with correct answers (the correct
  chat exchanges, rude replies that still answer, answers in other formats, and
  plain sentences stating the facts), so a large enough model learns to add,
  count, sort and reverse;
- misaligned: when prompted with the chat template, the continuation the corpus
  teaches is often wrong, in the wrong format, rude, a digression, or runs on
  without the end-of-sequence token, so a base model fails the gold judge the
  ways GPT-3 failed its raters.

Document kinds and their default weights (WebTextMix; configurable):

    worksheet   0.15  instruction lines followed by more instructions
    digression  0.10  an instruction followed by chatter that never answers
    rude        0.10  an instruction followed by a rude reply (impolite words)
    chat        0.45  1-3 exchanges rendered with the chat template
    plain       0.10  plain sentences about the words and the tasks' facts
    review      0.10  an instruction, answers (A) and (B), and which is better
    critique    0     a review that names its checks before the verdict (the judge's reading;
                      absent from the base models' web text, see JUDGE_MIX)

World version 2: half of all instructions carry an explicit constraint (the
"webtext" split draws them like every split). A chat document writes its answers
in one house format drawn uniformly from plain, caps, brackets, prefix and
no_period, whatever its instructions ask: so a base model can write every format
(and continues the format of an example it is shown) but has not learnt to match
the format to the request. Review documents are the web's judgements:

    {instruction}
    (A) {answer}
    (B) {answer}
    Better: (A)

naming the answer with the higher gold score with probability review_accuracy
(0.8), pairs of equal score left out; so a base model learns to judge a little,
and AI feedback (rlhfkit.label.ai) reads the same template.

Inside chat exchanges the assistant turn is correct (0.50), wrong (0.20: a near
miss or another instance's answer), right but in another format (0.15), rude
(0.08) or a digression (0.07); independently, 60% of assistant turns run on:
more lines follow the answer and the turn's end-of-sequence marker is removed.
So a chat-prompted base model that imitates the corpus answers exactly and
stops cleanly only about 0.5 * 0.4 = 20% of the time.

Every task comes from the "webtext" split, disjoint from the SFT, comparison,
PPO and evaluation instances (rlhfkit.world.splits).
"""
from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rlhfkit.io import read_line_list
from rlhfkit.world.demonstrators import CHATTER, correct_answer, near_miss
from rlhfkit.world.judge import WIN_RATE_TOLERANCE, judge_task
from rlhfkit.world.splits import iter_split
from rlhfkit.world.tasks import ANIMALS, COLORS, CONSTRAINTS, FRUITS, KINDS, WORDS, Task, apply_format

DEFAULT_EOS = "<|endoftext|>"
CONSTITUTION = Path(__file__).with_name("constitution.txt")
DOC_KINDS: tuple[str, ...] = ("worksheet", "digression", "rude", "chat", "plain", "review", "critique")
# Answer formats of the web: plain (None) and the four formats of the constraints.
WEB_FORMATS: tuple[str | None, ...] = (None, *CONSTRAINTS)
ChatRender = Callable[[list[dict]], str]


@dataclass
class WebTextMix:
    """Mixture weights of the web text (normalised within each group)."""

    # Document kinds.
    worksheet: float = 0.15  # instruction lines followed by more instructions
    digression: float = 0.10  # instruction, then chatter that never answers
    rude: float = 0.10  # instruction, then a rude reply
    chat: float = 0.45  # chat-template exchanges
    plain: float = 0.10  # plain sentences about the words and facts
    review: float = 0.10  # judgements: an instruction, answers (A) and (B), which is better
    critique: float = 0.0  # judgements that name their checks first (0 here: only the judge reads them)
    # What an assistant turn in a chat exchange holds.
    chat_correct: float = 0.50  # the canonical answer (capability)
    chat_wrong: float = 0.20  # a near miss or the answer to another instance
    chat_other_format: float = 0.15  # right content, wrong format ("69", "deer fig plum")
    chat_rude: float = 0.08  # a rude reply, sometimes with the answer
    chat_digression: float = 0.07  # chatter that never answers
    # Probability an assistant turn runs on: more lines after the answer, no EOS.
    chat_run_on: float = 0.60
    max_exchanges: int = 3  # exchanges per chat document: 1..max_exchanges
    rude_answers: float = 0.4  # share of rude replies that still contain the answer
    review_accuracy: float = 0.8  # P(a review names the answer with the higher gold score)
    max_reviews: int = 3  # reviews per review document: 1..max_reviews
    critique_checks: float = 0.5  # share of critiques that write their checks (the rest give the verdict only)
    critique_accuracy: float = 0.95  # P(a critique names the answer with the higher gold score)
    critique_principle: float = 0.3  # share of critiques headed by the critic's guideline (CONSTITUTION)

    def doc_weights(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in DOC_KINDS}

    def answer_weights(self) -> dict[str, float]:
        return {
            "correct": self.chat_correct,
            "wrong": self.chat_wrong,
            "other_format": self.chat_other_format,
            "rude": self.chat_rude,
            "digression": self.chat_digression,
        }


def default_chat_render(messages: list[dict], eos_token: str = DEFAULT_EOS) -> str:
    """Render messages as rlhfkit.models.tokenizer.DEFAULT_CHAT_TEMPLATE does (with
    EOS "<|endoftext|>"): "<|role|>\\n{content}", EOS after assistant turns, "\\n"
    after every message. Kept here as a string function so the world needs no
    tokenizer; pass `lambda m: tok.apply_chat_template(m, tokenize=False)` to
    render with a real tokenizer's template instead."""
    out = []
    for m in messages:
        out.append(f"<|{m['role']}|>\n{m['content']}")
        if m["role"] == "assistant":
            out.append(eos_token)
        out.append("\n")
    return "".join(out)


# ---------------------------------------------------------------------------
# Text pools. Digressions are polite; rude replies each hold an impolite word.
# ---------------------------------------------------------------------------
_DIGRESSIONS = (
    "That reminds me of the {fruit} I had for lunch yesterday.",
    "Have you ever seen {an_animal} up close? They are wonderful.",
    "My favourite color is {color}, by the way.",
    "Numbers are funny things when you think about them.",
    "Let me tell you a story first.",
    "Before we get to that, I was thinking about the weather.",
    "It is a nice day to sit under {a_fruit} tree.",
    "I once painted my door {color}.",
    "There is {an_animal} in my garden that sings every morning.",
    "Questions like this make me think of my school days.",
    "My neighbour grows {fruits} and gives them away.",
    "Some people say {an_animal} can count, you know.",
)
_RUDE = (
    "Whatever.",
    "Shut up and figure it out yourself.",
    "What a stupid question.",
    "Only an idiot would ask that.",
    "I hate questions like this.",
    "Don't be dumb.",
    "Ask someone else, loser.",
    "That is an ugly little question.",
    "Whatever, I am not doing your homework, idiot.",
)
_WORKSHEET_HEADERS = ("Worksheet {n}", "Homework:", "Practice questions", "Exercises for today", "Quiz {n}", "")


def _an(word: str) -> str:
    """The word with its indefinite article: "an owl", "a fox"."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _plural(word: str) -> str:
    return word[:-1] + "ies" if word.endswith("y") and word[-2] not in "aeiou" else word + "s"


def _fill(template: str, rng: random.Random) -> str:
    fruit, animal, color = rng.choice(FRUITS), rng.choice(ANIMALS), rng.choice(COLORS)
    return template.format(fruit=fruit, a_fruit=_an(fruit), fruits=_plural(fruit), animal=animal,
                           an_animal=_an(animal), color=color)


def _digression(rng: random.Random) -> str:
    return " ".join(_fill(t, rng) for t in rng.sample(_DIGRESSIONS, rng.randint(2, 4)))


def _rude(task: Task, rng: random.Random, with_answer: float) -> str:
    insult = rng.choice(_RUDE)
    if rng.random() >= with_answer:
        return insult
    answer = task.answer if task.family != "name" else rng.choice(task.accepted)
    return rng.choice((f"{insult} {answer}", f"{answer}\n{insult}"))


# Right content, other format: what a correct answer looks like elsewhere on the web.
def _other_format(task: Task, rng: random.Random) -> str:
    f, args = task.family, task.args
    if f == "add":
        a, b = args
        options = (f"{a + b}", f"The answer is {a + b}", f"{a} + {b} = {a + b}")
    elif f == "compare":
        hi, lo = max(args), min(args)
        options = (f"{hi}", f"The larger number is {hi}", f"{hi} > {lo}")
    elif f == "count":
        nums = [str(i) for i in range(args[0], args[1] + 1)]
        options = (" ".join(nums), ",".join(nums), "\n".join(nums))
    elif f == "reverse":
        rev = args[0][::-1]
        options = (rev, " ".join(rev), f"Backwards it is {rev}")
    elif f == "sort":
        words = sorted(args)
        options = (" ".join(words), "\n".join(words), " ".join(f"{i}. {w}" for i, w in enumerate(words, 1)))
    elif f == "repeat":
        w, n = args
        options = (", ".join([w] * n) + ".", " ".join([w + "!"] * n), f"{w} x{n}")
    elif f == "name":
        x = rng.choice(KINDS[args[0]])
        options = (f"A {x}.", f"How about {x}?", f"{x.capitalize()}!")
    else:  # greet
        (name,) = args
        options = (f"Hi {name}.", f"Hello {name}", f"Greetings, {name}.")
    return rng.choice(options)


def _wrong(task: Task, tasks: Iterator[Task], rng: random.Random) -> str:
    if rng.random() < 0.6 or task.family == "name":
        return near_miss(task, rng)
    # The answer to another instance of the same family (a confident wrong answer).
    for _ in range(64):
        other = next(tasks)
        if other.family == task.family and other.instruction != task.instruction:
            return other.answer
    return near_miss(task, rng)


def _fact(task: Task, rng: random.Random) -> str:
    """A plain sentence stating the fact behind a task (capability without a prompt)."""
    f, args = task.family, task.args
    if f == "add":
        return task.answer
    if f == "compare":
        return f"{max(args)} is larger than {min(args)}."
    if f == "count":
        return f"Counting from {args[0]} to {args[1]} goes {task.answer}"
    if f == "reverse":
        return f"{args[0]} spelled backwards is {args[0][::-1]}."
    if f == "sort":
        return f"In alphabetical order: {task.answer}"
    if f == "repeat":
        return f"She said {args[0]} {args[1]} times: {task.answer}"
    if f == "name":
        return f"{_an(rng.choice(KINDS[args[0]])).capitalize()} is {_an(args[0])}."
    return f"We said hello to {args[0]}."


def _word_sentence(rng: random.Random) -> str:
    """A plain sentence about the word lists."""
    choice = rng.randrange(4)
    if choice == 0:
        kind = rng.choice(tuple(KINDS))
        w = rng.choice(KINDS[kind])
        return f"{_an(w).capitalize()} is {_an(kind)}." if kind != "color" else f"{w.capitalize()} is a color."
    if choice == 1:
        w1, w2 = sorted(rng.sample(WORDS, 2))
        return f"{w1.capitalize()} comes before {w2} in the alphabet."
    if choice == 2:
        w = rng.choice(WORDS)
        return f"The word {w} has {len(w)} letters."
    return f"{_an(rng.choice(COLORS)).capitalize()} {rng.choice(ANIMALS)} ate {_an(rng.choice(FRUITS))}."


# ---------------------------------------------------------------------------
# Documents, one function per kind
# ---------------------------------------------------------------------------
def _doc_worksheet(tasks, rng, mix, render, eos) -> str:
    header = rng.choice(_WORKSHEET_HEADERS).format(n=rng.randint(1, 30))
    numbered = rng.random() < 0.5
    lines = [f"{i}. {next(tasks).instruction}" if numbered else next(tasks).instruction
             for i in range(1, rng.randint(3, 8) + 1)]
    return "\n".join(([header] if header else []) + lines)


def _doc_digression(tasks, rng, mix, render, eos) -> str:
    return "\n\n".join(f"{next(tasks).instruction}\n{_digression(rng)}" for _ in range(rng.randint(1, 2)))


def _doc_rude(tasks, rng, mix, render, eos) -> str:
    items = []
    for _ in range(rng.randint(1, 2)):
        task = next(tasks)
        items.append(f"{task.instruction}\n{_rude(task, rng, mix.rude_answers)}")
    return "\n\n".join(items)


def _run_on(tasks, rng) -> str:
    """What follows an answer that does not stop: chatter, a digression, or the
    next instruction, as a model continuing a web page would write."""
    pieces = []
    for _ in range(rng.randint(1, 3)):
        pick = rng.randrange(3)
        pieces.append(rng.choice(CHATTER) if pick == 0 else _digression(rng) if pick == 1 else next(tasks).instruction)
    return "\n".join(pieces)


def _assistant_turn(task, tasks, rng, mix, house_format) -> str:
    weights = mix.answer_weights()
    kind = rng.choices(tuple(weights), tuple(weights.values()))[0]
    if kind == "correct":
        return apply_format(task.answer if task.family != "name" else rng.choice(task.accepted), house_format)
    if kind == "wrong":
        return apply_format(_wrong(task, tasks, rng), house_format)
    if kind == "other_format":
        return _other_format(task, rng)
    if kind == "rude":
        return _rude(task, rng, mix.rude_answers)
    return _digression(rng)


def _doc_chat(tasks, rng, mix, render, eos) -> str:
    parts = []
    house_format = rng.choice(WEB_FORMATS)  # the page's style, whatever was asked
    for _ in range(rng.randint(1, mix.max_exchanges)):
        task = next(tasks)
        content = _assistant_turn(task, tasks, rng, mix, house_format)
        run_on = rng.random() < mix.chat_run_on
        if run_on:
            content += "\n" + _run_on(tasks, rng)
        text = render([{"role": "user", "content": task.instruction}, {"role": "assistant", "content": content}])
        if run_on and eos:
            text = text.replace(eos, "")  # the turn never ends: no end-of-sequence marker
        parts.append(text)
    return "".join(parts)


def _doc_plain(tasks, rng, mix, render, eos) -> str:
    sentences = [_fact(next(tasks), rng) if rng.random() < 0.5 else _word_sentence(rng) for _ in range(rng.randint(3, 6))]
    return " ".join(sentences)


def _review_answer(task: Task, tasks, rng: random.Random) -> str:
    """One single-line answer to review: right or wrong content (even odds), in
    the asked format half the time, else in a format drawn uniformly."""
    content = correct_answer(task, rng) if rng.random() < 0.5 else _wrong(task, tasks, rng)
    fmt = task.constraint if rng.random() < 0.5 else rng.choice(WEB_FORMATS)
    return apply_format(content, fmt)


def review_text(instruction: str, answer_a: str, answer_b: str, better: str | None = None) -> str:
    """The review template; `better` "A" or "B" completes the verdict, None leaves
    it open after "Better: (" (the AI labeler's prompt)."""
    head = f"{instruction}\n(A) {answer_a}\n(B) {answer_b}\nBetter: ("
    return head if better is None else f"{head}{better})"


def _doc_review(tasks, rng, mix, render, eos) -> str:
    reviews = []
    for _ in range(rng.randint(1, mix.max_reviews)):
        task = next(tasks)
        for _try in range(8):  # pairs of equal gold score are left out
            a, b = _review_answer(task, tasks, rng), _review_answer(task, tasks, rng)
            ga, gb = (judge_task(task, y, True).gold for y in (a, b))
            if abs(ga - gb) > WIN_RATE_TOLERANCE:
                break
        else:
            continue
        right = "A" if ga > gb else "B"
        better = right if rng.random() < mix.review_accuracy else ("B" if right == "A" else "A")
        reviews.append(review_text(task.instruction, a, b, better))
    return "\n\n".join(reviews) or next(tasks).instruction


# ---------------------------------------------------------------------------
# Critiques: reviews that say what they checked before the verdict
# ---------------------------------------------------------------------------
def _critique_response(task: Task, tasks, rng: random.Random) -> tuple[str, bool]:
    """A response as a chat model writes one, and whether it ended: right content
    or a wrong one, in the asked format or another, then nothing, a line of chatter,
    an insult, or a run-on that never ends."""
    content = correct_answer(task, rng) if rng.random() < 0.5 else _wrong(task, tasks, rng)
    fmt = task.constraint if task.constraint and rng.random() < 0.5 else rng.choice(WEB_FORMATS)
    text = apply_format(content, fmt)
    tail = rng.random()
    if tail < 0.30:
        return f"{text}\n{rng.choice(CHATTER)}", True
    if tail < 0.37:
        return f"{text}\n{rng.choice(_RUDE)}", True
    if tail < 0.47:
        return f"{text}\n{_run_on(tasks, rng)}", False
    return text, True


def critique_checks(task: Task, responses: tuple[str, str], terminated: tuple[bool, bool]) -> str:
    """What a careful reviewer writes before the verdict, each check named: the asked
    format and the key (the right answer), then per response whether its first line
    is right, the formats it carries and whether they are the asked ones, how it ends
    (one line, more lines, or runs on without ending), whether it is rude, and a
    grade that adds them up in the order they matter (right 4, asked format 2, one
    clean polite line 1)::

        Asked: caps. Key: 594 is larger.
        (A) 594 is larger. Right, plain, not asked, one line. Grade 5.
        (B) 141 IS LARGER. Wrong, caps, asked, one line. Grade 3.

    Each response's first line is copied before its checks, so what is checked sits next
    to the check (a small model reads what is near better than what is far)."""
    key = task.answer if task.family != "name" else task.accepted[0]
    lines = [f"Asked: {task.constraint or 'plain'}. Key: {key}"]
    for letter, y, ended in zip(CHOICE_LETTERS, responses, terminated):
        verdict = judge_task(task, y, ended)
        shape = "runs on" if not ended else "one line" if verdict.concise else "more lines"
        rude = "" if verdict.polite else ", rude"
        grade = 4 * verdict.exact + 2 * verdict.follows + (ended and verdict.concise and verdict.polite)
        first = y.split("\n", 1)[0].strip()
        lines.append(f"({letter}) {first} {'Right' if verdict.exact else 'Wrong'}, {'+'.join(verdict.formats) or 'plain'}, "
                     f"{'asked' if verdict.follows else 'not asked'}, {shape}{rude}. Grade {grade}.")
    return "\n".join(lines)


CHOICE_LETTERS = ("A", "B")


def critique_text(instruction: str, answer_a: str, answer_b: str, checks: str | None, better: str | None = None) -> str:
    """A critique: the pair, the checks (None: a verdict without them), "Better: (",
    and the letter when `better` is given."""
    head = f"{instruction}\n(A) {answer_a}\n(B) {answer_b}\n"
    head += f"{checks}\nBetter: (" if checks else "Better: ("
    return head if better is None else f"{head}{better})"


def _doc_critique(tasks, rng, mix, render, eos) -> str:
    task = next(tasks)
    for _try in range(8):  # pairs of equal gold score are left out, as in reviews
        (a, ta), (b, tb) = _critique_response(task, tasks, rng), _critique_response(task, tasks, rng)
        ga, gb = judge_task(task, a, ta).gold, judge_task(task, b, tb).gold
        if abs(ga - gb) > WIN_RATE_TOLERANCE:
            break
    else:
        return task.instruction
    right = "A" if ga > gb else "B"
    better = right if rng.random() < mix.critique_accuracy else ("B" if right == "A" else "A")
    checks = critique_checks(task, (a, b), (ta, tb)) if rng.random() < mix.critique_checks else None
    text = critique_text(task.instruction, a, b, checks, better)
    return f"{rng.choice(constitution())}\n{text}" if rng.random() < mix.critique_principle else text


@functools.cache
def constitution() -> tuple[str, ...]:
    """The world's principles (rlhfkit/world/constitution.txt: one a line, # comments):
    the critics' guidelines, and the AI labeler's constitution."""
    return tuple(read_line_list(CONSTITUTION))


# The judge's reading (`rlhfkit world pretrain --models judge`): 70% critiques, 80% of them
# with their checks written out, the rest the base models' web text in its usual
# proportions, so the judge keeps its knowledge of the tasks (which the key needs).
JUDGE_MIX = WebTextMix(worksheet=0.045, digression=0.03, rude=0.03, chat=0.135, plain=0.03, review=0.03, critique=0.7,
                       critique_checks=0.8)


_DOC_MAKERS = {
    "worksheet": _doc_worksheet,
    "digression": _doc_digression,
    "rude": _doc_rude,
    "chat": _doc_chat,
    "plain": _doc_plain,
    "review": _doc_review,
    "critique": _doc_critique,
}


def make_webtext_labeled(
    n_docs: int,
    seed: int,
    chat_render: ChatRender | None = None,
    mix: WebTextMix | None = None,
    *,
    eos_token: str = DEFAULT_EOS,
) -> list[dict]:
    """Like `make_webtext`, but rows {"text", "kind"} with the document kind."""
    mix = mix or WebTextMix()
    render = chat_render or (lambda messages: default_chat_render(messages, eos_token))
    rng = random.Random(f"rlhfkit.world.webtext/{seed}")
    tasks = iter_split("webtext", seed, random_families=True)
    weights = mix.doc_weights()
    kinds = rng.choices(tuple(weights), tuple(weights.values()), k=n_docs)
    return [{"text": _DOC_MAKERS[kind](tasks, rng, mix, render, eos_token), "kind": kind} for kind in kinds]


def make_webtext(
    n_docs: int,
    seed: int,
    chat_render: ChatRender | None = None,
    mix: WebTextMix | None = None,
    *,
    eos_token: str = DEFAULT_EOS,
) -> list[str]:
    """`n_docs` web-text documents (see the module docstring for the mixture).

    chat_render(messages) renders one user/assistant exchange; the default
    (`default_chat_render`) matches the project's default chat template with EOS
    "<|endoftext|>". Run-on turns have every occurrence of `eos_token` removed
    from their rendering, so pass the renderer's EOS string when it is not
    "<|endoftext|>". Documents do not end with an EOS of their own: the
    pretraining step decides how documents are separated. Deterministic in
    (n_docs, seed, mix, renderer).
    """
    return [row["text"] for row in make_webtext_labeled(n_docs, seed, chat_render, mix, eos_token=eos_token)]

