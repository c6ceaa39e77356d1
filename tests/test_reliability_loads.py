"""Every file rlhfkit loads that is not what it should be ends in one line naming the
file and what is wrong with it, and nothing is written: damaged or mismatched weights
for any model option, a --config that cannot be read, a chat template or judge template
that does not parse, a labels database that is not one, a reward model without a
trained head, a model directory without tokenizer files, a missing optional extra.
Table-driven: one row per kind of bad file."""
import json
import os
import shutil
import sqlite3
import sys

import pytest

from rlhfkit.cli import main
from rlhfkit.models.loading import load_causal_lm, load_reward_model, load_scalar_model, load_tokenizer

from conftest import write_jsonl


def _one_line(err):
    return "Traceback" not in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- damaged weights

def _truncate(d):
    st = d / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])


def _random_bytes(d):
    st = d / "model.safetensors"
    st.write_bytes(os.urandom(st.stat().st_size))


def _broken_header(d):
    st = d / "model.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[:8] + b"{not json" + data[17:])


def _resized_config(d):
    config = json.loads((d / "config.json").read_text())
    config.update(hidden_size=64, intermediate_size=128)
    (d / "config.json").write_text(json.dumps(config))


def _config_not_json(d):
    (d / "config.json").write_text("{ not json")


def _config(**changes):
    def change(d):
        config = json.loads((d / "config.json").read_text())
        config.update(changes)
        (d / "config.json").write_text(json.dumps(config))
    change.__name__ = "_config_" + "_".join(changes)
    return change


def _write(name, data: bytes):
    def write(d):
        (d / name).write_bytes(data)
    write.__name__ = f"_{name.replace('.', '_')}_{len(data)}_bytes"
    return write


DAMAGED = [  # (what is done to a copy of a good model, text of the error)
    (_truncate, "model.safetensors is damaged or not a safetensors file"),
    (_random_bytes, "model.safetensors is damaged or not a safetensors file"),
    (_broken_header, "model.safetensors is damaged or not a safetensors file"),
    (_write("model.safetensors", b""), "model.safetensors is damaged or not a safetensors file"),
    (_resized_config, "its weights do not fit its config.json (first: model.embed_tokens.weight is [300, 32] in "
                      "model.safetensors, [300, 64] by config.json)"),
    (_config(vocab_size=100), "its weights do not fit its config.json"),
    (_config_not_json, "config.json is not valid JSON (Expecting property name"),
    (_write("config.json", b""), "config.json is not valid JSON (Expecting value"),
    (_write("config.json", b"[]"), "config.json holds a JSON list, not an object"),
    (_write("config.json", b'{"model_type": "llama", "name": "caf\xe9"}'), "config.json is not UTF-8 text"),
    (_write("config.json", b"{}"), "cannot load it (Unrecognized model"),
    (_config(model_type="no_such_architecture"), "cannot load it (The checkpoint you are trying to load has model "
                                                 "type `no_such_architecture`"),
    (_config(hidden_size="wide"), "config.json: Validation error for field 'hidden_size'"),
]
LOADERS = {  # how each model option is loaded
    "model": lambda path, tok: load_causal_lm(path, tok),
    "value_model": lambda path, tok: load_scalar_model(path, tok, new_head="zero"),
    "reward_model": lambda path, tok: load_reward_model(path, tok),
}


@pytest.fixture(scope="module")
def reward_model_dir(tiny_model_dir, tmp_path_factory):
    """A one-label sequence classifier: what `rlhfkit rm` saves."""
    from rlhfkit.models.loading import save_pretrained_dir

    tok = load_tokenizer(tiny_model_dir)
    path = tmp_path_factory.mktemp("rm") / "rm"
    save_pretrained_dir(load_scalar_model(tiny_model_dir, tok), tok, path)
    return str(path)


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("damage,message", DAMAGED, ids=[f.__name__.strip("_") for f, _ in DAMAGED])
def test_damaged_weights_are_one_line_naming_the_model(tmp_path, tiny_model_dir, reward_model_dir, loader, damage,
                                                       message):
    source = reward_model_dir if loader == "reward_model" else tiny_model_dir
    bad = tmp_path / "bad"
    shutil.copytree(source, bad)
    damage(bad)
    if loader == "reward_model" and damage is _resized_config:
        message = "its weights do not fit its config.json"  # the first mismatch may be the head's
    if loader == "reward_model" and "model_type" in damage.__name__:
        message = "cannot load it"  # transformers words it otherwise for a sequence classifier
    with pytest.raises(ValueError) as info:
        LOADERS[loader](str(bad), load_tokenizer(tiny_model_dir))
    assert str(info.value).startswith(f"model {bad}: ") and message in str(info.value)
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("option", ["model", "ref_model", "reward_model"])
def test_cli_damaged_model_option_is_one_line(tmp_path, tiny_model_dir, reward_model_dir, option, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(reward_model_dir if option == "reward_model" else tiny_model_dir, bad)
    _truncate(bad)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Say {w}."} for w in ["cat", "dog", "owl", "fig"]])
    models = {"model": tiny_model_dir, "reward_model": "", option: str(bad)}
    argv = ["ppo", "--prompts", prompts, "--output_dir", str(tmp_path / "out"), "--total_episodes", "4",
            "--rollout_batch_size", "4", "--generation_batch_size", "4", "--per_device_train_batch_size", "4",
            "--response_length", "4", "--progress", "false"]
    for name, value in models.items():
        argv += [f"--{name}", value]
    if option != "reward_model":
        argv += ["--reward_functions", f"{_reward_file(tmp_path)}:f"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"rlhfkit ppo: error: model {bad}: model.safetensors is damaged" in err and _one_line(err), err


def _reward_file(tmp_path):
    path = tmp_path / "reward.py"
    path.write_text("def f(prompts, responses):\n    return [0.0] * len(responses)\n")
    return path


# ----------------------------------------------------------------------------- reward models and tokenizers

def test_a_causal_lm_as_reward_model_is_refused_saying_how_to_train_one(tiny_model_dir, reward_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    with pytest.raises(ValueError) as info:
        load_reward_model(tiny_model_dir, tok)
    message = str(info.value)
    assert "has no trained score head (config.json: LlamaForCausalLM)" in message
    assert f"rlhfkit rm --model {tiny_model_dir}" in message
    load_reward_model(reward_model_dir, tok)  # a trained one loads


def test_cli_ppo_refuses_a_plain_causal_lm_as_reward_model(tmp_path, tiny_model_dir, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Say {w}."} for w in ["cat", "dog", "owl", "fig"]])
    assert main(["ppo", "--model", tiny_model_dir, "--reward_model", tiny_model_dir, "--prompts", prompts,
                 "--output_dir", str(tmp_path / "out"), "--total_episodes", "4", "--rollout_batch_size", "4",
                 "--generation_batch_size", "4", "--per_device_train_batch_size", "4", "--response_length", "4",
                 "--progress", "false"]) == 1
    err = capsys.readouterr().err
    assert "has no trained score head" in err and "rlhfkit rm" in err and _one_line(err), err
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "tokenizer.json").write_text((d / "tokenizer.json").read_text()[:100]),
     "tokenizer.json is not valid JSON (Expecting"),
    (_write("tokenizer.json", b""), "tokenizer.json is not valid JSON"),
    (_write("tokenizer_config.json", b"{ nope"), "tokenizer_config.json is not valid JSON"),
    (_write("config.json", b"[1, 2]"), "config.json holds a JSON list, not an object"),
], ids=["truncated", "empty", "config_not_json", "model_config_a_list"])
def test_damaged_tokenizer_files_are_one_line_naming_the_file(tmp_path, tiny_model_dir, damage, message):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    damage(bad)
    with pytest.raises(ValueError) as info:
        load_tokenizer(str(bad))
    assert str(info.value).startswith(f"model {bad}: ") and message in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_a_model_directory_without_tokenizer_files_says_so(tmp_path, tiny_model_dir):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(tiny_model_dir, name), bare / name)
    with pytest.raises(ValueError, match="no tokenizer files") as info:
        load_tokenizer(str(bare))
    assert "sentencepiece" not in str(info.value) and str(bare) in str(info.value)


