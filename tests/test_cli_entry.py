"""`rlhfkit --version`, `python -m rlhfkit`, and the modes of a saved model directory."""
import os
import stat
import subprocess
import sys

import pytest

import rlhfkit
from rlhfkit.cli import main
from rlhfkit.models.loading import load_causal_lm, load_tokenizer, save_pretrained_dir


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"rlhfkit {rlhfkit.__version__}"


@pytest.mark.slow
def test_python_dash_m_runs_the_cli():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "rlhfkit", "--version"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"rlhfkit {rlhfkit.__version__}"


def test_saved_weights_have_the_mode_of_the_other_files(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    save_pretrained_dir(load_causal_lm(str(tiny_model_dir), tokenizer), tokenizer, tmp_path / "out")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert modes["model.safetensors"] == modes["config.json"], modes
    assert modes["model.safetensors"] & stat.S_IRGRP  # 0644 under the usual umask 022, not 0600
