"""`label sample` (and `generate`) with plain-string prompts: a model whose tokenizer has
a chat template of its own sees each string as one user message, as it was fine-tuned;
a verbatim string never shows it its assistant cue, and a chat-tuned model answers it
with nothing."""
import json

import pytest
from conftest import write_jsonl

import rlhfkit.label.sample as sample_module
from rlhfkit.label.sample import SampleConfig, sample_items
from rlhfkit.models.loading import load_tokenizer
from rlhfkit.models.tokenizer import chat_model, string_prompts_as_chat
from rlhfkit.testing import tiny_tokenizer


def _spy(monkeypatch, tokenizer_dir, answer=lambda text: [f"one {text[-3:]}", f"two {text[-3:]}"]):
    """Replace sampling by a stand-in that answers from the rendered prompt text."""
    seen = []
    tok = load_tokenizer(str(tokenizer_dir))

    def fake(model, tokenizer, prompt_ids, **kw):
        texts = []
        for i, ids in enumerate(prompt_ids):
            rendered = tok.decode(ids)
            seen.append(rendered)
            texts.append(answer(rendered)[i % 2])
        return texts, [True] * len(texts)

    monkeypatch.setattr(sample_module, "sample_texts", fake)
    return seen


def test_plain_strings_go_through_the_models_chat_template(tiny_model_dir, tmp_path, monkeypatch):
    seen = _spy(monkeypatch, tiny_model_dir)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say cow 3 times."}, {"prompt": "Say hi."}])
    out = sample_items(SampleConfig(model=str(tiny_model_dir), prompts=prompts, k=2, out=str(tmp_path / "i.jsonl")))
    assert all("<|user|>\nSay" in s and s.endswith("<|assistant|>\n") for s in seen)
    rows = [json.loads(line) for line in open(out)]
    assert rows[0]["prompt"] == [{"role": "user", "content": "Say cow 3 times."}]  # as the model saw it

    seen.clear()
    sample_items(SampleConfig(model=str(tiny_model_dir), prompts=prompts, k=2, out=str(tmp_path / "t.jsonl"),
                              string_prompts="text"))
    assert all("<|assistant|>" not in s for s in seen)


def test_a_model_that_answers_bare_strings_with_nothing_gets_a_hint(tiny_model_dir, tmp_path, monkeypatch):
    # a chat-tuned model: nothing after a bare string, an answer after its assistant cue
    _spy(monkeypatch, tiny_model_dir,
         answer=lambda text: ["a", "b"] if text.endswith("<|assistant|>\n") else ["", ""])
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say cow 3 times."}])
    assert sample_items(SampleConfig(model=str(tiny_model_dir), prompts=prompts, k=2,
                                     out=str(tmp_path / "i.jsonl"))).exists()
    with pytest.raises(ValueError, match=r"\(2 of 2 responses were empty\); plain-string prompts were used "
                                         r"verbatim: try --string_prompts chat"):
        sample_items(SampleConfig(model=str(tiny_model_dir), prompts=prompts, k=2, out=str(tmp_path / "t.jsonl"),
                                  string_prompts="text"))


def test_auto_is_chat_only_for_a_tokenizer_with_its_own_template(tmp_path):
    tok = tiny_tokenizer()
    tok.chat_template = None
    tok.save_pretrained(tmp_path / "plain")
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=len(tok)).save_pretrained(tmp_path / "plain")
    plain = load_tokenizer(str(tmp_path / "plain"))  # rlhfkit sets its default template on it
    assert plain.chat_template and not chat_model(plain)
    assert not string_prompts_as_chat(plain, "auto") and string_prompts_as_chat(plain, "chat")
    assert chat_model(tiny_tokenizer()) and string_prompts_as_chat(tiny_tokenizer(), "auto")
    assert not string_prompts_as_chat(tiny_tokenizer(), "text")


def test_label_commands_take_the_training_commands_names(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from rlhfkit.cli import main

    _spy(monkeypatch, tiny_model_dir)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say hi."}])
    out = tmp_path / "labeling"
    assert main(["label", "sample", "--model", str(tiny_model_dir), "--prompts", prompts, "--k", "2",
                 "--output_dir", str(out), "--per_device_batch_size", "2"]) == 0
    assert (out / "items.jsonl").exists()  # a directory gets the command's file inside it
    assert main(["label", "sample", "--model", str(tiny_model_dir), "--prompts", prompts, "--k", "2",
                 "--out", str(tmp_path / "mine.jsonl"), "--batch_size", "2"]) == 0  # the old names still work
    assert (tmp_path / "mine.jsonl").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["label", "sample", "--help"])
    text = capsys.readouterr().out
    assert "--per_device_batch_size" in text and "--batch_size" not in text
