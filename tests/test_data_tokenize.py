"""Prompt rendering, separate prompt/completion tokenisation, BOS/EOS and loss masks."""
from __future__ import annotations

import copy

import pytest

from rlhfkit.data import (
    DataError,
    PreferenceRecord,
    PromptRecord,
    RankingRecord,
    SFTRecord,
    encode_prompt,
    encode_prompt_completion,
    encode_prompts,
    encode_ranking,
    encode_rankings,
    encode_sft,
    load_sft,
    render_prompt,
)
from rlhfkit.testing import tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def bos_tok():
    """A tokenizer that adds a BOS token by default (like Llama's)."""
    t = copy.deepcopy(tiny_tokenizer())
    t.add_special_tokens({"bos_token": "<s>"})
    t.add_bos_token = True
    assert t("ab")["input_ids"][0] == t.bos_token_id
    return t


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


def masked_text(tok, ex):
    return tok.decode([t for t, m in zip(ex.input_ids, ex.loss_mask) if m])


def test_render_prompt(tok):
    assert render_prompt(tok, "raw text") == "raw text"
    assert render_prompt(tok, [U("hi")]) == "<|user|>\nhi\n<|assistant|>\n"


@pytest.mark.parametrize("prompt", ["Q: what is 2+2?\nA:", [U("what is 2+2?")], ""])
def test_mask_covers_exactly_the_completion_and_eos(tok, prompt):
    completion = " 4, because two plus two is four."
    ex = encode_prompt_completion(tok, prompt, completion, 128, source="f:1")
    assert masked_text(tok, ex) == completion + tok.eos_token
    assert ex.input_ids[-1] == tok.eos_token_id
    assert ex.loss_mask == [0] * ex.prompt_length + [1] * (len(ex) - ex.prompt_length)
    # the prompt part is the prompt tokenised alone: what generation sees
    prompt_ids = tok(render_prompt(tok, prompt), add_special_tokens=False)["input_ids"]
    assert ex.input_ids[: ex.prompt_length] == prompt_ids
    assert ex.input_ids[ex.prompt_length : -1] == tok(completion, add_special_tokens=False)["input_ids"]


def test_chat_sequence_matches_the_full_conversation_template(tok):
    ex = encode_prompt_completion(tok, [U("Say hi.")], "Hi!", 64)
    full = tok.apply_chat_template([U("Say hi."), A("Hi!")], tokenize=False)
    # The template ends the assistant turn with EOS then "\n"; training stops at EOS.
    assert tok.decode(ex.input_ids) == full.rstrip("\n")


def test_completion_only_false_and_no_eos(tok):
    ex = encode_prompt_completion(tok, "Q:", " yes", 64, completion_only=False, add_eos=False)
    assert ex.loss_mask == [1] * len(ex)
    assert ex.input_ids[-1] != tok.eos_token_id
    assert tok.decode(ex.input_ids) == "Q: yes"


def test_completion_ending_in_eos_gets_no_second_eos(tok):
    ex = encode_prompt_completion(tok, "Q:", " yes" + tok.eos_token, 64)
    assert ex.input_ids.count(tok.eos_token_id) == 1


def test_bos_rule(tok, bos_tok):
    assert encode_prompt(tok, "hello", 32) == tok("hello", add_special_tokens=False)["input_ids"]
    ids = encode_prompt(bos_tok, "hello", 32)
    assert ids[0] == bos_tok.bos_token_id and ids[1:] == bos_tok("hello", add_special_tokens=False)["input_ids"]
    assert ids == bos_tok("hello")["input_ids"]  # what the tokenizer itself gives generation
    # a rendered prompt that already starts with BOS gets no second one
    assert encode_prompt(bos_tok, "<s>hello", 32) == ids
    ex = encode_prompt_completion(bos_tok, "", "text", 32)
    assert ex.input_ids[0] == bos_tok.bos_token_id and ex.prompt_length == 1
    assert masked_text(bos_tok, ex) == "text" + bos_tok.eos_token
    # a BOS the tokenizer never adds by default (GPT-2 style) is not prepended
    gpt2_like = copy.deepcopy(tok)
    gpt2_like.bos_token = gpt2_like.eos_token
    assert encode_prompt(gpt2_like, "hello", 32)[0] != gpt2_like.bos_token_id


