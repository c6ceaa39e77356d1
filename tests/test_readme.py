"""README's Python example runs as written, on a tiny local model in place of gpt2 (no
network) and small data files of the names it uses."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rlhfkit.testing import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def readme_python_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_python_example_trains_sft_rm_and_ppo(tmp_path, monkeypatch):
    model = save_tiny_model(tmp_path / "tiny")
    rows = {"demos.jsonl": [{"prompt": f"Say {w}.", "completion": f"{w}."} for w in "abcdefgh"],
            "comparisons.jsonl": [{"prompt": f"Say {w}.", "chosen": f"{w}.", "rejected": "no."} for w in "abcdefgh"],
            "prompts.jsonl": [{"prompt": f"Say {w}."} for w in "abcdefgh"]}
    for name, records in rows.items():
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.chdir(tmp_path)
    code = readme_python_example()
    assert '"gpt2"' in code  # the example names a real Hub model; the test swaps in a local one
    scope: dict = {}
    exec(compile(code.replace('"gpt2"', repr(model)), "README.md", "exec"), scope)
    for name in ("sft", "rm", "ppo"):
        assert (Path(scope[name]) / "config.json").exists() and (Path(scope[name]) / "model.safetensors").exists()
    ppo_metrics = [json.loads(line) for line in (Path(scope["ppo"]) / "metrics.jsonl").read_text().splitlines()]
    assert ppo_metrics[-1]["episodes"] == 1024  # the example's PPO ran its whole (default) budget


def test_the_public_api_is_importable_from_rlhfkit_and_import_rlhfkit_stays_cheap():
    import subprocess
    import sys

    import rlhfkit
    from rlhfkit.trainers.reward import RewardConfig, train_reward_model

    assert rlhfkit.RMConfig is RewardConfig and rlhfkit.train_rm is train_reward_model
    for name in rlhfkit.__all__:
        assert callable(getattr(rlhfkit, name)), name
    code = "import sys, rlhfkit; sys.exit(int('torch' in sys.modules or 'transformers' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
