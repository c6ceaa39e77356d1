"""A run says what it loaded (one line per data file, from the main process), and a
column-mapping error names the command-line flag."""
import json
import logging

import pytest

from rlhfkit.cli import _Console, _show_log_lines
from rlhfkit.data import ColumnMap, DataError, load_preferences, load_prompts, load_sft


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def console():
    log = logging.getLogger("rlhfkit")
    handlers, level = list(log.handlers), log.level
    _show_log_lines()
    yield
    log.handlers[:] = handlers
    log.setLevel(level)


def test_each_loaded_file_is_one_line_with_its_count_and_format(tmp_path, capsys, console, monkeypatch):
    demos = _jsonl(tmp_path / "demos.jsonl", [{"prompt": "a", "completion": "b"}] * 3
                   + [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}])
    pairs = _jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 2)
    ranks = _jsonl(tmp_path / "ranks.jsonl", [{"prompt": "p", "responses": ["a", "b", "c"], "ranking": [2, 0, 1]}])
    prompts = _jsonl(tmp_path / "prompts.jsonl", [{"prompt": "p", "answer": "1"}] * 5)
    load_sft(demos)
    load_preferences(pairs)
    load_preferences(ranks)
    load_prompts(prompts)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{demos}: 4 records (prompt/completion 3, messages 1)",
                     f"{pairs}: 2 records (chosen/rejected pairs)",
                     f"{ranks}: 1 record (K-way rankings (prompt/responses/ranking))",
                     f"{prompts}: 5 records (prompt)"]
    monkeypatch.setenv("RANK", "1")  # the console is set up on the main process only
    log = logging.getLogger("rlhfkit")
    log.handlers[:] = [h for h in log.handlers if not isinstance(h, _Console)]
    _show_log_lines()
    assert not any(isinstance(h, _Console) for h in log.handlers)


def test_skipped_records_are_counted_in_the_line(tmp_path, capsys, console):
    demos = _jsonl(tmp_path / "demos.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "a"}, {"text": "t"}])
    load_sft(demos, on_error="skip")
    out = capsys.readouterr()
    assert f"{demos}: 2 records (prompt/completion 1, text 1), 1 skipped" in out.out
    assert "skipped 1 record" in out.err  # the warning, as before


def test_column_mapping_errors_name_the_flag():
    with pytest.raises(DataError) as e:
        load_preferences([{"prompt": "p", "choosen": "a", "rejected": "b"}])
    assert "--chosen_column choosen" in str(e.value)
    with pytest.raises(DataError) as e:
        load_sft([{"question": "p", "answer": "a"}])
    assert "--prompt_column" in str(e.value)
    with pytest.raises(DataError, match="--label_column none"):
        from rlhfkit.data.loading import load_labeled

        load_labeled([{"prompt": "p", "completion": "c", "label": True}], ColumnMap(label="none"))


def test_a_column_set_to_none_is_ignored():
    """`--prompt_column none` (a string on the command line) ignores the column, as
    ColumnMap(prompt=None) does: HH transcripts are split even beside a prompt column."""
    row = {"prompt": "ignored", "chosen": "\n\nHuman: hi\n\nAssistant: yes",
           "rejected": "\n\nHuman: hi\n\nAssistant: no"}
    [r] = load_preferences([row], ColumnMap(prompt="none"))
    assert r.prompt == "\n\nHuman: hi\n\nAssistant:" and r.chosen == " yes"
