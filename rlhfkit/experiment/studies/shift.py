"""shift: the reward model and PPO with one task family (and, separately, one
constraint) held out of the comparisons. The RM's accuracy against gold on rankings
of the held-out family (the run's held-out rankings and the removed training ones:
it saw neither) against the seen families' held-out rankings, and PPO's gain in gold
over SFT on the evaluation prompts of the held-out family against the others. The
run's own RM and PPO, which saw every family, are the reference."""
from __future__ import annotations

from rlhfkit.experiment.studies.common import Study, cached_values, figure, instruction_of, restrict, rm_accuracy_values
from rlhfkit.experiment.studies.points import train_point
from rlhfkit.experiment.studies.report import table, write_study_report
from rlhfkit.world.tasks import parse_instruction


def held_out(row_or_task, kind: str, value: str) -> bool:
    """Whether a comparison row (or a task) belongs to the held-out family / constraint."""
    task = row_or_task if hasattr(row_or_task, "family") else parse_instruction(instruction_of(row_or_task))
    return task.family == value if kind == "family" else (task.constraint or "none") == value


def shift_study(study: Study) -> dict:
    cfg = study.cfg
    sft = study.sft_eval()
    heldout, train = study.heldout_rows(), study.train_rows()
    reference_seed = study.run_cfg.seed
    points = []
    for kind, value in (("family", cfg.shift_family), ("constraint", cfg.shift_constraint)):
        if not value:
            continue
        name = f"{kind}_{value}"
        kept = [r for r in train if not held_out(r, kind, value)]
        removed = [r for r in train if held_out(r, kind, value)]
        rows = heldout + removed  # the RM's accuracy is measured on these: the first len(heldout) are the run's
        unseen = [held_out(r, kind, value) for r in rows]
        seen = [not u and i < len(heldout) for i, u in enumerate(unseen)]
        per_seed = train_point(study, name, lambda seed: kept, rows)
        prompt_unseen = [held_out(t, kind, value) for t in study.eval_tasks]
        gains = {s: [p - q for p, q in zip(v["eval"]["gold"], sft["gold"])] for s, v in per_seed.items()}
        # the reference saw everything: its accuracy on the run's held-out rankings only
        reference_rm = cached_values(study.out / name / "reference_rm_accuracy.json",
                                     lambda: rm_accuracy_values(study.lay.rm, heldout))
        reference_eval = study.evaluate(study.ppo(study.out / "reference_ppo", reference_seed),
                                        study.out / "reference_eval.json", reference_seed)
        reference_gain = [p - q for p, q in zip(reference_eval["gold"], sft["gold"])]
        points.append({
            "kind": kind, "held_out": value, "train_rankings": len(kept), "removed_rankings": len(removed),
            "unseen_rankings_measured": sum(unseen), "seen_rankings_measured": sum(seen),
            "comparisons_hold_it": any(held_out(r, kind, value) for r in kept),
            "rm_accuracy_unseen": figure([restrict(v["rm_accuracy"], unseen) for v in per_seed.values()], (0, 1)),
            "rm_accuracy_seen": figure([restrict(v["rm_accuracy"], seen) for v in per_seed.values()], (0, 1)),
            "gain_unseen": figure([restrict(g, prompt_unseen) for g in gains.values()]),
            "gain_seen": figure([restrict(g, [not u for u in prompt_unseen]) for g in gains.values()]),
            "reference": {
                "seeds": [reference_seed],
                "rm_accuracy_unseen": figure([restrict(reference_rm, unseen[:len(heldout)])], (0, 1)),
                "rm_accuracy_seen": figure([restrict(reference_rm, seen[:len(heldout)])], (0, 1)),
                "gain_unseen": figure([restrict(reference_gain, prompt_unseen)]),
                "gain_seen": figure([restrict(reference_gain, [not u for u in prompt_unseen])])}})
    report = {"study": "shift", "run_dir": str(study.run), "seeds": list(cfg.seeds), "points": points}
    series = {}
    for label, key in (("RM accuracy vs gold", "rm_accuracy"), ("gold gain over SFT", "gain")):
        series[label] = {f"{p['kind']} {p['held_out']} held out": [(0, p[f"{key}_seen"]), (1, p[f"{key}_unseen"])]
                         for p in points}
        series[label].update({f"reference (saw {p['kind']} {p['held_out']})": [
            (0, p["reference"][f"{key}_seen"]), (1, p["reference"][f"{key}_unseen"])] for p in points})
    panels = [{"xlabel": "0: seen families / constraints, 1: the held-out one", "ylabel": label, "series": s}
              for label, s in series.items()]
    lines = table(["held out", "model", "RM accuracy: seen", "RM accuracy: held out", "gain: seen", "gain: held out"],
                  [row for p in points for row in (
                      [f"{p['kind']} {p['held_out']}", "trained without it", p["rm_accuracy_seen"],
                       p["rm_accuracy_unseen"], p["gain_seen"], p["gain_unseen"]],
                      [f"{p['kind']} {p['held_out']}", "the run's (saw it; 1 seed)", p["reference"]["rm_accuracy_seen"],
                       p["reference"]["rm_accuracy_unseen"], p["reference"]["gain_seen"],
                       p["reference"]["gain_unseen"]])])
    write_study_report(study.out, "shift", report, [("Held-out family and constraint", lines)],
                       {"shift.png": (panels, "Distribution shift: seen vs held out (95% intervals)")})
    return report
