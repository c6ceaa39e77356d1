"""Bad inputs are clear errors or handled on purpose: damaged checkpoint
manifests fall back, reward functions' bad outputs and failures name the function,
bad model paths and over-deep JSON are one-line errors, a rerun with other options
or data refuses to resume unless forced (and then applies them), a second run into
the same directory fails at once naming the first one's pid, leftovers of killed
saves are removed, and every JSON file is strict."""
import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from rlhfkit.cli import main
from rlhfkit.io import JsonlFile, dumps
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.rewards import FunctionScorer, RewardFunctionError, import_function
from rlhfkit.trainers.checkpoint import CheckpointError, CheckpointManager, open_stage
from rlhfkit.trainers.runlock import acquire_lock, release_lock
from rlhfkit.trainers.metrics import MetricsLogger
from rlhfkit.trainers.sft import SFTConfig, train_sft

from conftest import read_metrics, write_jsonl


def _strict_rows(path):
    def refuse(name):
        raise AssertionError(f"non-strict JSON constant {name} in {path}")
    return [json.loads(line, parse_constant=refuse) for line in open(path, encoding="utf-8")]


# ----------------------------------------------------------------------------- damaged checkpoints

@pytest.mark.parametrize("manifest", ["{}", "[]", '{"files": null}', '{"files": {"state.pt": null}}',
                                      '{"files": {"state.pt": {"bytes": "x", "sha256": 1}}}', "not json", "",
                                      '{"files": {"../state.pt": {"bytes": 1, "sha256": "0"}}}'])
def test_malformed_manifest_falls_back_like_a_damaged_file(tmp_path, manifest):
    manager = CheckpointManager(tmp_path, keep=3)
    for step in (1, 2):
        manager.save(step, {"model": {"w": torch.full((2,), float(step))}}, {"step": step})
    (tmp_path / "checkpoints" / "step-00000002" / "manifest.json").write_text(manifest)
    messages = []
    assert manager.latest(log=messages.append).name == "step-00000001"
    assert "step-00000002" in messages[0] and "manifest.json" in messages[0] and "skipped" in messages[0]


def test_no_intact_checkpoint_says_so_instead_of_promising_a_fallback(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, {"model": {"w": torch.ones(2)}}, {"step": 1})
    (tmp_path / "checkpoints" / "step-00000001" / "state.pt").write_bytes(b"torn")
    messages = []
    assert manager.latest(log=messages.append) is None
    assert "skipped" in messages[0] and "falling back" not in " ".join(messages)
    assert "no intact checkpoint left: starting from step 0" in messages[-1]


# ----------------------------------------------------------------------------- reward functions

def _batch(n=4):
    return SimpleNamespace(eos=torch.ones(n, dtype=torch.bool), metadata=[{}] * n, prompt_ids=torch.zeros(n, 2),
                           response_ids=torch.zeros(n, 2), prompts=["p"] * n, responses=["r"] * n)


def _raises(prompts, responses):
    raise ValueError("my own bug")


