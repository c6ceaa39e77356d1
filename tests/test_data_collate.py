"""Padding, position ids, ranking batches, packing without cross-document leaks, bucketing."""
from __future__ import annotations

import pytest
import torch

from rlhfkit.data import (
    DataError,
    PackedCollator,
    RankingCollator,
    RankingRecord,
    SFTCollator,
    SFTRecord,
    block_causal_mask,
    encode_rankings,
    encode_sft,
    length_grouped_indices,
    pack_examples,
    pad_sequences,
    position_ids_from_mask,
    scatter_scores,
)
from rlhfkit.testing import tiny_llama, tiny_tokenizer

ATOL = 1e-5


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def models(tok):
    return {impl: tiny_llama(tok, attn_implementation=impl).eval() for impl in ("sdpa", "eager")}


@pytest.fixture(scope="module")
def examples(tok):
    texts = [
        ("Q: 12 plus 7?", " 19."),
        ("Say hello to Tavo.", " Hello, Tavo! Nice to meet you."),
        ("Sort these words: pear, cat, blue.", " blue, cat, pear"),
        ("Count from 3 to 6.", " 3, 4, 5, 6."),
        ("", "the quick brown fox jumps over the lazy dog."),
        ("apple banana", " cherry"),
        ("red blue green", " pink gray gold black white brown purple"),
    ]
    return encode_sft(tok, [SFTRecord(p, c) for p, c in texts], 64)


def alone_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def token_logprobs(logits, ids):
    """log p(ids[t] | ids[<t]) for t >= 1: [T-1]."""
    return torch.log_softmax(logits[:-1].float(), -1).gather(-1, torch.as_tensor(ids[1:])[:, None])[:, 0]


