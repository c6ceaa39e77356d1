"""A study's report: report.json (every figure as mean, 95% interval and seed count),
report.md (a table per panel, the plots) and plots with interval bars."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from rlhfkit.io import write_json

COLORS = ["#d9534f", "#4a90d9", "#5cb85c", "#f0ad4e", "#9b59b6", "#333333"]


def fmt(f: dict | float | None, digits: int = 3) -> str:
    """'0.512 [0.490, 0.534]' for a figure, the number for a plain value, n/a for none."""
    if f is None:
        return "n/a"
    if not isinstance(f, dict):
        return "n/a" if not math.isfinite(f) else f"{f:.{digits}f}"
    if f.get("mean") is None:
        return "n/a"
    lo, hi = f.get("ci95", [None, None])
    interval = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None and hi is not None else ""
    return f"{f['mean']:.{digits}f}{interval}"


def table(columns: Sequence[str], rows: Sequence[Sequence], digits: int = 3) -> list[str]:
    """A markdown table; dict cells are figures (mean [95% interval])."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c, digits) for c in row) + " |")
    return lines


def error_bars(f: dict) -> tuple[float, float]:
    lo, hi = f["ci95"]
    if lo is None or hi is None:
        return 0.0, 0.0
    return f["mean"] - lo, hi - f["mean"]


def plot_panels(path: Path, panels: Sequence[dict], title: str) -> bool:
    """One subplot per panel {"xlabel", "ylabel", "series": {label: [(x, figure), ...]},
    optional "logx", "curves": {label: ([x], [y])} (fitted lines), "hline": (y, label)};
    every point drawn at its mean with its 95% interval as a bar. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for i, (label, points) in enumerate(panel["series"].items()):
            points = [(x, f) for x, f in points if f and f.get("mean") is not None]
            if not points:
                continue
            c = COLORS[i % len(COLORS)]
            bars = list(zip(*[error_bars(f) for _, f in points]))
            ax.errorbar([x for x, _ in points], [f["mean"] for _, f in points], yerr=bars, fmt="o-", ms=4,
                        capsize=3, color=c, label=label)
        for i, (label, (xs, ys)) in enumerate(panel.get("curves", {}).items()):
            ax.plot(xs, ys, "--", color=COLORS[i % len(COLORS)], alpha=0.7, label=label)
        if panel.get("hline") is not None:
            y, label = panel["hline"]
            ax.axhline(y, color="#777777", lw=0.8, ls=":", label=label)
        if panel.get("logx"):  # ticks at the measured counts: matplotlib's minor labels collide on a short log axis
            ax.set_xscale("log")
            ticks = sorted({x for points in panel["series"].values() for x, _ in points})
            ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
            ax.minorticks_off()
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def seed_note(seeds: Sequence[int]) -> str:
    n = len(seeds)
    return f"{n} seed{'s' if n != 1 else ''} ({', '.join(map(str, seeds))})"


def write_study_report(out: Path, name: str, report: dict, sections: Sequence[tuple[str, list[str]]],
                       plots: dict[str, tuple[list[dict], str]]) -> None:
    """report.json, the plots (name.png: (panels, title)) and report.md (sections: (heading, lines))."""
    drawn = [png for png, (panels, title) in plots.items() if plot_panels(out / png, panels, title)]
    report["plots"] = drawn
    write_json(out / "report.json", report, indent=1)
    lines = [f"# Study: {name}", "", f"From `{report['run_dir']}`, {seed_note(report['seeds'])}; every figure is the "
             "mean over seeds and prompts with its 95% interval (two-way random effects over seeds x prompts, "
             "rlhfkit/experiment/intervals.py).", ""]
    for heading, body in sections:
        lines += [f"## {heading}", "", *body, ""]
    lines += [f"![{png}]({png})" for png in drawn]
    (out / "report.md").write_text("\n".join(lines) + "\n")
