"""Loading every input format into canonical records, and the errors bad data raises."""
from __future__ import annotations

import csv
import json
import logging

import datasets
import pytest

from rlhfkit.data import (
    ColumnMap,
    DataError,
    LabeledRecord,
    PreferenceRecord,
    PromptRecord,
    RankingRecord,
    SFTRecord,
    as_pairs,
    as_rankings,
    load_labeled,
    load_preferences,
    load_prompts,
    load_sft,
    read_rows,
)


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


def S(text):
    return {"role": "system", "content": text}


# ----------------------------------------------------------------------------- writers


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def write(fmt: str, rows: list[dict], tmp_path):
    """Write `rows` in format `fmt` and return what a loader takes."""
    if fmt == "memory":
        return rows
    if fmt == "dataset":
        return datasets.Dataset.from_list(rows)
    if fmt == "jsonl":
        p = tmp_path / "data.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        p = tmp_path / "data.json"
        p.write_text(json.dumps(rows), encoding="utf-8")
    elif fmt == "json_data":
        p = tmp_path / "data.json"
        p.write_text(json.dumps({"data": rows}), encoding="utf-8")
    elif fmt == "parquet":
        p = tmp_path / "data.parquet"
        datasets.Dataset.from_list(rows).to_parquet(str(p))
    elif fmt == "csv":
        p = tmp_path / "data.csv"
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(p, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for r in rows:
                w.writerow({k: _cell(r.get(k)) for k in keys})
    elif fmt == "disk":
        p = tmp_path / "saved"
        datasets.Dataset.from_list(rows).save_to_disk(str(p))
    elif fmt == "disk_dict":
        p = tmp_path / "saved_dict"
        datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                              "test": datasets.Dataset.from_list(rows[:1])}).save_to_disk(str(p))
    else:
        raise ValueError(fmt)
    return str(p)


FORMATS = ["memory", "dataset", "jsonl", "json", "json_data", "parquet", "csv", "disk", "disk_dict"]


def strip_sources(records):
    return [type(r)(**{**r.__dict__, "source": ""}) for r in records]


PAIR_ROWS = [
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": 1.5},
    {"prompt": "Say hi, \"politely\".", "chosen": "Hello, friend!", "rejected": "Go away.", "margin": None},
    {"prompt": "Unicode: caf\u00e9 \u4f60\u597d", "chosen": "na\u00efve \u2713", "rejected": "nope\nline two", "margin": 0.25},
]
PAIR_RECORDS = [PreferenceRecord(r["prompt"], r["chosen"], r["rejected"], r["margin"]) for r in PAIR_ROWS]

CHAT_ROWS = [
    {"messages": [S("Be brief."), U("Name a fruit."), A("Apple.")]},
    {"messages": [U("Count to 3."), A("1, 2, 3."), U("Now to 4."), A("1, 2, 3, 4.")]},
]
CHAT_RECORDS = [
    SFTRecord([S("Be brief."), U("Name a fruit.")], "Apple."),
    SFTRecord([U("Count to 3."), A("1, 2, 3."), U("Now to 4.")], "1, 2, 3, 4."),
]

RANK_ROWS = [
    {"prompt": "Pick a colour.", "responses": ["red", "blue", "green"], "ranking": [2, 0, 1]},
    {"prompt": "Pick a number.", "responses": ["1", "2", "3", "4"], "ranking": [0, 1, 2, 3]},
]
RANK_RECORDS = [
    RankingRecord("Pick a colour.", ["blue", "green", "red"]),
    RankingRecord("Pick a number.", ["1", "2", "3", "4"]),
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_the_same_records(fmt, tmp_path):
    for sub in "abc":
        (tmp_path / sub).mkdir()
    pairs = load_preferences(write(fmt, PAIR_ROWS, tmp_path / "a"))
    assert strip_sources(pairs) == PAIR_RECORDS
    assert not pairs.skipped
    chats = load_sft(write(fmt, CHAT_ROWS, tmp_path / "b"))
    assert strip_sources(chats) == CHAT_RECORDS
    ranks = load_preferences(write(fmt, RANK_ROWS, tmp_path / "c"))
    assert strip_sources(ranks) == RANK_RECORDS


def test_sources_name_file_and_line(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text(json.dumps(PAIR_ROWS[0]) + "\n\n" + json.dumps(PAIR_ROWS[1]) + "\n", encoding="utf-8")
    recs = load_preferences(str(p))
    assert [r.source for r in recs] == [f"{p}:1", f"{p}:3"]  # blank line skipped, numbering kept
    assert [r.source for r in load_preferences(PAIR_ROWS)] == ["<memory>:1", "<memory>:2", "<memory>:3"]
    rows = list(read_rows(str(p)))
    assert [(s, n) for s, n, _ in rows] == [(str(p), 1), (str(p), 3)]


def test_json_split_key_and_saved_dict_split(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"train": PAIR_ROWS, "test": PAIR_ROWS[:1]}), encoding="utf-8")
    assert len(load_preferences(str(p))) == 3
    assert len(load_preferences(str(p), split="test")) == 1
    d = write("disk_dict", PAIR_ROWS, tmp_path)
    assert len(load_preferences(d, split="test")) == 1
    with pytest.raises(DataError, match="no split 'validation'"):
        load_preferences(d, split="validation")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(PAIR_ROWS)})
    assert len(load_preferences(dd)) == 3