def test_pad_sequences_both_sides():
    ids, mask = pad_sequences([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_sequences([[1, 2, 3], [4]], pad_id=0, side="left", pad_to_multiple_of=4)
    assert ids.tolist() == [[0, 1, 2, 3], [0, 0, 0, 4]] and mask.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 1, 2], [0, 0, 0, 0]]
    with pytest.raises(ValueError):
        pad_sequences([[1]], pad_id=None)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_left_padded_logprobs_equal_unpadded(models, examples, tok, impl):
    model = models[impl]
    seqs = [e.input_ids for e in examples[:4]]
    ids, mask = pad_sequences(seqs, tok.pad_token_id, side="left")
    with torch.no_grad():
        logits = model(ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    t = ids.shape[1]
    for i, s in enumerate(seqs):
        got = token_logprobs(logits[i, t - len(s):], s)
        want = token_logprobs(alone_logits(model, s), s)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_sft_collator_right_padding_matches_unpadded(models, examples, tok):
    model = models["sdpa"]
    batch = SFTCollator(tok.pad_token_id, pad_to_multiple_of=8)(examples[:4])
    assert batch["input_ids"].shape[1] % 8 == 0
    assert (batch["loss_mask"] * (1 - batch["attention_mask"])).sum() == 0  # never on padding
    for i, e in enumerate(examples[:4]):
        assert batch["loss_mask"][i, : len(e)].tolist() == e.loss_mask
    with torch.no_grad():
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits
    for i, e in enumerate(examples[:4]):
        torch.testing.assert_close(logits[i, : len(e)], alone_logits(model, e.input_ids), atol=ATOL, rtol=0)


def test_ranking_collator_forwards_each_response_once(tok):
    records = [
        RankingRecord("Pick a colour.", ["blue", "green", "red"]),
        RankingRecord("Pick a number.", ["1", "2"]),
        RankingRecord("Pick a fruit.", ["fig", "kiwi", "lime", "pear"]),
    ]
    groups = encode_rankings(tok, records, 64)
    batch = RankingCollator(tok.pad_token_id)(groups)
    n = 3 + 2 + 4
    assert batch["input_ids"].shape[0] == n
    assert batch["group_index"].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert batch["rank"].tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    assert batch["valid"].tolist() == [[True, True, True, False], [True, True, False, False], [True] * 4]
    flat = [e for g in groups for e in g]
    for row, e in enumerate(flat):
        assert batch["input_ids"][row, : len(e)].tolist() == e.input_ids
        assert batch["loss_mask"][row].sum() == sum(e.loss_mask)
    scores = torch.arange(n, dtype=torch.float32, requires_grad=True)
    rewards = scatter_scores(scores, batch, fill=float("nan"))
    assert rewards.shape == (3, 4)
    assert rewards[batch["valid"]].tolist() == list(range(n))
    assert torch.isnan(rewards[~batch["valid"]]).all()
    rewards[batch["valid"]].sum().backward()
    assert scores.grad.tolist() == [1.0] * n


def test_pack_examples_first_fit(examples):
    lengths = [len(e) for e in examples]
    rows = pack_examples(examples, 40)
    assert sorted(i for r in rows for i in r.example_indices) == list(range(len(examples)))
    for r in rows:
        assert len(r) <= 40
        assert r.input_ids == [t for i in r.example_indices for t in examples[i].input_ids]
        assert r.position_ids == [p for i in r.example_indices for p in range(lengths[i])]
        assert r.document_ids == [d for d, i in enumerate(r.example_indices) for _ in range(lengths[i])]
    # first fit: no example could have gone into an earlier row
    used = [0] * len(rows)
    where = {i: b for b, r in enumerate(rows) for i in r.example_indices}
    for i, n in enumerate(lengths):
        assert all(used[b] + n > 40 for b in range(where[i]))
        used[where[i]] += n
    with pytest.raises(DataError, match="more than the packing length"):
        pack_examples(examples, 5)


def _check_packed(model, batch, rows, examples, **kwargs):
    with torch.no_grad():
        logits = model(batch["input_ids"], position_ids=batch["position_ids"], **kwargs).logits
    worst = 0.0
    for b, r in enumerate(rows):
        start = 0
        for i in r.example_indices:
            ids = examples[i].input_ids
            got = logits[b, start : start + len(ids)]
            worst = max(worst, (got - alone_logits(model, ids)).abs().max().item())
            start += len(ids)
    return worst


@pytest.mark.parametrize(("impl", "attention"), [("sdpa", "additive"), ("eager", "additive"), ("sdpa", "bool")])
def test_packed_logits_equal_unpacked(models, examples, tok, impl, attention):
    model = models[impl]
    rows = pack_examples(examples, 40)
    assert any(len(r.example_indices) > 1 for r in rows)
    batch = PackedCollator(tok.pad_token_id, attention=attention, dtype=model.dtype)(rows)
    b, t = batch["input_ids"].shape
    assert batch["attention_mask"].shape == (b, 1, t, t)
    for r, (lm, ids) in zip(rows, zip(batch["loss_mask"], batch["input_ids"])):
        assert lm[: len(r)].tolist() == r.loss_mask and lm[len(r):].sum() == 0
    assert _check_packed(model, batch, rows, examples, attention_mask=batch["attention_mask"]) < ATOL


def test_packing_via_position_ids_only(models, examples, tok):
    model = models["sdpa"]
    rows = pack_examples(examples, 40)
    batch = PackedCollator(tok.pad_token_id, attention="position_ids")(rows)
    assert "attention_mask" not in batch
    assert _check_packed(model, batch, rows, examples, use_cache=False) < ATOL
    # Negative control: the check detects leaks. With a cache transformers skips the
    # packed-sequence detection and later documents attend to earlier ones.
    assert _check_packed(model, batch, rows, examples, use_cache=True) > 1e-3


def test_block_causal_mask():
    docs = torch.tensor([[0, 0, 1, 1, 1, 2]])
    m = block_causal_mask(docs, None)[0, 0]
    assert m.tolist() == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],
    ]
    add = block_causal_mask(docs, torch.bfloat16)
    assert add.dtype == torch.bfloat16 and (add[0, 0] == 0).eq(m).all()


def test_length_grouped_indices():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 500, (1000,), generator=g).tolist()
    idx = length_grouped_indices(lengths, 8, seed=3)
    assert sorted(idx) == list(range(1000))
    assert idx == length_grouped_indices(lengths, 8, seed=3)
    assert idx != length_grouped_indices(lengths, 8, seed=4)
    assert lengths[idx[0]] == max(lengths)  # longest batch first

    def padding(order):
        return sum(max(lengths[i] for i in order[s:s + 8]) * 8 - sum(lengths[i] for i in order[s:s + 8])
                   for s in range(0, len(order), 8))

    shuffled = torch.randperm(1000, generator=g).tolist()
    assert padding(idx) < padding(shuffled) / 3
    assert length_grouped_indices([], 4) == []
    odd = length_grouped_indices(list(range(10)), 4, seed=0)
    assert sorted(odd) == list(range(10))
