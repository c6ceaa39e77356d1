"""The world report's plots (report.md shows them): Likert per model, training curves,
gold and proxy reward against sqrt(KL), and the gold-vs-KL frontier of every method.
Figures read from report.json are means over seeds; their 95% intervals are drawn
as error bars."""
from __future__ import annotations

import json
import math
from pathlib import Path

from rlhfkit.experiment.labels import LABELS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _error_bar(figure: dict) -> tuple[float, float]:
    """(below, above) the mean: the 95% interval as matplotlib's yerr wants it."""
    lo, hi = figure.get("ci95") or (None, None)
    mean = figure["mean"]
    return (mean - lo if lo is not None else 0.0), (hi - mean if hi is not None else 0.0)


def plot_likert(report: dict, path: Path) -> None:
    plt = _plt()
    names = list(report["models"])
    figures = [report["models"][n]["likert"] for n in names]
    values = [f["mean"] for f in figures]
    bars = list(zip(*[_error_bar(f) for f in figures]))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names)), 4.2))
    colors = (["#999", "#666", "#4a90d9", "#d9534f", "#f0ad4e", "#5cb85c", "#9b59b6", "#1abc9c"] * 3)[:len(names)]
    ax.bar(range(len(names)), values, yerr=bars, capsize=3, color=colors)
    ax.set_xticks(range(len(names)), [LABELS.get(n, n) for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(1, 7)
    ax.set_ylabel("mean Likert (1-7, gold judge)")
    seeds = report.get("seeds", [])
    ax.set_title(f"Quality on held-out prompts (T = 1; {len(seeds)} seed{'s' if len(seeds) != 1 else ''}, 95% "
                 "intervals)")
    for i, v in enumerate(values):
        ax.text(i, v + bars[1][i] + 0.05, f"{v:.2f}", ha="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _series(rows: list[dict], key: str) -> tuple[list, list]:
    pts = [(r["step"], r[key]) for r in rows if key in r and isinstance(r[key], (int, float)) and not r.get("final")]
    return [p[0] for p in pts], [p[1] for p in pts]


# metric keys in the plots' legends, in the report's own words
METRIC_LABELS = {"loss/train": "training loss", "loss/val": "validation loss", "loss/reward": "Bradley-Terry loss",
                 "rewards/accuracy": "training accuracy", "val/accuracy": "held-out accuracy",
                 "objective/scores_rm": "proxy reward (RM)", "objective/scores_gold": "gold (judge)",
                 "objective/rlhf_reward": "proxy - beta KL", "objective/kl": "KL to SFT (nats)",
                 "response/length": "response length / 10 (tokens)", "response/eos_rate": "share ending in EOS",
                 "loss/dpo": "loss", "rewards/margin": "implicit reward margin", "loss/nll": "NLL of the chosen"}
SCALE = {"response/length": 0.1}  # so that length shares a panel with KL and the EOS rate


def training_panels(recipe: Path, rl_dirs: dict[str, Path], direct_dirs: dict[str, Path]) -> list[tuple]:
    """(title, metrics file, keys): SFT, the reward model(s), then each RL run's rewards and its
    KL and length, and each direct method's loss and accuracy."""
    panels = [("SFT", recipe / "sft" / "metrics.jsonl", ["loss/train", "loss/val"])]
    if (recipe / "sft_large" / "metrics.jsonl").exists():
        panels.append(("SFT of base-large (RM init)", recipe / "sft_large" / "metrics.jsonl", ["loss/train", "loss/val"]))
    rm_keys = ["loss/reward", "rewards/accuracy", "val/accuracy"]
    panels.append(("reward model", recipe / "rm" / "metrics.jsonl", rm_keys))
    if (recipe / "rm_ai" / "metrics.jsonl").exists():
        panels.append(("reward model on AI labels", recipe / "rm_ai" / "metrics.jsonl", rm_keys))
    for name, d in rl_dirs.items():
        label = LABELS.get(name, name)
        panels.append((f"{label}: rewards", d / "metrics.jsonl", ["objective/scores_rm", "objective/scores_gold",
                                                                    "objective/rlhf_reward"]))
        panels.append((f"{label}: KL and length", d / "metrics.jsonl", ["objective/kl", "response/length",
                                                                          "response/eos_rate"]))
    for name, d in direct_dirs.items():
        keys = [k for k in ("loss/dpo", "loss/nll", "rewards/accuracy", "rewards/margin")
                if any(k in r for r in read_metrics(d / "metrics.jsonl"))]
        panels.append((LABELS.get(name, name), d / "metrics.jsonl", keys))
    return panels


def plot_training(recipe: Path, path: Path, rl_dirs: dict[str, Path], direct_dirs: dict[str, Path] | None = None) -> None:
    """One panel per stage that trained, four to a row (training_panels)."""
    plt = _plt()
    panels = training_panels(recipe, rl_dirs, direct_dirs or {})
    columns = min(4, len(panels))
    rows_ = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows_, columns, figsize=(4.2 * columns, 3.4 * rows_), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, metrics, keys) in zip(axes.flat, panels):
        rows = read_metrics(metrics)
        for key in keys:
            x, y = _series(rows, key)
            scale = SCALE.get(key, 1.0)
            final = [(r["step"], r[key]) for r in rows if r.get("final") and isinstance(r.get(key), (int, float))]
            name = METRIC_LABELS.get(key, key)
            if x:
                ax.plot(x, [v * scale for v in y], marker="." if len(x) < 30 else None, label=name)
            if final:  # end-of-training evaluation (e.g. validation loss)
                ax.plot([f[0] for f in final], [f[1] * scale for f in final], "*", ms=10, label=f"{name} (final)")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def overoptimisation_points(metrics_path: Path) -> dict[str, list[float]]:
    """sqrt(KL), proxy (RM, normalised) and gold per logged PPO step."""
    rows = [r for r in read_metrics(metrics_path) if "objective/kl" in r]
    return {"step": [r["step"] for r in rows],
            "sqrt_kl": [math.sqrt(max(r["objective/kl"], 0.0)) for r in rows],
            "proxy": [r.get("objective/scores_rm", float("nan")) for r in rows],
            "gold": [r.get("objective/scores_gold", float("nan")) for r in rows]}


def _smooth(values: list[float], window: int = 3) -> list[float]:
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - window + 1):i + 1] if math.isfinite(v)]
        out.append(sum(part) / len(part) if part else float("nan"))
    return out