# ----------------------------------------------------------------------------- configs and templates

def _fifo(path):
    os.mkfifo(path)


BAD_CONFIGS = [  # (how the --config path is made, text of the error)
    (lambda p: p.mkdir(), "is a directory; --config takes a YAML file"),
    (lambda p: p.write_bytes("learning_rate: 0.001  # caf\xe9\n".encode("latin-1")), "not UTF-8 text (byte 27: b'\\xe9')"),
    (_fifo, "not a regular file"),
    (lambda p: p.write_text("learning_rate: [unclosed\n"), "not valid YAML: line 2, column 1: expected ',' or ']'"),
]


@pytest.mark.parametrize("make,message", BAD_CONFIGS, ids=["directory", "latin1", "fifo", "yaml"])
def test_unreadable_config_is_one_line_naming_it(tmp_path, make, message, capsys):
    path = tmp_path / "recipe.yaml"
    make(path)
    with pytest.raises(SystemExit) as exit_info:
        main(["sft", "--config", str(path), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"{path}: {message}" in err and _one_line(err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("template,message", [
    ("{% for m in messages %}", "line 1: Unexpected end of template"),
    ("{{ messages[0]['content'] }", "line 1:"),
    ("{% if %}x{% endif %}", "line 1:"),
])
def test_invalid_chat_template_is_one_line_naming_the_option(tiny_model_dir, template, message):
    with pytest.raises(ValueError) as info:
        load_tokenizer(tiny_model_dir, chat_template=template)
    assert str(info.value).startswith("chat template --chat_template: not a valid Jinja template") \
        and message in str(info.value)


def test_chat_templates_with_transformers_extensions_are_valid(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir, chat_template="{% for m in messages %}{% generation %}{{ m['content'] }}"
                                                       "{% endgeneration %}{% if loop.index > 3 %}{% break %}"
                                                       "{% endif %}{% endfor %}")
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "hi"


def test_cli_invalid_chat_template_is_refused_before_training(tmp_path, tiny_model_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Say a.", "completion": "a."}] * 4)
    assert main(["sft", "--model", tiny_model_dir, "--data", data, "--output_dir", str(tmp_path / "out"),
                 "--chat_template", "{% for m in messages %}", "--progress", "false"]) == 1
    err = capsys.readouterr().err
    assert "rlhfkit sft: error: chat template --chat_template: not a valid Jinja template" in err and _one_line(err)


JUDGE_TEMPLATES = [  # (template, text of the error)
    ("{instruction} {answer_a} {answer_b} {foo}", "template has an unknown field {foo}"),
    ("{instruction} {answer_a} {answer_b} {", "template is not a valid format string (Single '{'"),
    ("{instruction} {answer_a} {answer_b} }", "template is not a valid format string (Single '}'"),
    ("{} {instruction} {answer_a} {answer_b}", "template has an unknown field {}"),
    ("{instruction.x} {answer_a} {answer_b}", "template cannot be filled in (AttributeError"),
    ("{instruction} {answer_a}", "template must contain {answer_b}"),
]


@pytest.mark.parametrize("template,message", JUDGE_TEMPLATES, ids=[m.split("(")[0] for _, m in JUDGE_TEMPLATES])
def test_bad_judge_template_is_one_line_naming_template(template, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["label", "ai", "--template", template])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "rlhfkit label ai: command line: template" in err and message in err, err
    assert _one_line(err)


def test_literal_braces_in_a_judge_template_are_fine():
    from rlhfkit.label.ai import AIConfig

    AIConfig(template="{{json}} {instruction}\nA: {answer_a}\nB: {answer_b}\n")


# ----------------------------------------------------------------------------- labels databases

def _other_program(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos(id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()


BAD_DBS = [  # (kind, how it is made, text of the error; None: the path is used as it is)
    ("not_a_db", lambda p: p.write_text("hello, not a database " * 50), "cannot open it as an SQLite database"),
    ("other_program", _other_program, "is another program's SQLite database (tables: photos)"),
    ("directory", lambda p: p.mkdir(), "is a directory"),
    ("missing_parent", None, "does not exist"),
    ("fifo", _fifo, "not a regular file"),
]


@pytest.mark.parametrize("command", [["label", "export"], ["label", "stats"], ["label", "serve", "--port", "0"]])
@pytest.mark.parametrize("kind,make,message", BAD_DBS, ids=[k for k, _, _ in BAD_DBS])
def test_a_labels_database_that_is_not_one_is_one_line(tmp_path, command, kind, make, message, capsys):
    if command[1] == "serve":
        pytest.importorskip("uvicorn")
        pytest.importorskip("fastapi")
    path = tmp_path / "no" / "dir" / "l.sqlite" if make is None else tmp_path / "l.sqlite"
    if make is not None:
        make(path)
    before = path.read_bytes() if path.is_file() else None
    argv = command + ["--db", str(path)] + (["--out", str(tmp_path / "x.jsonl")] if command[1] == "export" else [])
    assert main(argv) == 1
    err = capsys.readouterr().err
    if command[1] != "serve" and make is None:
        message = "no labels database at"  # reading: nothing to read
    assert f"rlhfkit {' '.join(command[:2])}: error: " in err and str(path) in err and message in err, err
    assert _one_line(err)
    if before is not None:
        assert path.read_bytes() == before, "the file is left exactly as it was"
    assert os.listdir(tmp_path) == ([] if make is None else ["l.sqlite"]), "nothing else is written"


def test_label_serve_without_the_extra_names_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `import uvicorn` now fails as if it were not installed
    assert main(["label", "serve", "--db", str(tmp_path / "l.sqlite")]) == 1
    err = capsys.readouterr().err
    assert "pip install 'rlhfkit[label]'" in err and "uvicorn is not installed" in err and _one_line(err), err
    assert not (tmp_path / "l.sqlite").exists(), "no database is created before the check"


@pytest.mark.parametrize("error", [RuntimeError("an internal bug"), KeyError("model.layers.0"), TypeError("bug")])
def test_an_internal_error_while_loading_keeps_its_traceback(tiny_model_dir, monkeypatch, error):
    """Only the library's own errors about the files become one line; anything else is a bug
    to be seen whole."""
    import rlhfkit.models.loading as loading

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", broken)
    with pytest.raises(type(error)) as info:
        load_causal_lm(tiny_model_dir, load_tokenizer(tiny_model_dir))
    assert info.value is error


def test_a_models_own_invalid_chat_template_names_the_model(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "chat_template.jinja").write_text("{% if %}")
    with pytest.raises(ValueError) as info:
        load_tokenizer(str(bad))
    assert str(info.value).startswith(f"chat template of {bad}: not a valid Jinja template (line 1:")
    load_tokenizer(str(bad), chat_template="{{ messages[0]['content'] }}")  # --chat_template replaces it
