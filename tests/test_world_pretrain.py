"""Pretraining of the world's base models, at toy size (seconds on CPU)."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from rlhfkit.experiment.pretrain import (  # noqa: E402
    PretrainConfig,
    judge_base_model,
    pretrain_world,
    webtext_eval_texts,
    webtext_loss,
)

TOY = {
    "small": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                  intermediate_size=32),
    "large": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                  intermediate_size=64),
}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    cfg = PretrainConfig(output_dir=str(root / "ckpt"), work_dir=str(root / "work"), n_docs=200, n_eval_docs=20,
                         tokenizer_docs=200, vocab_size=300, max_length=128, small_epochs=2.0, large_epochs=2.0,
                         small_lr=3e-3, large_lr=3e-3, small_batch_size=4, large_batch_size=4, warmup_ratio=0.1,
                         judge_prompts=0)
    out = pretrain_world(cfg, _specs=TOY)
    return cfg, out


def test_config_fields_have_help():
    import dataclasses

    for f in dataclasses.fields(PretrainConfig):
        assert f.metadata.get("help"), f.name
    cfg = PretrainConfig()
    assert cfg.output_dir == "rlhfkit/world/checkpoints" and cfg.models == "small,large"


def test_eval_texts_deterministic_and_held_out():
    a, b = webtext_eval_texts(10), webtext_eval_texts(10)
    assert a == b and len(a) == 10
    from rlhfkit.world.webtext import make_webtext

    assert not set(a) & set(make_webtext(200, 0))


def test_pretrain_toy_models(toy_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, out = toy_run
    sizes = {}
    for name in ("base-small", "base-large"):
        d = out / name
        assert (d / "model.safetensors").exists()
        fig = json.loads((d / "pretrain.json").read_text())
        assert fig["val_loss"] < fig["val_loss_init"]  # loss falls
        assert fig["tokens_seen"] > 0 and fig["optimizer_steps"] > 0
        tok = AutoTokenizer.from_pretrained(d)
        assert tok.chat_template and tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
        assert tok.pad_token_id != tok.eos_token_id
        model = AutoModelForCausalLM.from_pretrained(d)
        sizes[name] = fig["parameters"]
        loss = webtext_loss(model, tok, webtext_eval_texts(cfg.n_eval_docs), max_length=cfg.max_length)
        assert loss == pytest.approx(fig["val_loss"], abs=1e-3)
        text = tok.apply_chat_template([{"role": "user", "content": "Add 2 and 3."}], tokenize=False,
                                       add_generation_prompt=True)
        assert text == "<|user|>\nAdd 2 and 3.\n<|assistant|>\n"
    assert sizes["base-large"] > sizes["base-small"]


def test_judge_base_model(toy_run):
    _, out = toy_run
    r = judge_base_model(out / "base-small", n_prompts=8, seed=0, max_new_tokens=8, batch_size=4)
    assert r["n_prompts"] == 8
    for k in ("gold", "exact", "terminated", "polite", "concise", "correct"):
        assert 0.0 <= r[k] <= 1.0
    assert r["mean_length"] <= 8


def test_real_spec_sizes():
    from rlhfkit.models.tokenizer import train_bpe_tokenizer
    from rlhfkit.experiment.pretrain import build_base_model, count_parameters

    tok = train_bpe_tokenizer(webtext_eval_texts(50), 512)
    small = count_parameters(build_base_model("small", tok, 256, 0))
    large = count_parameters(build_base_model("large", tok, 256, 0))
    assert 0.8e6 < small < 1.0e6
    assert large >= 8 * small


def test_resume_from_checkpoint(tmp_path):
    cfg = PretrainConfig(output_dir=str(tmp_path / "ckpt"), work_dir=str(tmp_path / "work"), n_docs=60, n_eval_docs=5,
                         vocab_size=300, max_length=128, models="small", small_epochs=2.0, small_batch_size=2,
                         checkpoint_every=2, judge_prompts=0)
    pretrain_world(cfg, _specs=TOY)
    first = json.loads((tmp_path / "ckpt" / "base-small" / "pretrain.json").read_text())
    assert not first["resumed"] and any((tmp_path / "work" / "base-small" / "checkpoints").glob("step-*"))
    cfg.resume = True
    pretrain_world(cfg, _specs=TOY)
    again = json.loads((tmp_path / "ckpt" / "base-small" / "pretrain.json").read_text())
    assert again["resumed"] and again["optimizer_steps"] == first["optimizer_steps"]


def test_tokenizer_is_deterministic():
    from rlhfkit.models.tokenizer import train_bpe_tokenizer

    texts = webtext_eval_texts(100)
    a, b = train_bpe_tokenizer(texts, 512), train_bpe_tokenizer(texts, 512)
    assert a.get_vocab() == b.get_vocab() and a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()


def test_continued_pretraining_keeps_the_tokenizer_and_lowers_the_loss(toy_run, tmp_path):
    """A second pass on fresh documents (new seed) from the first pass's weights: the
    tokenizer is the init model's (the base models must keep sharing one), the
    starting loss is the first pass's final loss, and it falls further."""
    cfg, out = toy_run
    first = json.loads((out / "base-large" / "pretrain.json").read_text())
    cont = PretrainConfig(output_dir=str(tmp_path / "ckpt"), work_dir=str(tmp_path / "work"), n_docs=200,
                          n_eval_docs=20, max_length=128, models="large", init_large=str(out / "base-large"), seed=1,
                          large_epochs=1.0, large_lr=1e-3, large_batch_size=4, warmup_ratio=0.1, judge_prompts=0)
    pretrain_world(cont, _specs=TOY)
    d = tmp_path / "ckpt" / "base-large"
    second = json.loads((d / "pretrain.json").read_text())
    assert second["val_loss_init"] == pytest.approx(first["val_loss"], abs=1e-3)
    assert second["val_loss"] < second["val_loss_init"]
    assert second["init_from"] == str(out / "base-large") and second["previous"]["val_loss"] == first["val_loss"]
    assert (d / "tokenizer.json").read_text() == (out / "base-large" / "tokenizer.json").read_text()
    with pytest.raises(ValueError, match="every model trained in this run"):
        pretrain_world(PretrainConfig(output_dir=str(tmp_path / "x"), work_dir=str(tmp_path / "w"), n_docs=20,
                                      init_large=str(out / "base-large"), judge_prompts=0), _specs=TOY)


