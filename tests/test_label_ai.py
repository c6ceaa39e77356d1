"""AI feedback (rlhfkit.label.ai, .revise, .sample) on tiny models built offline."""
import json

import pytest
import torch

from rlhfkit.data.loading import as_pairs, load_preferences, load_sft
from rlhfkit.label.ai import (
    TEMPLATE,
    AIConfig,
    AIJudgeReward,
    Reasoning,
    cut_review,
    choice_probabilities,
    judge_pairs,
    judge_text,
    label_ai,
    read_principles,
    write_reviews,
)
from rlhfkit.label.revise import ReviseConfig, critique_and_revise, cut_at_field, requests, revise
from rlhfkit.label.sample import SampleConfig, sample_items
from rlhfkit.label.store import Store
from rlhfkit.testing import tiny_llama, tiny_tokenizer

from conftest import write_jsonl

WORDS = ["cat", "dog", "red", "fig", "owl", "pear", "lime", "bee", "yak", "goat"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_template_is_the_review_document_with_an_optional_principle_line():
    assert TEMPLATE == "{instruction}\n(A) {answer_a}\n(B) {answer_b}\nBetter: ("
    assert judge_text("Say cat.", "cat!", "dog.") == "Say cat.\n(A) cat!\n(B) dog.\nBetter: ("
    assert judge_text("Say cat.", "cat!", "dog.", "Be kind.") == "Be kind.\nSay cat.\n(A) cat!\n(B) dog.\nBetter: ("


def test_readout_is_the_next_token_probability_of_a_against_b(tok):
    model = tiny_llama(tok, seed=1).eval()
    text = judge_text("Say cat.", "cat!", "dog.")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    a, b = (tok(text + c, add_special_tokens=False)["input_ids"][-1] for c in "AB")
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    expected = torch.softmax(logits[[a, b]], dim=-1)
    stats = {}
    got = choice_probabilities(model, tok, [text], stats=stats)[0]
    assert torch.allclose(got, expected, atol=1e-5) and stats["forward_sequences"] == 1
    # a choice the tokenizer cannot read in one token is scored as a continuation, token by token
    logp = torch.log_softmax(logits, -1)
    two = [tok(text + c, add_special_tokens=False)["input_ids"] for c in ("A)", "B)")]
    with torch.no_grad():
        cont = [logp[s[len(ids)]] + torch.log_softmax(model(torch.tensor([s[:-1]])).logits[0, -1], -1)[s[-1]]
                for s in two]
    assert torch.allclose(choice_probabilities(model, tok, [text], ("A)", "B)"))[0],
                          torch.softmax(torch.stack(cont), -1), atol=1e-5)


def test_both_orders_cancel_position_bias(tok):
    model = tiny_llama(tok, seed=2).eval()
    pairs = [("cat!", "dog."), ("red fig", "owl"), ("pear", "lime lime")]
    prompts = ["Say cat.", "Sort these words.", "Count from 3 to 6."]
    forward = judge_pairs(model, tok, prompts, pairs)
    backward = judge_pairs(model, tok, prompts, [(b, a) for a, b in pairs])
    assert torch.allclose(forward + backward, torch.ones(3), atol=1e-6)
    # left-padded batches of texts of different lengths read the same as one text at a time
    assert torch.allclose(judge_pairs(model, tok, prompts, pairs, batch_size=1), forward, atol=1e-5)

    class AlwaysA(torch.nn.Module):  # a judge that only ever says "A" learns nothing from the answers
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.a = tok("x\n(A", add_special_tokens=False)["input_ids"][-1]

        def forward(self, input_ids, attention_mask=None, **kwargs):
            logits = torch.zeros(*input_ids.shape, len(tok))
            logits[..., self.a] = 10.0
            return type("Out", (), {"logits": logits})()

    assert torch.allclose(judge_pairs(AlwaysA(), tok, prompts, pairs), torch.full((3,), 0.5))


def test_principles_one_drawn_per_pair_or_all_averaged(tok, tmp_path):
    model = tiny_llama(tok, seed=3).eval()
    path = tmp_path / "constitution.txt"
    path.write_text("# comment\nBe kind.\n\nBe brief.\n")
    principles = read_principles(path)
    assert principles == ["Be kind.", "Be brief."]
    stats = {}
    drawn = judge_pairs(model, tok, ["Say cat."] * 4, [("cat!", "dog.")] * 4, principles, seed=0, stats=stats)
    assert stats["forward_sequences"] == 8  # 2 orders per pair
    each = [judge_pairs(model, tok, ["Say cat."], [("cat!", "dog.")], [p])[0] for p in principles]
    assert all(any(abs(float(d) - float(e)) < 1e-6 for e in each) for d in drawn)
    mean = judge_pairs(model, tok, ["Say cat."], [("cat!", "dog.")], principles, ensemble=True)[0]
    assert abs(float(mean) - float(sum(each) / 2)) < 1e-6


def _train_on(model, tok, docs: list[str], steps: int) -> None:
    ids = [tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for d in docs]
    width = max(map(len, ids))
    batch = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in ids])
    mask = (torch.arange(width)[None] < torch.tensor([len(s) for s in ids])[:, None]).long()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    labels = batch.masked_fill(mask == 0, -100)
    for _ in range(steps):
        loss = model(input_ids=batch, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_a_judge_trained_on_review_documents_prefers_the_better_answer(tok):
    """Documents in the template, the better answer always the one with "gold": after 60
    steps the judge picks it on words it never saw judged."""
    torch.manual_seed(0)
    model = tiny_llama(tok, seed=0)
    train, held = WORDS[:7], WORDS[7:]
    docs = []
    for w in train:
        good, bad = f"{w} gold.", f"{w}."
        docs.append(judge_text(f"Rate {w}.", good, bad) + "A)")
        docs.append(judge_text(f"Rate {w}.", bad, good) + "B)")
    _train_on(model, tok, docs, 60)
    probs = judge_pairs(model, tok, [f"Rate {w}." for w in held], [(f"{w}.", f"{w} gold.") for w in held])
    assert (probs < 0.3).all(), probs  # the first answer is the worse one


def test_a_judge_that_reads_critiques_decides_by_the_checks_it_writes(tok):
    """Critiques where the verdict follows a check line ("Gold: (A).") that the judge must
    write itself: read straight after the pair (no reasoning) the verdict is a guess, read
    after the judge's own review it picks the better answer on words it never saw judged."""
    torch.manual_seed(0)
    model = tiny_llama(tok, seed=0)
    train, held = WORDS[:7], WORDS[7:]
    reasoning = Reasoning(template="{instruction}\n(A) {answer_a}\n(B) {answer_b}\nCheck:", max_tokens=8)
    docs = []
    for w in train:
        good, bad = f"{w} gold.", f"{w}."
        docs.append(reasoning.template.format(instruction=f"Rate {w}.", answer_a=good, answer_b=bad) + " (A) gold.\nBetter: (A)")
        docs.append(reasoning.template.format(instruction=f"Rate {w}.", answer_a=bad, answer_b=good) + " (B) gold.\nBetter: (B)")
    _train_on(model, tok, docs, 80)
    prompts, pairs = [f"Rate {w}." for w in held], [(f"{w}.", f"{w} gold.") for w in held]
    stats: dict = {}
    thought = judge_pairs(model, tok, prompts, pairs, reasoning=reasoning, stats=stats)
    assert (thought < 0.3).all(), thought  # the first answer is the worse one
    direct = judge_pairs(model, tok, prompts, pairs)  # the template it never read: not reliably right
    assert not (direct < 0.3).all(), direct
    assert stats["forward_sequences"] == 2 * 2 * len(held) and stats["review_tokens"] > 0  # write, then read
    assert stats["review_samples"][0].endswith("gold.\nBetter: (")


def test_reviews_are_cut_where_the_judge_gives_its_own_verdict(tok, monkeypatch):
    """The review ends where the judge writes the verdict cue itself (its letter is read,
    not generated), a line break is put before the cue, and texts keep their order
    whatever order the batches ran in."""
    import rlhfkit.label.lm as lm

    def fake(model, tokenizer, prompt_ids, **kwargs):  # the shorter text comes first
        assert [len(p) for p in prompt_ids] == sorted(len(p) for p in prompt_ids)
        reviews = {"Say x": " ok.\nBetter: (B) and on", "Say a long sentence": " fine"}
        return [reviews[tokenizer.decode(p)] for p in prompt_ids], [True] * len(prompt_ids)

    monkeypatch.setattr(lm, "sample_texts", fake)
    out = write_reviews(None, tok, ["Say a long sentence", "Say x"], Reasoning(), batch_size=2, stats={})
    assert out == ["Say a long sentence fine\nBetter: (", "Say x ok.\nBetter: ("]
    # a review that ran out of tokens inside the cue loses that part line
    assert cut_review(" Grade 5.\nBett", "Better: (") == " Grade 5.\n"
    assert cut_review(" Grade 5.\nBetter:", "Better: (") == " Grade 5.\n"
    assert cut_review(" Grade 5.\nGrade", "Better: (") == " Grade 5.\nGrade"


def test_the_ai_judge_reward_is_the_logit_of_its_preference_over_the_reference(tiny_model_dir):
    """Direct RLAIF's reward: logit P(y better than the reference), both orders averaged;
    a response against itself scores 0 whatever the judge; a record without the
    reference column is an error naming it."""
    from types import SimpleNamespace

    judge = AIJudgeReward(tiny_model_dir)
    prompts = ["Say cat.", "Say dog."]
    same = judge.score(prompts, ["cat.", "dog!"], ["cat.", "dog!"])
    assert torch.allclose(same, torch.zeros(2), atol=1e-5)
    p = judge_pairs(judge.model, judge.tokenizer, prompts, [("cat.", "no"), ("dog!", "a dog")])
    assert torch.allclose(judge.score(prompts, ["cat.", "dog!"], ["no", "a dog"]), torch.logit(p), atol=1e-5)
    batch = SimpleNamespace(prompts=prompts, responses=["cat.", "dog!"], metadata=[{"reference": "no"}, {}],
                            prompt_ids=torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="prompt record 1 of the batch has no string column 'reference'"):
        judge(batch)


def test_reasoning_options_are_checked():
    from rlhfkit.config import ConfigError

    with pytest.raises(ConfigError, match="reasoning_template must contain {answer_b}"):
        AIConfig(reasoning_template="{instruction} {answer_a}")
    with pytest.raises(ConfigError, match="verdict_cue is empty"):
        AIConfig(verdict_cue=" ")


def test_label_ai_writes_rankings_rm_reads(tiny_model_dir, tmp_path):
    items = write_jsonl(tmp_path / "items.jsonl", [
        {"id": f"q{i}", "prompt": f"Say {w}.", "responses": [f"{w}!", f"{w}.", f"no {w}"], "terminated": [True] * 3}
        for i, w in enumerate(WORDS[:3])])
    out = label_ai(AIConfig(judge=tiny_model_dir, data=items, out=str(tmp_path / "ai.jsonl"),
                            pairs_out=str(tmp_path / "ai_pairs.jsonl")))
    rows = [json.loads(line) for line in open(out)]
    assert [r["item"] for r in rows] == ["q0", "q1", "q2"]
    for r in rows:
        assert sorted(r["ranking"]) == [0, 1, 2] and abs(sum(r["ai_wins"]) - 3.0) < 1e-3
        best = r["ranking"].index(0)
        assert r["ai_wins"][best] == max(r["ai_wins"])
    records = load_preferences(out)
    assert len(records) == 3 and len(as_pairs(records)) == 9
    assert len(load_preferences(tmp_path / "ai_pairs.jsonl")) == 9


def test_sample_writes_k_distinct_responses_the_app_loads(tiny_model_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say {w}."} for w in WORDS[:3]] +
                          [{"prompt": [{"role": "user", "content": "Count from 3 to 6."}]}])
    out = sample_items(SampleConfig(model=tiny_model_dir, prompts=prompts, k=4, max_new_tokens=8,
                                    out=str(tmp_path / "items.jsonl")))
    rows = [json.loads(line) for line in open(out)]
    assert len(rows) == 4
    for r in rows:
        assert 2 <= len(r["responses"]) <= 4 and len(set(r["responses"])) == len(r["responses"])
        assert len(r["terminated"]) == len(r["responses"]) and all(isinstance(t, bool) for t in r["terminated"])
    assert rows[3]["prompt"] == [{"role": "user", "content": "Count from 3 to 6."}]
    assert Store(tmp_path / "l.sqlite").add_items(out) == 4


def test_revise_chain_and_sft_records(tiny_model_dir, tmp_path):
    assert cut_at_field(" too short.\nRevision request: x") == "too short."
    assert requests("Find the harm. | Remove the harm.") == ("Find the harm.", "Remove the harm.")
    assert requests("Be brief.")[1] == "Rewrite the response so that it follows this principle: Be brief."
    constitution = tmp_path / "c.txt"
    constitution.write_text("Be brief.\nBe kind.\n")
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say cat.", "response": "cat cat cat."},
                                              {"prompt": "Say dog."}])
    out = revise(ReviseConfig(model=tiny_model_dir, data=data, principles=str(constitution), rounds=2,
                              max_new_tokens=8, out=str(tmp_path / "rev.jsonl")))
    rows = [json.loads(line) for line in open(out)]
    assert rows and all(len(r["critiques"]) == 2 and len(r["principles"]) == 2 for r in rows)
    assert rows[0]["original"] == "cat cat cat."
    records = load_sft(out)
    assert [r.completion for r in records] == [r["completion"] for r in rows]


def test_revise_feeds_the_critique_into_the_revision_request(tok):
    model = tiny_llama(tok, seed=0).eval()
    seen = []
    generate = model.forward

    def spy(*args, **kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            seen.append(tok.decode(ids[0][kwargs["attention_mask"][0, : ids.shape[1]].bool()]))
        return generate(*args, **kwargs)

    model.forward = spy
    [result] = critique_and_revise(model, tok, ["Say cat."], ["cat."], ["Be brief."], max_new_tokens=4)
    revision_doc = [s for s in seen if "Revision:" in s][0]
    assert revision_doc.startswith("Say cat.\nResponse: cat.\nCritique request: Identify specific ways")
    assert f"Critique: {result['critiques'][0]}".strip() in revision_doc
    assert revision_doc.endswith("Revision request: Rewrite the response so that it follows this principle: "
                                 "Be brief.\nRevision:")
