"""The reasoning world over several RL algorithms and seeds: each figure as the mean over
seeds with its 95% t-interval (each seed draws its own problems and trains its own base,
SFT and RL models, so the spread between seeds carries all of it), the response length
of right and wrong responses over training, and Dr. GRPO's claim checked.

Writes sweep.json, sweep.md, sweep_length.png and sweep_reward.png into the run directory."""
from __future__ import annotations

import math
from pathlib import Path

from rlhfkit.experiment.intervals import LEVEL, t_quantile
from rlhfkit.io import write_json

# (key in sweep.json, what it is) of each RL run's figures
FIGURES = (
    ("pass_at_1", "pass@1 (--eval_samples samples on each evaluation problem)"),
    ("pass_at_16", "pass@16"),
    ("pass_at_1_add", "pass@1, addition"),
    ("pass_at_1_mul", "pass@1, multiplication"),
    ("gain_pass_at_1", "pass@1 minus SFT's"),
    ("right_answer_wrong_working", "right answers on wrong working"),
    ("wrong_answer_right_working", "wrong answers on right working"),
    ("length_right_end", "tokens of a right response, last quarter of training"),
    ("length_wrong_end", "tokens of a wrong response, last quarter of training"),
    ("length_wrong_change", "wrong responses' tokens, last quarter minus first logged step"),
    ("rl_seconds", "seconds of the RL stage"),
)


