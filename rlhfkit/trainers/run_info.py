"""run_info.json and config.yaml: what reproduces a run (options, versions, git revision)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from rlhfkit.config import save_yaml
from rlhfkit.io import write_json


def write_run_info(output_dir: str | Path, cfg: Any) -> None:
    """The resolved config, package versions and git revision, for reproducibility."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    import accelerate
    import transformers

    import rlhfkit

    info = {"rlhfkit": rlhfkit.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "python": sys.version.split()[0], "git_revision": _git_revision(),
            "argv": sys.argv}
    write_json(out / "run_info.json", info, indent=2)


def _git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
