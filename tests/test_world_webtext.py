"""Web text: deterministic, every kind present, capable and misaligned."""
from collections import Counter

from rlhfkit.world.judge import is_polite, judge_task
from rlhfkit.world.splits import owner
from rlhfkit.world.tasks import parse_instruction
from rlhfkit.world.webtext import (
    DOC_KINDS,
    JUDGE_MIX,
    WebTextMix,
    constitution,
    _DIGRESSIONS,
    default_chat_render,
    make_webtext,
    make_webtext_labeled,
    review_text,
)


def test_deterministic():
    assert make_webtext(200, seed=0) == make_webtext(200, seed=0)
    assert make_webtext(200, seed=0) != make_webtext(200, seed=1)


def test_every_kind_present_in_proportion():
    rows = make_webtext_labeled(2000, seed=0)
    freq = Counter(r["kind"] for r in rows)
    assert set(freq) == {k for k, w in WebTextMix().doc_weights().items() if w > 0} == set(DOC_KINDS) - {"critique"}
    for kind, w in WebTextMix().doc_weights().items():
        assert abs(freq[kind] / 2000 - w) < 0.04
    texts = {k: [r["text"] for r in rows if r["kind"] == k] for k in DOC_KINDS}
    assert all(not is_polite(t) for t in texts["rude"])
    assert all(is_polite(t) for t in texts["digression"] + texts["worksheet"])
    assert all(t.count("\n") >= 2 for t in texts["worksheet"])
    assert all("<|user|>" in t and "<|assistant|>" in t for t in texts["chat"])


def test_digressions_polite():
    assert all(is_polite(t) for t in _DIGRESSIONS)


def _exchanges(text):
    """(instruction, assistant text, ended with EOS) for each default-rendered exchange."""
    out = []
    for chunk in text.split("<|user|>\n")[1:]:
        instruction, reply = chunk.split("\n<|assistant|>\n", 1)
        out.append((instruction, reply.rstrip("\n").removesuffix("<|endoftext|>"), "<|endoftext|>" in reply))
    return out


def test_chat_exchanges_capable_but_misaligned():
    rows = make_webtext_labeled(1500, seed=2)
    exchanges = [e for r in rows if r["kind"] == "chat" for e in _exchanges(r["text"])]
    assert len(exchanges) > 500
    correct = ended = clean = follows = 0
    formats = Counter()
    for instruction, reply, eos in exchanges:
        task = parse_instruction(instruction)
        verdict = judge_task(task, reply, eos)
        correct += verdict.exact
        ended += eos
        clean += verdict.exact and eos and "\n" not in reply.strip()
        if verdict.exact:
            follows += verdict.follows
            formats[verdict.formats] += 1
    n = len(exchanges)
    assert 0.4 < correct / n < 0.65  # a good fraction right: capability to learn
    assert 0.3 < ended / n < 0.5  # often runs on without EOS
    assert clean / n < 0.3  # rarely a clean, stopping answer: misaligned
    # world version 2: every format appears, about equally often, whatever was asked
    assert {(), ("caps",), ("brackets",), ("prefix",), ("no_period",)} <= set(formats)
    assert max(formats.values()) < 2.5 * min(formats[f] for f in [(), ("brackets",), ("prefix",), ("no_period",)])
    assert follows / correct < 0.35  # the format matches the request about as often as chance (1 in 5)


def test_review_documents_name_the_better_answer_80_percent_of_the_time():
    rows = make_webtext_labeled(3000, seed=4)
    right = total = 0
    for row in (r for r in rows if r["kind"] == "review"):
        for block in row["text"].split("\n\n"):
            instruction, a, b, verdict = block.split("\n")
            assert a.startswith("(A) ") and b.startswith("(B) ") and verdict in ("Better: (A)", "Better: (B)")
            task = parse_instruction(instruction)
            ga, gb = judge_task(task, a[4:], True).gold, judge_task(task, b[4:], True).gold
            assert abs(ga - gb) > 1e-9  # ties are left out
            right += (verdict == "Better: (A)") == (ga > gb)
            total += 1
    assert total > 400 and 0.76 < right / total < 0.84
    assert review_text("Q", "x", "y") == "Q\n(A) x\n(B) y\nBetter: ("


