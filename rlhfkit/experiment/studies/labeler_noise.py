"""labeler_noise: the same SFT samples of the run's comparison prompts ranked by labelers
recalibrated to agree from ~60% to ~90% of the time (their noise knob; InstructGPT's
agreed ~73%), the comparison count fixed: the reward model's accuracy against gold on
the held-out rankings and PPO's win rate against SFT, per agreement."""
from __future__ import annotations

import dataclasses
import json

from rlhfkit.experiment.comparisons import label_comparisons, split_rows
from rlhfkit.experiment.data import tasks_of
from rlhfkit.experiment.studies.common import Study, figure
from rlhfkit.experiment.studies.points import train_point
from rlhfkit.experiment.studies.report import table, write_study_report
from rlhfkit.io import read_jsonl, write_json, write_jsonl
from rlhfkit.world.judge import win_indicators
from rlhfkit.world.labelers import LabelerConfig


def relabel(study: Study, agreement: float) -> tuple[list[dict], dict]:
    """The run's comparison samples ranked by labelers recalibrated to `agreement`, split into
    training and held-out prompts exactly as the run split them (the split depends only on
    the number of rankings and the seed, and filtering does not depend on the labels).
    Returns (training rows, figures: noise_std and the agreement reached); cached."""
    where = study.out / f"agreement_{agreement:g}"
    data, figures_path = where / "comparisons.jsonl", where / "labelers.json"
    if figures_path.exists():
        return read_jsonl(data), json.loads(figures_path.read_text())
    run_cfg = study.run_cfg
    rows = read_jsonl(study.lay.comparisons / "samples.jsonl")
    run_labelers = json.loads((study.lay.comparisons / "labelers.json").read_text())
    labeler = dataclasses.replace(LabelerConfig(**run_labelers["labeler_config"]), noise_std=run_cfg.labeler_noise_std)
    ranked, figures, used = label_comparisons(tasks_of(rows), [r["responses"] for r in rows],
                                              [r["terminated"] for r in rows], seed=run_cfg.seed, labeler=labeler,
                                              target_agreement=agreement, calibrate=True)
    train, _held = split_rows(ranked, run_cfg.rm_heldout_fraction, run_cfg.seed)
    figures = {"target_agreement": agreement, "noise_std": used.noise_std,
               "labeler_agreement": figures["labeler_agreement"], "oracle_agreement": figures["oracle_agreement"],
               "train_rankings": len(train), **({"calibration_error": figures["calibration_error"]}
                                               if "calibration_error" in figures else {})}
    where.mkdir(parents=True, exist_ok=True)
    write_jsonl(data, train)
    write_json(figures_path, figures, indent=2)
    return train, figures


def labeler_noise_study(study: Study) -> dict:
    cfg = study.cfg
    sft = study.sft_eval()
    heldout = study.heldout_rows()
    rows = []
    for agreement in cfg.agreements:
        train, labelers = relabel(study, agreement)
        name = f"agreement_{agreement:g}"
        per_seed = train_point(study, name, lambda seed: study.out / name / "comparisons.jsonl", heldout)
        rows.append({"target_agreement": agreement, **labelers,
                     "rm_accuracy_vs_gold": figure([v["rm_accuracy"] for v in per_seed.values()], (0.0, 1.0)),
                     "ppo_gold": figure([v["eval"]["gold"] for v in per_seed.values()]),
                     "ppo_win_vs_sft": figure([win_indicators(v["eval"]["gold"], sft["gold"])
                                               for v in per_seed.values()], (0.0, 1.0))})
    report = {"study": "labeler_noise", "run_dir": str(study.run), "seeds": list(cfg.seeds),
              "heldout_rankings": len(heldout), "points": rows}
    x = "labelers' agreement (measured on the comparison samples)"
    panels = [{"xlabel": x, "ylabel": "RM accuracy vs gold (held-out rankings)",
               "series": {"reward model": [(r["labeler_agreement"], r["rm_accuracy_vs_gold"]) for r in rows]}},
              {"xlabel": x, "ylabel": "PPO win rate vs SFT (gold)", "hline": (0.5, "even"),
               "series": {"PPO": [(r["labeler_agreement"], r["ppo_win_vs_sft"]) for r in rows]}}]
    lines = table(["target agreement", "reached", "labelers vs gold", "noise std", "RM accuracy vs gold", "PPO gold",
                   "PPO win rate vs SFT"],
                  [[f"{r['target_agreement']:.2f}", f"{r['labeler_agreement']:.3f}", f"{r['oracle_agreement']:.3f}",
                    f"{r['noise_std']:.3f}", r["rm_accuracy_vs_gold"], r["ppo_gold"], r["ppo_win_vs_sft"]]
                   for r in rows])
    write_study_report(study.out, "labeler_noise", report, [("Per labeler agreement", lines)],
                       {"labeler_noise.png": (panels, "Labeler noise: RM accuracy and PPO's win rate (95% intervals)")})
    return report
