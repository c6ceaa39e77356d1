"""The DPO-family trainer end to end on a tiny model and a learnable synthetic preference:
the chosen response ends in the marker word "apple", the rejected one in another word."""
import math
import random
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import read_metrics, write_jsonl
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.trainers.dpo import DPOConfig, batch_logps, train_dpo
from rlhfkit.trainers.dpo_data import PreferenceItems, item_rows, load_items, reference_table, sequence_logps

WORDS = "cat dog cow pig hen fox owl bee ant rat red blue green pink gray gold".split()
OTHERS = "banana cherry grape lemon mango melon peach pear plum fig kiwi lime".split()


def _pairs(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.sample(WORDS, 2)
        rows.append({"prompt": f"Say {a} {b}:", "chosen": f" {a} {b} apple",
                     "rejected": f" {a} {b} {rng.choice(OTHERS)}"})
    return rows


@pytest.fixture(scope="module")
def pref_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("dpo_data")
    return write_jsonl(d / "train.jsonl", _pairs(64, 1)), write_jsonl(d / "eval.jsonl", _pairs(32, 2))


@pytest.fixture(scope="module")
def kto_data(tmp_path_factory):
    """The same preference as unpaired judgements (KTO's native format)."""
    d = tmp_path_factory.mktemp("kto_data")

    def unpaired(rows):
        out = []
        for i, r in enumerate(rows):  # one response per prompt, alternating desirable / undesirable
            good = i % 2 == 0
            out.append({"prompt": r["prompt"], "completion": r["chosen" if good else "rejected"], "label": good})
        return out
    return (write_jsonl(d / "train.jsonl", unpaired(_pairs(96, 1))),
            write_jsonl(d / "eval.jsonl", unpaired(_pairs(32, 2))))


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()  # the trainer sets num_threads process-wide
    yield
    torch.set_num_threads(n)


def _cfg(model, data, out, **kw):
    base = dict(model=model, data=data[0], eval_data=data[1], output_dir=str(out), learning_rate=5e-3,
                per_device_batch_size=8, num_epochs=1, log_every=1, progress=False, lr_scheduler="constant",
                num_threads=1, seed=0)  # one thread: a tiny model gains nothing from more, and loses under load
    base.update(kw)
    return DPOConfig(**base)


def _run(cfg):
    out = train_dpo(cfg)
    rows = read_metrics(out / "metrics.jsonl")
    return out, [r for r in rows if "loss/dpo" in r], rows[-1]


@torch.no_grad()
def _saved_model_accuracy(out, base_dir, eval_path):
    """Implicit-reward accuracy of the saved directory, loaded as a plain HF model, against the base."""
    tok = load_tokenizer(base_dir)
    items = load_items(eval_path, DPOConfig().columns(), DPOConfig(), tok, unpaired=False)
    rows = item_rows(items, list(range(len(items))))
    policy, base = (AutoModelForCausalLM.from_pretrained(d).eval() for d in (out, base_dir))
    ratio = sequence_logps(policy, rows, tok.pad_token_id, "cpu")[0] - sequence_logps(base, rows, tok.pad_token_id,
                                                                                      "cpu")[0]
    n = len(items)
    return float((ratio[:n] > ratio[n:]).float().mean())


LOSSES = {
    "sigmoid": {},
    "cdpo": {"label_smoothing": 0.1},
    "ipo": {"beta": 0.5},
    "simpo": {"beta": 2.0},
    "orpo": {"orpo_lambda": 1.0},
    "kto": {},
}


@pytest.mark.parametrize("loss", list(LOSSES))
def test_training_learns_the_preference(loss, tiny_model_dir, pref_data, tmp_path):
    out, train_rows, final = _run(_cfg(tiny_model_dir, pref_data, tmp_path / loss, loss=loss, **LOSSES[loss]))
    first, last = train_rows[0], train_rows[-3:]
    assert final["final"] and final["val/pairs"] == 32
    assert final["val/accuracy"] >= 0.8, final
    assert sum(r["loss/dpo"] for r in last) / 3 < first["loss/dpo"]
    if loss == "sigmoid":
        # policy == reference at the first step: h = 0 for every pair, loss = log 2
        assert first["loss/dpo"] == pytest.approx(math.log(2), abs=1e-5)
        assert first["rewards/margin"] == pytest.approx(0.0, abs=1e-4)
        assert _saved_model_accuracy(out, tiny_model_dir, pref_data[1]) >= 0.8


def test_kto_on_unpaired_labels(tiny_model_dir, kto_data, tmp_path):
    _, train_rows, final = _run(_cfg(tiny_model_dir, kto_data, tmp_path / "kto", loss="kto", num_epochs=2))
    assert final["val/accuracy"] >= 0.8, final
    assert "kto/reference_point" in train_rows[0]
    assert sum(r["loss/dpo"] for r in train_rows[-3:]) / 3 < train_rows[0]["loss/dpo"]


def test_precomputed_reference_equals_on_the_fly(tiny_model_dir, pref_data, tmp_path):
    tok = load_tokenizer(tiny_model_dir)
    cfg = _cfg(tiny_model_dir, pref_data, tmp_path)
    items = load_items(pref_data[1], cfg.columns(), cfg, tok, unpaired=False)
    ref = load_causal_lm(tiny_model_dir, tok).eval()
    with torch.no_grad():
        table = reference_table(lambda rows: sequence_logps(ref, rows, tok.pad_token_id, "cpu")[0], items, 5)
        for i in range(6):  # each sequence alone, unpadded
            for j in range(2):
                alone = sequence_logps(ref, [items.sequences[i][j]], tok.pad_token_id, "cpu")[0]
                assert table[i, j].item() == pytest.approx(alone.item(), abs=1e-4)
        logps = batch_logps(ref, items, [3, 1, 4], tok.pad_token_id, "cpu", None,
                            lambda rows: sequence_logps(ref, rows, tok.pad_token_id, "cpu")[0])
        assert torch.allclose(logps.ref_chosen, table[[3, 1, 4], 0], atol=1e-4)
        assert torch.allclose(logps.ref_rejected, table[[3, 1, 4], 1], atol=1e-4)
    # and the whole run: precomputed vs a reference model kept and run every micro-batch
    short = dict(num_epochs=0.5)
    _, pre, _ = _run(_cfg(tiny_model_dir, pref_data, tmp_path / "pre", **short))
    _, fly, _ = _run(_cfg(tiny_model_dir, pref_data, tmp_path / "fly", precompute_ref_logprobs=False, **short))
    assert len(pre) == len(fly) == 4
    for a, b in zip(pre, fly):
        assert a["loss/dpo"] == pytest.approx(b["loss/dpo"], abs=1e-4)
        assert a["rewards/margin"] == pytest.approx(b["rewards/margin"], abs=1e-3)


def test_lora_uses_disabled_adapter_as_reference(tiny_model_dir, pref_data, tmp_path):
    lora = dict(use_lora=True, lora_r=8, lora_alpha=16, learning_rate=2e-2, num_epochs=1)
    out, pre, final = _run(_cfg(tiny_model_dir, pref_data, tmp_path / "lora", **lora))
    assert pre[0]["loss/dpo"] == pytest.approx(math.log(2), abs=1e-5)
    assert final["val/accuracy"] >= 0.8, final
    assert _saved_model_accuracy(out, tiny_model_dir, pref_data[1]) >= 0.8  # adapter merged into a plain dir
    _, fly, _ = _run(_cfg(tiny_model_dir, pref_data, tmp_path / "lora_fly", precompute_ref_logprobs=False,
                          **{**lora, "num_epochs": 0.5}))
    for a, b in zip(pre[:4], fly):
        assert a["loss/dpo"] == pytest.approx(b["loss/dpo"], abs=1e-4)


def test_evaluations_between_logging_steps_are_logged(tiny_model_dir, pref_data, tmp_path):
    out = train_dpo(_cfg(tiny_model_dir, pref_data, tmp_path / "run", eval_every=3, log_every=5))
    rows = read_metrics(out / "metrics.jsonl")
    last = max(r["step"] for r in rows)
    evaluated = [r["step"] for r in rows if "val/loss" in r and not r.get("final")]
    assert evaluated == list(range(3, last + 1, 3))


def test_resume_continues_exactly(tiny_model_dir, pref_data, tmp_path):
    kw = dict(num_epochs=1, checkpoint_every=4, keep_checkpoints=5, log_every=1)
    full, rows, _ = _run(_cfg(tiny_model_dir, pref_data, tmp_path / "full", **kw))
    # a second run that stopped after its step-4 checkpoint
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step-00000004", part / "checkpoints" / "step-00000004")
    _, resumed, _ = _run(_cfg(tiny_model_dir, pref_data, part, **kw))
    assert [r["step"] for r in resumed] == [5, 6, 7, 8]
    for a, b in zip(rows[4:], resumed):
        assert a["loss/dpo"] == pytest.approx(b["loss/dpo"], abs=1e-5)
    wa = AutoModelForCausalLM.from_pretrained(full).state_dict()
    wb = AutoModelForCausalLM.from_pretrained(part).state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_rankings_expand_to_pairs_and_reference_free_loads_no_reference(tiny_model_dir, tmp_path, monkeypatch):
    rows = [{"prompt": f"Say {a} dog:", "responses": [f" {a} dog fig", f" {a} dog apple", f" {a} dog kiwi"],
             "ranking": [1, 0, 2]} for a in WORDS[:8]]
    data = write_jsonl(tmp_path / "rank.jsonl", rows)
    cfg = _cfg(tiny_model_dir, (data, ""), tmp_path / "out", loss="simpo", num_epochs=1, eval_fraction=0.25)
    items = load_items(data, cfg.columns(), cfg, load_tokenizer(tiny_model_dir), unpaired=False)
    assert len(items) == 24 and isinstance(items, PreferenceItems) and len(item_rows(items, [0, 1])) == 4
    import rlhfkit.trainers.dpo as dpo

    monkeypatch.setattr(dpo, "_reference", lambda *a, **k: pytest.fail("simpo must not build a reference"))
    _, train_rows, final = _run(cfg)
    assert final["val/pairs"] == 6 and len(train_rows) == 3  # 2 of 8 prompts held out; 18 pairs / 8
