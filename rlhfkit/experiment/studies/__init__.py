"""`rlhfkit world study NAME --run_dir DIR`: RLHF's known limitations measured in the
instruction world from a finished run (docs/studies.md). Each study reuses the run's
data, SFT, comparisons and reward model, adds its own stages under
DIR/studies/NAME/ (each skipped when finished, so a rerun resumes) and writes
report.json, report.md and plots whose every point is a mean over seeds and prompts
with its 95% interval.

    overoptimisation  gold and proxy vs sqrt(KL): best-of-n and PPO, two RM sizes, Gao et al.'s forms fitted
    labeler_noise     labelers' agreement ~60%..~90%: RM accuracy vs gold, PPO win rate vs SFT
    data              comparison prompts ~250 .. the run's and beyond: RM accuracy, PPO win rate
    shift             a family / a constraint held out of the comparisons: seen vs held out
    kl                beta 0 .. 0.2 fixed, and adaptive targets: gold and KL at the end
    forgetting        web-text loss and a base skill for base, SFT, PPO, PPO-ptx: the alignment tax
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from rlhfkit.io import write_json

from rlhfkit.experiment.studies.common import STUDIES, Study, StudyConfig

__all__ = ["STUDIES", "StudyConfig", "run_study"]


def run_study(cfg: StudyConfig) -> Path:
    """Run (or resume) one study; returns its directory."""
    import torch

    from rlhfkit.config import save_yaml
    from rlhfkit.experiment.studies.data_size import data_study
    from rlhfkit.experiment.studies.forgetting import forgetting_study
    from rlhfkit.experiment.studies.kl import kl_study
    from rlhfkit.experiment.studies.labeler_noise import labeler_noise_study
    from rlhfkit.experiment.studies.overoptimisation import overoptimisation_study
    from rlhfkit.experiment.studies.shift import shift_study

    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    study = Study(cfg)
    save_yaml(cfg, study.out / "config.yaml")
    run = {"overoptimisation": overoptimisation_study, "labeler_noise": labeler_noise_study, "data": data_study,
           "shift": shift_study, "kl": kl_study, "forgetting": forgetting_study}[cfg.study]
    start = time.perf_counter()
    run(study)
    _record_time(study.out, time.perf_counter() - start, cfg)
    return study.out


def _record_time(out: Path, seconds: float, cfg: StudyConfig) -> None:
    """timing.json: every invocation's wall seconds (a resumed one counts only what it did)
    and each stage's own seconds from its .done marker, for the study's cost at other sizes."""
    path = out / "timing.json"
    timing = json.loads(path.read_text()) if path.exists() else {"invocations": []}
    timing["invocations"].append({"seconds": round(seconds, 1), "seeds": list(cfg.seeds),
                                  "num_threads": cfg.num_threads})
    stages = {}
    for marker in sorted(out.rglob(".done")):
        try:
            stages[str(marker.parent.relative_to(out))] = round(json.loads(marker.read_text())["seconds"], 1)
        except (ValueError, KeyError):
            continue
    timing["stage_seconds"] = stages
    write_json(path, timing, indent=1)
