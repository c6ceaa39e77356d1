"""`--help` is short enough to read (a command's own options, one line per stage);
`--help-all` lists every option."""
import pytest

from rlhfkit.cli import build_parser, main


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    return capsys.readouterr().out


def test_run_help_is_short_and_help_all_lists_every_stage_option(capsys):
    short = _help(["run", "--help"], capsys)
    assert len(short.splitlines()) < 150, len(short.splitlines())
    assert "--help-all" in short and "--ppo.*" in short and "--sft_large.*" in short
    assert "--ppo.kl_coef" not in short and "--seed" in short
    full = _help(["run", "--help-all"], capsys)
    assert "--ppo.kl_coef" in full and "--sft.learning_rate" in full and "--seed" in full
    assert len(full.splitlines()) > 3 * len(short.splitlines())


def test_pipeline_help_groups_its_stages(capsys):
    short = _help(["pipeline", "--help"], capsys)
    assert len(short.splitlines()) < 60
    for stage in ("sft", "rm", "ppo", "dpo"):
        assert f"--{stage}.*" in short
    assert "--num_threads" in short
    full = _help(["pipeline", "--help-all"], capsys)
    assert "--ppo.kl_coef" in full and "--dpo.beta" in full
    assert "--ppo.model " not in full and "--sft.seed " not in full  # the pipeline sets them itself


def test_stage_commands_list_their_options_and_no_aliases(capsys):
    text = _help(["sft", "--help"], capsys)
    assert "--learning_rate" in text and "--help-all" in text
    assert "--model_name_or_path" not in text and "--num_train_epochs" not in text  # accepted, not listed
    _, parsers = build_parser()
    for path, parser in parsers.items():
        assert parser.format_help().startswith(f"usage: rlhfkit {' '.join(path)} "), path