def test_jsonl_with_json_suffix_is_read_as_lines(tmp_path):
    p = tmp_path / "lines.json"
    p.write_text("".join(json.dumps(r) + "\n" for r in PAIR_ROWS), encoding="utf-8")
    assert strip_sources(load_preferences(str(p))) == PAIR_RECORDS


def test_hub_id_failure_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as e:
        load_preferences("someone/some-preferences")
    msg = str(e.value)
    assert msg.startswith("someone/some-preferences: ")
    assert "ConnectionError" in msg and "local path" in msg


def test_hub_id_goes_through_load_dataset(monkeypatch):
    seen = {}

    def fake(name, split=None):
        seen.update(name=name, split=split)
        return datasets.Dataset.from_list(PAIR_ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    recs = load_preferences("someone/prefs", split="test")
    assert seen == {"name": "someone/prefs", "split": "test"}
    assert recs[0].source == "someone/prefs:1"


def test_missing_file_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_sft(str(tmp_path / "nope.jsonl"))


# ----------------------------------------------------------------------------- HH transcripts


def test_implicit_prompt_single_turn():
    chosen = "\n\nHuman: What is the capital of France?\n\nAssistant: Paris is the capital."
    rejected = "\n\nHuman: What is the capital of France?\n\nAssistant: Paris? No idea."
    [r] = load_preferences([{"chosen": chosen, "rejected": rejected}])
    # The raw common prefix ends inside "Paris"; the split is at the marker.
    assert r.prompt == "\n\nHuman: What is the capital of France?\n\nAssistant:"
    assert r.chosen == " Paris is the capital."
    assert r.rejected == " Paris? No idea."
    assert r.prompt + r.chosen == chosen and r.prompt + r.rejected == rejected


def test_implicit_prompt_multi_turn():
    head = "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant:"
    [r] = load_preferences([{"chosen": head + " 6, of course.", "rejected": head + " 7, I think."}])
    assert r.prompt == head
    assert (r.chosen, r.rejected) == (" 6, of course.", " 7, I think.")


def test_implicit_prompt_diverging_before_last_turn_is_an_error():
    chosen = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant: Bye!"
    rejected = "\n\nHuman: Hi\n\nAssistant: Go away."
    with pytest.raises(DataError, match="differ before their final assistant turn") as e:
        load_preferences([{"chosen": chosen, "rejected": rejected}])
    assert e.value.field == "chosen" and e.value.line == 1


def test_implicit_prompt_needs_a_marker():
    with pytest.raises(DataError) as e:
        load_preferences([{"chosen": "good answer", "rejected": "bad answer", "question": "q?"}])
    assert e.value.field == "prompt" and e.value.reason == "missing"
    r = load_preferences([{"chosen": "Q: hi\nA: yo", "rejected": "Q: hi\nA: no"}], assistant_marker="\nA:")
    assert r[0].prompt == "Q: hi\nA:"


# ----------------------------------------------------------------------------- message lists


def test_message_pairs_with_and_without_prompt_repeated():
    p = [S("sys"), U("Name a colour.")]
    expected = PreferenceRecord(p, "Blue.", "Seven.")
    rows = [
        {"prompt": p, "chosen": [*p, A("Blue.")], "rejected": [*p, A("Seven.")]},  # repeated
        {"prompt": p, "chosen": [A("Blue.")], "rejected": [A("Seven.")]},  # not repeated
        {"prompt": p, "chosen": [*p, A("Blue.")], "rejected": [A("Seven.")]},  # mixed
        {"chosen": [*p, A("Blue.")], "rejected": [*p, A("Seven.")]},  # implicit: shared prefix
    ]
    assert strip_sources(load_preferences(rows)) == [expected] * 4


def test_message_pairs_with_string_prompt_become_chat_prompts():
    # UltraFeedback-binarized style: prompt string plus full conversations.
    row = {"prompt": "Name a colour.", "chosen": [U("Name a colour."), A("Blue.")],
           "rejected": [U("Name a colour."), A("Seven.")]}
    [r] = load_preferences([row])
    assert r.prompt == [U("Name a colour.")] and (r.chosen, r.rejected) == ("Blue.", "Seven.")
    row["prompt"] = "Something else"
    with pytest.raises(DataError, match="does not match") as e:
        load_preferences([row])
    assert e.value.field == "prompt"


def test_string_prompt_with_message_responses_is_a_user_turn():
    # Conversational responses make the data conversational: the prompt is chat-templated.
    [r] = load_preferences([{"prompt": "Name a colour.", "chosen": [A("Blue.")], "rejected": [A("Seven.")]}])
    assert r.prompt == [U("Name a colour.")]
    [s] = load_sft([{"prompt": "Say hi.", "completion": [A("Hi!")]}])
    assert s.prompt == [U("Say hi.")]
    [k] = load_preferences([{"prompt": "p", "responses": [[A("x")], [A("y")]], "ranking": [1, 0]}])
    assert (k.prompt, k.responses) == ([U("p")], ["y", "x"])
    # a system turn the prompt column omits is kept from the shared messages
    [t] = load_preferences([{"prompt": "q", "chosen": [S("sys"), U("q"), A("a")], "rejected": [S("sys"), U("q"), A("b")]}])
    assert t.prompt == [S("sys"), U("q")]


def test_message_pair_remainder_must_be_one_assistant_message():
    row = {"chosen": [U("a"), A("b"), U("c"), A("d")], "rejected": [U("a"), A("x"), U("c"), A("d")]}
    with pytest.raises(DataError, match="exactly one assistant message") as e:
        load_preferences([row])
    assert e.value.field == "chosen"


def test_sft_formats():
    rows = [
        {"prompt": "Say hi.", "completion": "Hi!"},
        {"prompt": [U("Say hi.")], "completion": [A("Hi!")]},
        {"messages": [U("Say hi."), A("Hi!")]},
        {"text": "Once upon a time."},
    ]
    assert strip_sources(load_sft(rows)) == [
        SFTRecord("Say hi.", "Hi!"), SFTRecord([U("Say hi.")], "Hi!"),
        SFTRecord([U("Say hi.")], "Hi!"), SFTRecord("", "Once upon a time."),
    ]
    with pytest.raises(DataError, match="must end with an assistant turn") as e:
        load_sft([{"messages": [U("hi"), A("yo"), U("and?")]}])
    assert e.value.field == "messages"


def test_prompts_and_metadata():
    rows = [
        {"prompt": "What is 3+4?", "answer": "7", "task": "add"},
        {"messages": [U("Hi"), A("Hello"), U("Sum 1+1?"), A("2")], "answer": "2"},
    ]
    recs = load_prompts(rows)
    assert recs[0] == PromptRecord("What is 3+4?", {"answer": "7", "task": "add"}, "<memory>:1")
    assert recs[1].prompt == [U("Hi"), A("Hello"), U("Sum 1+1?")]
    assert recs[1].metadata == {"answer": "2"}


def test_labeled():
    rows = [{"prompt": "p", "completion": "good", "label": True},
            {"prompt": [U("p")], "completion": "bad", "label": False}]
    assert strip_sources(load_labeled(rows)) == [LabeledRecord("p", "good", True), LabeledRecord([U("p")], "bad", False)]
    with pytest.raises(DataError) as e:
        load_labeled([{"prompt": "p", "completion": "c", "label": "maybe"}])
    assert e.value.field == "label" and e.value.reason == "type"


def test_column_map_none_ignores_a_column():
    chosen = "\n\nHuman: hi\n\nAssistant: hello"
    rejected = "\n\nHuman: hi\n\nAssistant: go away"
    [r] = load_preferences([{"prompt": "ignored", "chosen": chosen, "rejected": rejected}], ColumnMap(prompt=None))
    assert r.prompt == "\n\nHuman: hi\n\nAssistant:"
    with pytest.raises(DataError, match="ColumnMap.label is None"):
        load_labeled([{"prompt": "p", "completion": "c", "label": True}], ColumnMap(label=None))


def test_column_map():
    rows = [{"question": "q", "better": "a", "worse": "b", "strength": 2}]
    [r] = load_preferences(rows, ColumnMap(prompt="question", chosen="better", rejected="worse", margin="strength"))
    assert (r.prompt, r.chosen, r.rejected, r.margin) == ("q", "a", "b", 2.0)


# ----------------------------------------------------------------------------- rankings


def test_ranking_semantics_and_pairs_order():
    [r] = load_preferences([{"prompt": "p", "responses": ["c", "a", "d", "b"], "ranking": [2, 0, 3, 1]}])
    assert r.responses == ["a", "b", "c", "d"]  # ranking[i] is the rank of responses[i]
    pairs = as_pairs([r])
    assert [(x.chosen, x.rejected) for x in pairs] == [
        ("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]
    assert all(x.prompt == "p" and x.source == r.source for x in pairs)


def test_pairs_of_a_ranking_keep_the_terminated_flags_so_dpo_encodes_run_on_responses_without_eos(tiny_model_dir):
    from rlhfkit.data.tokenize import encode_ranking
    from rlhfkit.models.loading import load_tokenizer

    [r] = load_preferences([{"prompt": "p", "responses": ["x y", "z", "w"], "ranking": [0, 1, 2],
                             "terminated": [True, False, True]}])
    pairs = as_pairs([r])
    assert [(x.responses, x.terminated) for x in pairs] == [
        (["x y", "z"], [True, False]), (["x y", "w"], [True, True]), (["z", "w"], [False, True])]
    tok = load_tokenizer(tiny_model_dir)
    chosen, rejected = encode_ranking(tok, pairs[0], None)
    assert chosen.input_ids[-1] == tok.eos_token_id and rejected.input_ids[-1] != tok.eos_token_id


def test_as_rankings_and_back():
    pair = PreferenceRecord("p", "good", "bad", margin=0.5, source="f:1")
    [rk] = as_rankings([pair])
    assert rk == RankingRecord("p", ["good", "bad"], margin=0.5, source="f:1")
    assert as_pairs([rk]) == [pair]
    assert as_rankings([rk]) == [rk]


# ----------------------------------------------------------------------------- bad inputs


def _bad_jsonl(tmp_path):
    """Each bad line, with the reason and field its error must carry."""
    good = {"prompt": "p", "chosen": "yes", "rejected": "no"}
    lines = [
        (json.dumps(good).encode(), None),
        (b'{"prompt": "p", "chosen": "yes", "rejected": ', ("json", None)),
        ('{"prompt": "caf\u00e9", "chosen": "y", "rejected": "n"}'.encode("latin-1"), ("encoding", None)),
        (json.dumps({"prompt": "p", "choosen": "yes", "rejected": "no"}).encode(), ("missing", "chosen")),
        (json.dumps({"prompt": "p", "chosen": 3, "rejected": "no"}).encode(), ("type", "chosen")),
        (json.dumps({"prompt": "p", "chosen": "yes", "rejected": ""}).encode(), ("empty", "rejected")),
        (json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}).encode(), ("identical", "chosen")),
        (json.dumps({"prompt": "p", "responses": ["a", "b", "c"], "ranking": [0, 0, 1]}).encode(), ("ranking", "ranking")),
        (json.dumps({"prompt": "p", "responses": ["a", "b", "c"], "ranking": [1, 2, 3]}).encode(), ("ranking", "ranking")),
        (json.dumps({"prompt": "p", "responses": ["a"], "ranking": [0]}).encode(), ("ranking", "responses")),
        (json.dumps({"prompt": "", "chosen": "yes", "rejected": "no"}).encode(), ("empty", "prompt")),
        (json.dumps({"prompt": [{"role": "bot", "content": "x"}], "chosen": "y", "rejected": "n"}).encode(), ("type", "prompt[0].role")),
        (json.dumps([1, 2]).encode(), ("type", None)),
        (json.dumps(good).encode(), None),
    ]
    p = tmp_path / "prefs.jsonl"
    p.write_bytes(b"\n".join(raw for raw, _ in lines) + b"\n")
    return p, [(i, exp) for i, (_, exp) in enumerate(lines, 1)]


def test_each_bad_line_raises_a_located_error(tmp_path):
    p, expected = _bad_jsonl(tmp_path)
    raw = p.read_bytes().split(b"\n")
    for line, exp in expected:
        if exp is None:
            continue
        reason, field = exp
        single = tmp_path / f"line{line}.jsonl"
        # keep the line number: pad with blank lines
        single.write_bytes(b"\n" * (line - 1) + raw[line - 1] + b"\n")
        with pytest.raises(DataError) as e:
            load_preferences(str(single))
        err = e.value
        assert (err.source, err.line, err.reason, err.field) == (str(single), line, reason, field), str(err)
        msg = str(err)
        assert msg.startswith(f"{single}:{line}: ")
        if field is not None:
            assert f"field {field!r}" in msg


def test_error_message_format():
    with pytest.raises(DataError) as e:
        load_preferences([{"prompt": "p", "chosen": 17, "rejected": "x"}])
    assert str(e.value) == "<memory>:1: field 'chosen': expected a string or a list of messages, got int"


def test_did_you_mean():
    with pytest.raises(DataError) as e:
        load_preferences([{"prompt": "p", "choosen": "a", "rejected": "b"}])
    assert "did you mean 'choosen'" in str(e.value) and "ColumnMap(chosen='choosen')" in str(e.value)
    with pytest.raises(DataError) as e:
        load_sft([{"Prompt": "p", "completion": "c"}])
    assert e.value.field == "prompt" and "did you mean 'Prompt'" in str(e.value)
    with pytest.raises(DataError) as e:
        load_sft([{"txt": "hello"}])
    assert e.value.field == "text" and "did you mean 'txt'" in str(e.value)


def test_skip_returns_good_records_and_a_report(tmp_path, caplog):
    p, expected = _bad_jsonl(tmp_path)
    with caplog.at_level(logging.WARNING, logger="rlhfkit.data"):
        recs = load_preferences(str(p), on_error="skip")
    assert [r.source for r in recs] == [f"{p}:1", f"{p}:{len(expected)}"]
    bad = [exp for _, exp in expected if exp is not None]
    assert recs.skipped.total == len(bad)
    reasons = {}
    for reason, _ in bad:
        reasons[reason] = reasons.get(reason, 0) + 1
    assert dict(recs.skipped.counts) == reasons
    assert f"{p}:2" in recs.skipped.summary()
    assert "skipped" in caplog.text  # never silent


def test_all_bad_in_skip_mode_still_raises():
    with pytest.raises(DataError, match="no valid records"):
        load_preferences([{"prompt": "p", "chosen": "a", "rejected": "a"}], on_error="skip")


def test_empty_inputs(tmp_path):
    for name, content in [("e.jsonl", "\n\n"), ("e.json", "[]"), ("e.csv", "prompt,chosen,rejected\n")]:
        p = tmp_path / name
        p.write_text(content)
        with pytest.raises(DataError, match="no records") as e:
            load_preferences(str(p))
        assert e.value.source == str(p)
    with pytest.raises(DataError, match="no records"):
        load_sft([])
    with pytest.raises(DataError, match="no records"):
        load_sft(datasets.Dataset.from_list([{"text": "x"}]).select([]))


def test_csv_bad_utf8_and_ragged_rows(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes(b"prompt,chosen,rejected\np,yes,no\np,caf\xe9,no\np,a,b,extra\n")
    with pytest.raises(DataError) as e:
        load_preferences(str(p))
    assert (e.value.line, e.value.field, e.value.reason) == (3, "chosen", "encoding")
    recs = load_preferences(str(p), on_error="skip")
    assert len(recs) == 1 and dict(recs.skipped.counts) == {"encoding": 1, "csv": 1}


def test_on_error_is_validated():
    with pytest.raises(ValueError):
        load_sft([{"text": "x"}], on_error="ignore")