def test_the_judge_continues_its_init_on_the_judges_reading(toy_run, tmp_path):
    """`--models judge`: base-large's weights and tokenizer, then web text in which most
    documents are critiques naming their checks; trained in a run of its own."""
    cfg, out = toy_run
    judge_cfg = PretrainConfig(output_dir=str(tmp_path / "ckpt"), work_dir=str(tmp_path / "work"), models="judge",
                               init_judge=str(out / "base-large"), judge_docs=120, n_eval_docs=20, max_length=128,
                               judge_lr=1e-3, judge_batch_size=4, warmup_ratio=0.1, judge_prompts=0)
    pretrain_world(judge_cfg, _specs=TOY)
    d = tmp_path / "ckpt" / "judge"
    figures = json.loads((d / "pretrain.json").read_text())
    first = json.loads((out / "base-large" / "pretrain.json").read_text())
    assert figures["init_from"] == str(out / "base-large") and figures["parameters"] == first["parameters"]
    assert figures["val_loss_init"] == pytest.approx(first["val_loss"], abs=1e-3)
    assert (d / "tokenizer.json").read_text() == (out / "base-large" / "tokenizer.json").read_text()
    corpus = [json.loads(line)["text"] for line in (tmp_path / "work" / "webtext.jsonl").read_text().splitlines()]
    # the judge's reading (at toy length most critiques exceed max_length and are dropped), not the base corpus
    from rlhfkit.world.webtext import JUDGE_MIX, make_webtext

    assert set(corpus) <= set(make_webtext(120, judge_cfg.judge_corpus_seed, mix=JUDGE_MIX))
    base_corpus = {json.loads(line)["text"] for line in open(toy_run[0].work_dir + "/webtext.jsonl")}
    assert corpus and not base_corpus & set(corpus)
    with pytest.raises(ValueError, match="run of its own"):
        pretrain_world(PretrainConfig(output_dir=str(tmp_path / "x"), work_dir=str(tmp_path / "w"),
                                      models="judge,large", judge_prompts=0), _specs=TOY)