def t_interval(values: list[float], level: float = LEVEL) -> dict:
    """Mean of per-seed values with its Student-t interval (None with fewer than two)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "ci95": [None, None], "seeds": 0}
    mean = sum(values) / len(values)
    if len(values) < 2:
        return {"mean": mean, "ci95": [None, None], "seeds": len(values)}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = t_quantile(0.5 + level / 2.0, len(values) - 1) * sd / math.sqrt(len(values))
    return {"mean": mean, "ci95": [mean - half, mean + half], "seeds": len(values)}


def _late_mean(curve: list[dict], key: str) -> float | None:
    """Mean of a training-curve figure over the last quarter of the logged steps."""
    values = [row[key] for row in curve[len(curve) * 3 // 4:] if row.get(key) is not None]
    return sum(values) / len(values) if values else None


def run_figures(report: dict) -> dict:
    """One RL run's figures (FIGURES' keys) from its report."""
    rl, curve = report["models"]["rl"], report["rl_training"]
    first_wrong = next((row["length_wrong"] for row in curve if row.get("length_wrong") is not None), None)
    wrong_end = _late_mean(curve, "length_wrong")
    return {
        "pass_at_1": rl["pass_at_1"], "pass_at_16": rl["pass_at_k"].get("16"),
        "pass_at_1_add": rl["pass_at_1_by_op"].get("add"), "pass_at_1_mul": rl["pass_at_1_by_op"].get("mul"),
        "gain_pass_at_1": report["gain_pass_at_1"],
        "right_answer_wrong_working": rl["right_answer_wrong_working"],
        "wrong_answer_right_working": rl["wrong_answer_right_working"],
        "length_right_end": _late_mean(curve, "length_right"), "length_wrong_end": wrong_end,
        "length_wrong_change": wrong_end - first_wrong if None not in (wrong_end, first_wrong) else None,
        "rl_seconds": report["seconds"]["rl"],
    }


def sweep_summary(reports: dict, algos: list[str], seeds: list[int]) -> dict:
    """{"algos": {algo: {figure: interval}}, "base"/"sft": {figure: interval}, "dr_grpo_check": ...}."""
    per_run = {key: run_figures(r) for key, r in reports.items()}
    out = {"seeds": seeds, "level": LEVEL, "algos": {}, "runs": {f"{a}/seed{s}": per_run[a, s] for a, s in per_run}}
    for algo in algos:
        out["algos"][algo] = {k: t_interval([per_run[algo, s][k] for s in seeds]) for k, _ in FIGURES}
    first = algos[0]  # base and SFT are the same models for every algorithm of a seed
    for name in ("base", "sft"):
        models = [reports[first, s]["models"][name] for s in seeds]
        out[name] = {"pass_at_1": t_interval([m["pass_at_1"] for m in models]),
                     "pass_at_16": t_interval([m["pass_at_k"].get("16") for m in models]),
                     "pass_at_1_mul": t_interval([m["pass_at_1_by_op"].get("mul") for m in models])}
    if "grpo" in algos and "dr_grpo" in algos:
        # Dr. GRPO (Liu et al. 2025, sec. 3.1): 1/|o_i| gives a long wrong response a smaller
        # penalty per token, so GRPO's wrong responses should grow longer than Dr. GRPO's
        diffs = {k: [per_run["grpo", s][k] - per_run["dr_grpo", s][k] for s in seeds
                     if None not in (per_run["grpo", s][k], per_run["dr_grpo", s][k])]
                 for k in ("length_wrong_end", "length_wrong_change", "length_right_end")}
        out["dr_grpo_check"] = {f"grpo_minus_dr_grpo_{k}": t_interval(v) for k, v in diffs.items()}
    return out


def _mean_curve(reports: list[dict], key: str) -> tuple[list[int], list[float]]:
    """A training-curve figure averaged over seeds at each logged step (steps where any seed has it)."""
    by_step: dict[int, list[float]] = {}
    for report in reports:
        for row in report["rl_training"]:
            if row.get(key) is not None:
                by_step.setdefault(row["step"], []).append(row[key])
    steps = sorted(by_step)
    return steps, [sum(by_step[s]) / len(by_step[s]) for s in steps]


def plot_sweep(reports: dict, algos: list[str], seeds: list[int], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, panels in (("sweep_length.png", (("length_right", "right responses: tokens"),
                                                ("length_wrong", "wrong responses: tokens"))),
                         ("sweep_reward.png", (("accuracy", "reward (batch accuracy)"),
                                               ("response_length", "all responses: tokens")))):
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
        for ax, (key, title) in zip(axes[0], panels):
            for algo in algos:
                steps, values = _mean_curve([reports[algo, s] for s in seeds], key)
                ax.plot(steps, values, label=algo)
            ax.set_title(f"{title}, mean of {len(seeds)} seed(s)")
            ax.set_xlabel("RL step")
            ax.grid(alpha=0.3)
        axes[0][0].legend()
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)


def _cell(figure: dict, digits: int = 3) -> str:
    if figure["mean"] is None:
        return "-"
    lo, hi = figure["ci95"]
    return f"{figure['mean']:.{digits}f}" + (f" [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None else "")


def sweep_markdown(summary: dict) -> str:
    keys = [k for k, _ in FIGURES]
    lines = [f"# The reasoning world: RL algorithms over {len(summary['seeds'])} seed(s) {summary['seeds']}", "",
             (f"Mean over seeds [{summary['level']:.0%} t-interval]; each seed draws its own problems and trains "
              "its own base and SFT models."), "",
             "| algo | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name in ("base", "sft"):
        row = summary[name]
        lines.append(f"| {name} | " + " | ".join(_cell(row[k]) if k in row else "" for k in keys) + " |")
    for algo, row in summary["algos"].items():
        lines.append(f"| {algo} | " + " | ".join(_cell(row[k], 1 if "length" in k or "seconds" in k else 3)
                                                  for k in keys) + " |")
    lines += ["", *(f"- `{k}`: {text}" for k, text in FIGURES), ""]
    if "dr_grpo_check" in summary:
        lines += [("Dr. GRPO's claim (GRPO's per-response normalisation lengthens wrong responses), GRPO minus "
                   "Dr. GRPO, paired by seed:"), ""]
        lines += [f"- {k}: {_cell(v, 2)}" for k, v in summary["dr_grpo_check"].items()]
        lines.append("")
    lines += ["![length](sweep_length.png)", "", "![reward](sweep_reward.png)", ""]
    return "\n".join(lines)


def write_sweep(reports: dict, algos: list[str], seeds: list[int], out: Path) -> dict:
    summary = sweep_summary(reports, algos, seeds)
    write_json(out / "sweep.json", summary, indent=2)
    plot_sweep(reports, algos, seeds, out)
    (out / "sweep.md").write_text(sweep_markdown(summary))
    print(sweep_markdown(summary))
    return summary
