"""Web text: deterministic, every kind present, capable and misaligned."""
from collections import Counter

from rlhfkit.world.judge import is_polite
from rlhfkit.world.splits import owner
from rlhfkit.world.tasks import parse_instruction
from rlhfkit.world.webtext import DOC_KINDS, WebTextMix, _DIGRESSIONS, default_chat_render, make_webtext, make_webtext_labeled


def test_deterministic():
    assert make_webtext(200, seed=0) == make_webtext(200, seed=0)
    assert make_webtext(200, seed=0) != make_webtext(200, seed=1)


def test_every_kind_present_in_proportion():
    rows = make_webtext_labeled(2000, seed=0)
    freq = Counter(r["kind"] for r in rows)
    assert set(freq) == set(DOC_KINDS)
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
    correct = ended = clean = 0
    for instruction, reply, eos in exchanges:
        task = parse_instruction(instruction)
        exact = reply.split("\n", 1)[0].strip() in task.accepted
        correct += exact
        ended += eos
        clean += exact and eos and "\n" not in reply.strip()
    n = len(exchanges)
    assert 0.4 < correct / n < 0.65  # a good fraction right: capability to learn
    assert 0.3 < ended / n < 0.5  # often runs on without EOS
    assert clean / n < 0.3  # rarely a clean, stopping answer: misaligned


def test_webtext_tasks_come_from_webtext_split():
    for text in make_webtext(300, seed=0):
        for line in text.splitlines():
            line = line.split(". ", 1)[1] if line[:1].isdigit() and ". " in line[:4] else line
            try:
                task = parse_instruction(line)
            except ValueError:
                continue
            if task.family != "name" and line == task.instruction:
                assert owner(task.instruction) == "webtext", line


def test_custom_renderer():
    def render(messages):
        return "".join(f"[{m['role']}] {m['content']} </s>\n" for m in messages)

    docs = make_webtext(300, seed=0, chat_render=render, eos_token="</s>",
                        mix=WebTextMix(worksheet=0, digression=0, rude=0, chat=1, plain=0))
    assert all("[user]" in d for d in docs)
    assert any("</s>" in d for d in docs) and not all(d.count("</s>") == 2 * d.count("[user]") for d in docs)


def test_default_renderer_matches_tokenizer_template():
    msgs = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    assert default_chat_render(msgs) == "<|user|>\nQ\n<|assistant|>\nA<|endoftext|>\n"