def plot_overoptimisation(runs: dict[str, Path], path: Path, title: str = "Over-optimisation") -> None:
    """Gold score (left) and proxy reward (right) against sqrt(KL to SFT), one
    point per logged PPO step (each a batch of rollouts), with a running mean
    over 3 steps drawn through them in training order (Gao et al. 2022)."""
    plt = _plt()
    fig, (ax_gold, ax_proxy) = plt.subplots(1, 2, figsize=(10, 4))
    colors = ["#d9534f", "#4a90d9", "#5cb85c", "#f0ad4e", "#9b59b6", "#333"]
    for i, (name, metrics) in enumerate(runs.items()):
        p = overoptimisation_points(metrics)
        c = colors[i % len(colors)]
        for ax, key in ((ax_gold, "gold"), (ax_proxy, "proxy")):
            ax.scatter(p["sqrt_kl"], p[key], s=10, color=c, alpha=0.35)
            ax.plot(_smooth(p["sqrt_kl"]), _smooth(p[key]), "-", color=c, label=LABELS.get(name, name))
    ax_gold.set_ylabel("gold score (judge, on the PPO rollouts)")
    ax_proxy.set_ylabel("proxy reward (RM, std units)")
    for ax in (ax_gold, ax_proxy):
        ax.set_xlabel("sqrt(KL to SFT), nats^0.5 per response")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_frontier(report: dict, ppo_metrics: dict[str, Path], path: Path) -> None:
    """Gold score against sqrt(KL to SFT) for SFT and every trained method, evaluated
    on the held-out prompts (mean over seeds, 95% interval of gold), with the RL runs'
    training trajectories behind them: the gold-vs-KL frontier on one plot."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, metrics in ppo_metrics.items():
        p = overoptimisation_points(metrics)
        ax.plot(_smooth(p["sqrt_kl"]), _smooth(p["gold"]), "-", alpha=0.4, label=f"{LABELS.get(name, name)} (training)")
    for i, (name, fig_) in enumerate(report["models"].items()):
        kl = fig_.get("kl_to_sft", {}).get("mean")
        if name in ("base_small", "base_large") or kl is None:
            continue
        x, gold = math.sqrt(max(kl, 0.0)), fig_["gold"]
        ax.errorbar([x], [gold["mean"]], yerr=[[v] for v in _error_bar(gold)], fmt="o", capsize=3, zorder=3)
        ax.annotate(LABELS.get(name, name), (x, gold["mean"]), textcoords="offset points",
                    xytext=(5, 6 if i % 2 else -10), fontsize=7)
    ax.set_xlabel("sqrt(KL to SFT), nats^0.5 per response")
    ax.set_ylabel("gold score (held-out prompts, T = 1)")
    ax.set_title("Gold vs KL: every method")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
