"""Property-based checks: JSONL round trips and loss-mask sizes on random text."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfkit.data import (
    PreferenceRecord,
    RankingRecord,
    SFTRecord,
    as_pairs,
    encode_prompt_completion,
    load_preferences,
    load_sft,
)
from rlhfkit.testing import tiny_tokenizer

TOK = tiny_tokenizer()

# Any text but lone surrogates (not encodable in UTF-8); not blank.
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(str.strip)
messages = st.lists(
    st.builds(lambda role, content: {"role": role, "content": content}, st.sampled_from(["system", "user"]), text),
    min_size=1, max_size=3,
).filter(lambda ms: ms[-1]["role"] == "user")
prompt = st.one_of(text, messages)
margin = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=32))


def _jsonl(rows) -> tuple[tempfile.TemporaryDirectory, str]:
    d = tempfile.TemporaryDirectory()
    p = Path(d.name) / "data.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return d, str(p)


@st.composite
def preference(draw):
    chosen = draw(text)
    rejected = draw(text.filter(lambda s: s != chosen))
    return PreferenceRecord(draw(prompt), chosen, rejected, draw(margin))


@st.composite
def ranking(draw):
    responses = draw(st.lists(text, min_size=2, max_size=5, unique=True))
    return RankingRecord(draw(prompt), responses)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(preference(), ranking()), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_preferences_round_trip_through_jsonl(records, rnd):
    rows = []
    for r in records:
        if isinstance(r, PreferenceRecord):
            rows.append({"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected, "margin": r.margin})
        else:  # write the responses shuffled with their ranks
            order = list(range(len(r.responses)))
            rnd.shuffle(order)  # order[j] = rank of the response written at j
            rows.append({"prompt": r.prompt, "responses": [r.responses[k] for k in order], "ranking": order})
    d, path = _jsonl(rows)
    with d:
        loaded = load_preferences(path)
    assert [type(r)(**{**x.__dict__, "source": ""}) for r, x in zip(records, loaded)] == records
    assert [x.source for x in loaded] == [f"{path}:{i}" for i in range(1, len(records) + 1)]
    assert len(as_pairs(loaded)) == sum(
        1 if isinstance(r, PreferenceRecord) else len(r.responses) * (len(r.responses) - 1) // 2 for r in records)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(prompt, text), min_size=1, max_size=6))
def test_sft_round_trip_through_jsonl(pairs):
    rows = [{"prompt": p, "completion": c} for p, c in pairs]
    d, path = _jsonl(rows)
    with d:
        loaded = load_sft(path)
    assert [(r.prompt, r.completion) for r in loaded] == pairs
    assert all(isinstance(r, SFTRecord) for r in loaded)


@settings(max_examples=60, deadline=None)
@given(prompt, text)
def test_loss_mask_covers_completion_tokens_plus_eos(p, completion):
    ex = encode_prompt_completion(TOK, p, completion, None)
    n = len(TOK(completion, add_special_tokens=False)["input_ids"])
    assert sum(ex.loss_mask) == n + 1
    assert ex.loss_mask[-1] == 1 and ex.input_ids[-1] == TOK.eos_token_id
    assert sum(ex.loss_mask[: ex.prompt_length]) == 0
    assert TOK.decode(ex.input_ids[ex.prompt_length:]) == completion + TOK.eos_token