def test_over_long_sequence_is_an_error_not_a_truncation(tok):
    with pytest.raises(DataError) as e:
        encode_prompt_completion(tok, "a prompt", " a rather long completion text", 5, source="data.jsonl:7")
    msg = str(e.value)
    assert msg.startswith("data.jsonl:7: ") and "exceeds max_length=5" in msg and "prompt" in msg
    assert (e.value.source, e.value.line, e.value.reason) == ("data.jsonl", 7, "too_long")
    with pytest.raises(DataError, match="exceeds max_length"):
        encode_prompt(tok, "a prompt that is long", 2, source="p.jsonl:1")


def test_empty_completion_is_an_error(tok):
    with pytest.raises(DataError, match="empty completion") as e:
        encode_prompt_completion(tok, "Q:", "", 64, source="f.jsonl:3")
    assert str(e.value).startswith("f.jsonl:3: field 'completion'")


def test_encode_ranking_shares_prompt_tokens(tok):
    rec = RankingRecord([U("Pick")], ["red", "blue", "a much longer green"], source="r:1")
    exs = encode_ranking(tok, rec, 64)
    assert len(exs) == 3
    assert len({tuple(e.input_ids[: e.prompt_length]) for e in exs}) == 1
    assert [masked_text(tok, e) for e in exs] == [r + tok.eos_token for r in rec.responses]
    pair = encode_ranking(tok, PreferenceRecord("p", "yes", "no"), 64)
    assert [masked_text(tok, e) for e in pair] == ["yes" + tok.eos_token, "no" + tok.eos_token]


def test_batch_encoders_skip_over_long_records(tok, tmp_path):
    p = tmp_path / "sft.jsonl"
    p.write_text('{"prompt": "Q:", "completion": " ok"}\n'
                 '{"prompt": "Q:", "completion": " this completion is far too long to fit"}\n'
                 '{"prompt": "Q:", "completion": " fine"}\n')
    records = load_sft(str(p))
    with pytest.raises(DataError) as e:
        encode_sft(tok, records, 8)
    assert str(e.value).startswith(f"{p}:2: ")
    exs = encode_sft(tok, records, 8, on_error="skip")
    assert exs.kept == [0, 2] and exs.skipped.counts == {"too_long": 1}
    groups = encode_rankings(tok, [PreferenceRecord("p", "a", "b"), PreferenceRecord("p", "a" * 50, "b")], 10,
                             on_error="skip")
    assert len(groups) == 1 and groups.kept == [0]
    prompts = encode_prompts(tok, [PromptRecord("short"), PromptRecord("long " * 20)], 10, on_error="skip")
    assert prompts.kept == [0] and prompts.skipped.total == 1


def test_sft_text_record(tok):
    [ex] = encode_sft(tok, [SFTRecord("", "plain text")], 32)
    assert ex.prompt_length == 0 and masked_text(tok, ex) == "plain text" + tok.eos_token


def test_ranking_terminated_flags_control_eos_and_follow_the_order(tmp_path):
    """Sampled responses that ran out of tokens are encoded without EOS."""
    import json

    from rlhfkit.data import load_preferences
    from rlhfkit.data.tokenize import encode_ranking
    from rlhfkit.testing import tiny_tokenizer

    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"prompt": "Say a.", "responses": ["a.", "b b b", "c."], "ranking": [1, 2, 0],
                                "terminated": [True, False, True]}) + "\n")
    (record,) = load_preferences(str(path))
    assert record.responses == ["c.", "a.", "b b b"] and record.terminated == [True, True, False]
    tok = tiny_tokenizer()
    encoded = encode_ranking(tok, record, 64)
    assert [e.input_ids[-1] == tok.eos_token_id for e in encoded] == [True, True, False]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Say a.", "responses": ["a.", "b."], "ranking": [0, 1],
                               "terminated": [True]}) + "\n")
    import pytest

    from rlhfkit.data.errors import DataError

    with pytest.raises(DataError, match="bad.jsonl:1.*terminated"):
        load_preferences(str(bad))