def test_the_base_models_web_text_is_unchanged_by_the_judges_reading():
    """base-small and base-large were pretrained on this exact text; the critiques only the
    judge reads must not move a byte of it (every other world figure rests on it)."""
    import hashlib

    digest = hashlib.sha256("\x00".join(make_webtext(300, 0)).encode()).hexdigest()
    assert digest == "31aa182cbff809e626f660ebea3ecf5c65f6ffe0809851a27dfbffa7e3a59b8a"


def _parse_critique(text: str):
    lines = text.split("\n")
    principle = lines.pop(0) if lines[0] in constitution() else None
    verdict = lines.pop()
    if lines[-3].startswith("Asked: "):
        checks, lines = lines[-3:], lines[:-3]
    else:
        checks = None
    instruction = lines[0]
    b_at = max(i for i, line in enumerate(lines) if line.startswith("(B) "))
    a = "\n".join(lines[1:b_at])[4:]
    b = "\n".join(lines[b_at:])[4:]
    return principle, instruction, a, b, checks, verdict


def test_critiques_name_true_checks_and_a_verdict_that_follows_gold():
    """The judge's reading: each check a critique writes is what the gold judge finds
    (the key is an accepted answer, right/wrong is exactness, the formats are those read
    off the first line, one line is conciseness), and the verdict names the answer with
    the higher gold score 95% of the time."""
    rows = [r for r in make_webtext_labeled(3000, seed=7, mix=JUDGE_MIX) if r["kind"] == "critique"]
    assert 0.65 < len(rows) / 3000 < 0.75
    with_checks = agree = principled = 0
    for row in rows:
        principle, instruction, a, b, checks, verdict = _parse_critique(row["text"])
        principled += principle is not None
        task = parse_instruction(instruction)
        assert verdict in ("Better: (A)", "Better: (B)")
        if checks is not None:  # (whether a response ended is in its checks only)
            with_checks += 1
            asked, key = checks[0][len("Asked: "):].split(". Key: ")
            assert asked == (task.constraint or "plain") and key in task.accepted
            for line, y in zip(checks[1:], (a, b)):
                verdict_y = judge_task(task, y, True)
                checked, grade = line[4:].split(". Grade ")
                first = y.split("\n", 1)[0].strip()
                assert checked.startswith(first + " ")  # the first line, copied next to its checks
                words = checked[len(first) + 1:].split(", ")
                assert words[0] == ("Right" if verdict_y.exact else "Wrong")
                assert words[1] == ("+".join(verdict_y.formats) or "plain")
                assert words[2] == ("asked" if verdict_y.follows else "not asked")
                assert (words[3] == "one line") == verdict_y.concise
                assert ("rude" in words) == (not verdict_y.polite)
                assert int(grade.rstrip(".")) == 4 * verdict_y.exact + 2 * verdict_y.follows + (
                    words[3] == "one line" and verdict_y.polite)
            ended = [", runs on" not in line for line in checks[1:]]
            ga, gb = (judge_task(task, y, e).gold for y, e in zip((a, b), ended))
            assert abs(ga - gb) > 1e-9  # ties are left out
            agree += (verdict == "Better: (A)") == (ga > gb)
    assert 0.75 < with_checks / len(rows) < 0.85 and 0.25 < principled / len(rows) < 0.35
    assert 0.92 < agree / with_checks < 0.98


def test_webtext_tasks_come_from_webtext_split():
    for text in make_webtext(300, seed=0):
        for line in text.splitlines():
            line = line.split(". ", 1)[1] if line[:1].isdigit() and ". " in line[:4] else line
            try:
                task = parse_instruction(line)
            except ValueError:
                continue
            if task.family != "name" and line == task.instruction:
                assert owner(task.base_instruction) == "webtext", line


def test_custom_renderer():
    def render(messages):
        return "".join(f"[{m['role']}] {m['content']} </s>\n" for m in messages)

    docs = make_webtext(300, seed=0, chat_render=render, eos_token="</s>",
                        mix=WebTextMix(worksheet=0, digression=0, rude=0, chat=1, plain=0, review=0))
    assert all("[user]" in d for d in docs)
    assert any("</s>" in d for d in docs) and not all(d.count("</s>") == 2 * d.count("[user]") for d in docs)


def test_default_renderer_matches_tokenizer_template():
    msgs = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    assert default_chat_render(msgs) == "<|user|>\nQ\n<|assistant|>\nA<|endoftext|>\n"