BAD_REWARDS = [  # (what the function returns, text of the error)
    (lambda p, r: None, "returned None"),
    (lambda p, r: [[1.0, 2.0]] * (len(r) // 2), "returned list [1.0, 2.0] at position 0"),
    (lambda p, r: torch.ones(len(r) // 2, 2), "returned scores of shape [2, 2]"),
    (lambda p, r: torch.ones(len(r), 1), "returned scores of shape [4, 1]"),
    (lambda p, r: "good", "returned a str"),
    (lambda p, r: 1.0, "returned a float"),
    (lambda p, r: {"score": 1.0}, "returned a dict"),
    (lambda p, r: [1.0] * (len(r) - 1), "returned 3 scores for 4 responses"),
    (lambda p, r: [1.0, float("nan"), 0.0, 0.0], "non-finite score (nan) for response 1"),
    (lambda p, r: [1.0, float("inf"), 0.0, 0.0], "non-finite score (inf) for response 1"),
    (lambda p, r: [1.0, None, 0.0, 0.0], "returned NoneType None at position 1"),
    (_raises, "reward function _raises raised ValueError: my own bug (at "),
]


@pytest.mark.parametrize("fn,message", BAD_REWARDS, ids=[m.split(" ")[-1] for _, m in BAD_REWARDS])
def test_bad_reward_output_is_an_error_naming_the_function(fn, message):
    fn.__name__ = getattr(fn, "__name__", "f") if fn is _raises else "my_reward"
    with pytest.raises(RewardFunctionError, match="reward function (my_reward|_raises)") as info:
        FunctionScorer(fn)(_batch())
    assert message in str(info.value)


def test_good_rewards_pass_bools_count_as_0_1():
    assert FunctionScorer(lambda p, r: [True, False, 1, 0.5])(_batch()).tolist() == [1.0, 0.0, 1.0, 0.5]


@pytest.mark.parametrize("source,spec,message", [
    (None, "no_such_module_xyz:f", "cannot import no_such_module_xyz: ModuleNotFoundError"),
    (None, "{dir}/missing.py:f", "no such file"),
    ("def f(p, r):\n    return [0.0] * len(r)\n", "{file}:g", "has no callable 'g'"),
    ("def f(p, r)\n    return 1\n", "{file}:f", "SyntaxError"),
    ("raise RuntimeError('at import')\n", "{file}:f", "RuntimeError: at import (at "),
])
def test_reward_function_import_errors_name_it(tmp_path, source, spec, message):
    path = tmp_path / "user_reward.py"
    if source is not None:
        path.write_text(source)
    spec = spec.format(dir=tmp_path, file=path)
    with pytest.raises(ValueError, match="reward function") as info:
        import_function(spec)
    assert message in str(info.value)


# ----------------------------------------------------------------------------- models and data

@pytest.mark.parametrize("kind", ["missing", "file", "empty_dir", "fifo"])
def test_bad_model_path_is_a_one_line_error(tmp_path, kind, tiny_model_dir):
    path = tmp_path / "m"
    if kind == "file":
        path.write_text("not a model")
    elif kind == "empty_dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    message = {"missing": "no such directory", "file": "is a file", "empty_dir": "no config.json",
               "fifo": "is a named pipe or a device"}[kind]
    with pytest.raises(ValueError, match=message):
        load_tokenizer(str(path))
    with pytest.raises(ValueError, match=message):
        load_causal_lm(str(path), load_tokenizer(tiny_model_dir))


def test_cli_bad_model_and_deep_json_are_one_line_errors(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n' + "[" * 200_000 + "]" * 200_000 + "\n")
    assert main(["sft", "--model", str(tmp_path / "nope"), "--data", str(data), "--out", str(tmp_path / "o1"),
                 "--progress", "false"]) == 1
    err = capsys.readouterr().err
    assert "rlhfkit sft: error: --model: model" in err and "no such directory" in err and "Traceback" not in err
    assert not (tmp_path / "o1").exists(), "nothing written before the model path is checked"
    assert main(["sft", "--model", tiny_model_dir, "--data", str(data), "--out", str(tmp_path / "o2"),
                 "--progress", "false"]) == 1
    err = capsys.readouterr().err
    assert f"{data}:2: JSON nested too deeply" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- strict JSON, logs

def test_metrics_are_strict_json_nan_as_null_with_the_reason_logged(tmp_path, capsys):
    logger = MetricsLogger(tmp_path / "metrics.jsonl", stage="sft")
    logger.log(1, {"loss": float("nan"), "grad_norm": torch.tensor(float("inf")), "lr": 1e-3})
    (row,) = _strict_rows(tmp_path / "metrics.jsonl")
    assert row["loss"] is None and row["grad_norm"] is None and row["lr"] == 1e-3
    out = capsys.readouterr().out
    assert "loss (nan)" in out and "grad_norm (inf)" in out and "null" in out
    assert dumps({"a": [1.0, float("-inf")]}, log=None) == '{"a": [1.0, null]}'


def test_jsonl_truncate_keeps_exactly_the_checkpoint_rows_and_drops_a_torn_line(tmp_path):
    log = JsonlFile(tmp_path / "m.jsonl")
    for i in range(5):
        log.append({"step": i})
    with open(tmp_path / "m.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # torn by a kill
    assert JsonlFile(tmp_path / "m.jsonl").rows == 5
    log.truncate(3)
    assert [r["step"] for r in read_metrics(tmp_path / "m.jsonl")] == [0, 1, 2] and log.rows == 3
    assert not list(tmp_path.glob(".*tmp*"))


# ----------------------------------------------------------------------------- lock, leftovers

class _Accel:
    is_main_process = True
    num_processes = 1

    def wait_for_everyone(self):
        pass

    def print(self, *args):
        print(*args)


@pytest.mark.kill
def test_second_run_into_the_same_directory_fails_naming_the_pid_and_a_dead_ones_lock_is_taken(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, time
        fd = os.open({str(tmp_path / '.lock')!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, str(os.getpid()).encode())
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointError, match=f"in use by another run \\(pid {holder.pid}\\)"):
            open_stage(SFTConfig(output_dir=str(tmp_path)), "sft", _Accel())
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / ".lock").read_text().strip() == str(holder.pid)  # a dead run's lock file is left
    lock = acquire_lock(tmp_path)  # and taken over at once
    release_lock(lock)
    assert not (tmp_path / ".lock").exists()


def test_leftovers_of_a_killed_save_and_rewrite_are_removed_at_start(tmp_path):
    orphan = tmp_path / "checkpoints" / ".tmp-step-00000004-999"
    orphan.mkdir(parents=True)
    (orphan / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / ".metrics.jsonl.tmp-999").write_text("{}\n")
    manager = open_stage(SFTConfig(output_dir=str(tmp_path)), "sft", _Accel())
    manager.close()
    assert not orphan.exists() and not (tmp_path / ".metrics.jsonl.tmp-999").exists()
    assert (tmp_path / "config.yaml").exists() and json.loads((tmp_path / "run_info.json").read_text())


# ----------------------------------------------------------------------------- fingerprint

@pytest.fixture
def sft_run(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"Say {w}.", "completion": f"{w} {w}."}
                                              for w in ["cat", "dog", "owl", "fig", "red", "yak"] * 2])

    def run(**overrides):
        kw = dict(model=tiny_model_dir, data=data, output_dir=str(tmp_path / "out"), per_device_batch_size=4,
                  num_epochs=2, checkpoint_every=2, eval_fraction=0, progress=False, log_every=1,
                  learning_rate=1e-3, lr_scheduler="linear")
        return train_sft(SFTConfig(**{**kw, **overrides}))
    run()
    return run, tmp_path / "out", data


def test_changed_options_or_data_refuse_to_resume_and_force_applies_them(sft_run):
    run, out, data = sft_run
    first = {r["step"]: r for r in read_metrics(out / "metrics.jsonl")}
    with pytest.raises(CheckpointError) as info:
        run(learning_rate=5e-3, seed=7)
    message = str(info.value)
    assert "learning_rate 0.001 -> 0.005" in message and "seed 0 -> 7" in message and "--resume force" in message
    assert "learning_rate: 0.001" in (out / "config.yaml").read_text(), "a refused rerun leaves config.yaml alone"
    original = open(data, "rb").read()
    with open(data, "a") as f:
        f.write(json.dumps({"prompt": "Say elk.", "completion": "elk elk."}) + "\n")
    with pytest.raises(CheckpointError, match=r"data file .*d.jsonl changed \(\d+ -> \d+ bytes\)"):
        run()
    open(data, "wb").write(original)
    run(learning_rate=5e-3, resume="force")  # resumes the step-4 checkpoint with the new rate applied
    rows = read_metrics(out / "metrics.jsonl")
    forced = [r for r in rows if r["step"] > 4 and "lr" in r]
    assert [r["step"] for r in forced] == [5, 6]
    assert all(r["lr"] == pytest.approx(5 * first[r["step"]]["lr"]) for r in forced)
    assert [r["step"] for r in rows if "loss/train" in r] == sorted({r["step"] for r in rows if "loss/train" in r})
    run(learning_rate=5e-3)  # the forced run's checkpoints carry its own fingerprint: a plain rerun resumes


BAD_DATA = [  # (file name, bytes, text of the DataError: always file[:line])
    ("garbage.jsonl", b"\x92>s\xe4\x00\x01\n", "garbage.jsonl:1: invalid UTF-8"),
    ("utf16.jsonl", '{"prompt": "a", "completion": "b"}\n'.encode("utf-16"), "utf16.jsonl:1: invalid UTF-8"),
    ("deep.jsonl", b"[" * 200_000 + b"]" * 200_000 + b"\n", "deep.jsonl:1: JSON nested too deeply"),
    ("deep.json", b"[" * 200_000 + b"]" * 200_000, "deep.json: JSON nested too deeply"),
    ("bigint.jsonl", b'{"prompt": 1' + b"0" * 5000 + b', "completion": "x"}\n', "bigint.jsonl:1: unreadable JSON"),
    ("num.json", b"42", "num.json: expected a list of objects"),
    ("list.jsonl", b"[1, 2]\n", "list.jsonl:1: expected an object"),
    ("blank.jsonl", b"  \n\n", "blank.jsonl: no records"),
    ("nan.jsonl", b'{"prompt": NaN, "completion": "a"}\n', "nan.jsonl:1: field 'prompt'"),
    ("bad.parquet", b"PAR1 not really", "bad.parquet: cannot read parquet"),
    ("notes.txt", b"hello", "unsupported file type '.txt'"),
]


@pytest.mark.parametrize("name,content,message", BAD_DATA, ids=[n for n, _, _ in BAD_DATA])
def test_bad_data_file_is_a_file_line_error(tmp_path, name, content, message):
    from rlhfkit.data.errors import DataError
    from rlhfkit.data.loading import load_sft

    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as info:
        load_sft(str(tmp_path / name))
    assert message in str(info.value)


def _text_only_directory(path):
    path.mkdir()
    (path / "notes.txt").write_text("hello")


def _empty_prompt(path):
    path.write_text(json.dumps({"prompt": "", "completion": "x"}) + "\n")


NOT_DATA = [  # (how the --data path is made, text of the DataError) for what used to load silently or wrongly
    (_text_only_directory, "a directory with no data files (expected .jsonl"),
    (lambda p: os.mkfifo(p), "is a named pipe, not a regular file"),
    (_empty_prompt, ":1: field 'prompt': empty string"),
]


@pytest.mark.parametrize("make,message", NOT_DATA, ids=["txt_directory", "fifo", "empty_prompt"])
def test_what_is_not_sft_data_is_a_data_error(tmp_path, make, message):
    from rlhfkit.data.errors import DataError
    from rlhfkit.data.loading import load_sft

    path = tmp_path / ("data.jsonl" if make is _empty_prompt else "data")
    make(path)
    with pytest.raises(DataError) as info:
        load_sft(str(path))
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_a_directory_of_jsonl_files_is_still_data(tmp_path):
    from rlhfkit.data.loading import load_sft

    (tmp_path / "d").mkdir()
    write_jsonl(tmp_path / "d" / "a.jsonl", [{"prompt": "Say a.", "completion": "a."}] * 3)
    (tmp_path / "d" / "README.txt").write_text("notes beside the data are ignored")
    assert len(load_sft(str(tmp_path / "d"))) == 3


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_an_eval_fraction_leaving_nothing_to_train_on_names_it(tmp_path, tiny_model_dir, stage, capsys):
    rows = ([{"prompt": f"Say {w}.", "completion": f"{w}."} for w in "abcdef"] if stage == "sft"
            else [{"prompt": f"Say {w}.", "chosen": f"{w}.", "rejected": "no"} for w in "abcdef"])
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    assert main([stage, "--model", tiny_model_dir, "--data", data, "--output_dir", str(tmp_path / "out"),
                 "--eval_fraction", "0.99", "--progress", "false"]) == 1
    err = capsys.readouterr().err
    assert "--eval_fraction 0.99 holds out 6 of the 6 records, leaving none to train on" in err
    assert len(err.strip().splitlines()) == 1


def test_rm_use_margin_on_data_without_margins_is_refused(tmp_path, tiny_model_dir, capsys):
    rows = [{"prompt": f"Say {w}.", "chosen": f"{w}.", "rejected": "no"} for w in "abcdef"]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    argv = ["rm", "--model", tiny_model_dir, "--data", data, "--output_dir", str(tmp_path / "out"), "--eval_fraction",
            "0", "--progress", "false", "--use_margin", "true"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "--use_margin true: 6 of 6 comparisons have no margin (column 'margin'" in err and "d.jsonl:1" in err
    assert not (tmp_path / "out" / "model.safetensors").exists()
    write_jsonl(tmp_path / "d.jsonl", [{**r, "margin": 1.0} for r in rows])
    assert main(argv) == 0  # with the column it trains


def test_a_csv_cell_longer_than_the_csv_modules_default_limit_is_data_on_purpose(tmp_path):
    from rlhfkit.data.loading import load_sft

    (tmp_path / "long.csv").write_text("prompt,completion\nSay it.," + "x" * 200_000 + "\n")
    assert len(load_sft(str(tmp_path / "long.csv"))[0].completion) == 200_000


def test_checkpoints_are_due_by_steps_and_by_time_never_after_the_last_step(tmp_path, monkeypatch):
    import rlhfkit.trainers.checkpoint as ckpt

    clock = [100.0]
    monkeypatch.setattr(ckpt.time, "monotonic", lambda: clock[0])
    manager = CheckpointManager(tmp_path, every_steps=0, every_seconds=300.0)
    assert not manager.due(1, 10)
    clock[0] += 301
    assert manager.due(2, 10) and not manager.due(10, 10)
    manager.save(2, {"model": {"w": torch.ones(1)}}, {"step": 2})
    assert not manager.due(3, 10)  # the clock restarts at each save
    assert CheckpointManager(tmp_path, every_steps=4).due(8, 10)


@pytest.mark.parametrize("marker", ["{", "[]", '{"options": 3}', ""])
def test_a_malformed_stage_marker_reruns_the_stage_instead_of_crashing(tmp_path, marker):
    from rlhfkit.pipeline import DONE, run_stage

    (tmp_path / DONE).write_text(marker)
    ran, messages = [], []
    run_stage("sft", tmp_path, lambda cfg: ran.append(cfg), SFTConfig(), log=messages.append)
    assert ran and ("malformed" in messages[0] or "unreadable" in messages[0])
    assert json.loads((tmp_path / DONE).read_text())["options"]["learning_rate"] == SFTConfig().learning_rate


def test_ppo_with_every_prompt_skipped_is_an_error_not_a_division_by_zero(tmp_path, tiny_model_dir):
    from rlhfkit.trainers.ppo.setup import load_prompt_set
    from rlhfkit.trainers.ppo.config import PPOConfig

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say a rather long prompt, please."}] * 3)
    cfg = PPOConfig(model=tiny_model_dir, prompts=prompts, max_prompt_length=2, on_error="skip")
    with pytest.raises(ValueError, match="no prompts left to train on"):
        load_prompt_set(cfg, load_tokenizer(tiny_model_dir), None)


def test_jsonl_files_round_trip_atomically_with_text_kept_as_written(tmp_path):
    from rlhfkit.io import read_jsonl, write_jsonl

    rows = [{"prompt": "Größe?", "n": 1}, {"prompt": "naïve", "n": 2}]
    path = write_jsonl(tmp_path / "sub" / "rows.jsonl", rows, ensure_ascii=False)
    assert read_jsonl(path) == rows
    assert "Größe" in path.read_text(encoding="utf-8")  # UTF-8, not \u escapes
    assert read_jsonl(write_jsonl(tmp_path / "ascii.jsonl", rows)) == rows  # the default escapes
    assert "Gr\\u00f6\\u00dfe" in (tmp_path / "ascii.jsonl").read_text(encoding="utf-8")
    assert sorted(p.name for p in path.parent.iterdir()) == ["rows.jsonl"]  # no temporary file left
