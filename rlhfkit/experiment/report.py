"""report.json and report.md of a world run (rlhfkit.experiment.run), rebuilt from the
files the stages stored, so a resumed run writes the same report.

report.json:
    world_version  2
    models       base_small | base_large | sft | ppo (| rloo | dpo | bon4 | ppo_gold | ...): path,
                 params, gold, likert, exact, follows, follows_constrained, terminated, polite,
                 length, kl_to_sft, webtext_loss, per_family, per_constraint, best_temperature
    win_rates    sft_vs_base_small, and for every method M (ppo, rloo, dpo, bon4, ...):
                 M_vs_sft (T = 1 both), M_vs_sft_greedy (greedy both), M_best_vs_sft_best
                 (each at its best temperature, chosen on the validation prompts),
                 M_vs_sft_best_temperature (M at T = 1 against SFT at its best), M_vs_base_large
    method_table one row per method: gold, follows_constrained, exact, kl_to_sft and the
                 three win rates against SFT
    likert_ratio_vs_base_large  every model's Likert over base-large's (paper: 2.94x)
    training     per RL run: the proxy (RM) and gold reward over the first and last steps
    reward_model val_accuracy, labeler_agreement, val_accuracy_vs_gold, oracle_agreement, ...
    eval         prompts, validation prompts, temperature, seed
    seconds      per stage

report.md adds, for people: the InstructGPT-style table, a Likert bar chart,
training curves per stage, and the over-optimisation picture (gold and proxy
reward against sqrt(KL) over PPO training).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from rlhfkit.io import write_json
from rlhfkit.losses.advantages import GROUP_ADVANTAGES
from rlhfkit.world.judge import win_rate

WORLD_VERSION = 2
FIGURE_KEYS = ("path", "params", "gold", "likert", "exact", "follows", "follows_constrained", "terminated", "polite",
               "length", "kl_to_sft", "webtext_loss", "per_family", "per_constraint", "best_temperature")
RM_KEYS = ("val_accuracy", "labeler_agreement", "val_accuracy_vs_gold", "oracle_agreement", "exact_pairs",
           "exact_pair_accuracy", "exact_pair_accuracy_per_family", "follows_pairs", "follows_pair_accuracy",
           "score_correlation", "format_preference", "format_pairs", "reward_form", "reward_scale", "init")
# The method table's rows, in order (those a run trained): SFT, then every method.
METHOD_ORDER = ("sft", "bon4", "bon16", "ppo", "ppo_ai", "rloo", "grpo", "dpo", "ipo", "orpo", "kto", "ppo_gold")
TRAINED = ("base_small", "base_large", "sft")  # models that are not an alignment method
PAPER_LIKERT_RATIO = 2.94  # InstructGPT 1.3B over GPT-3 175B (Figure 1)
RM_INIT_LABELS = {"sft_large": "base-large fine-tuned on the demonstrations (sft_large)", "base_large": "base-large",
                  "sft": "the SFT policy (base-small fine-tuned on the demonstrations)"}
LABELS = {"base_small": "base-small", "base_large": "base-large (\"GPT-3\")", "sft": "SFT", "ppo": "PPO (RLHF)",
          "ppo_ptx": "PPO-ptx", "rloo": "RLOO (no critic)", "grpo": "GRPO (no critic)", "dpo": "DPO", "ipo": "IPO",
          "cdpo": "cDPO", "robust": "robust DPO", "hinge": "SLiC hinge", "simpo": "SimPO", "kto": "KTO",
          "orpo": "ORPO (from base-small)", "ppo_gold": "PPO on the gold judge (oracle, upper bound)",
          "bon4": "best-of-4 (RM)", "bon16": "best-of-16 (RM)",
          "ppo_ai": "PPO on AI feedback (RLAIF)"}


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_eval(out: Path, name: str) -> dict:
    return json.loads((out / "eval" / f"{name}.json").read_text())


def win_rates(evals: dict[str, dict]) -> tuple[dict, dict]:
    """Every method against SFT (T = 1, greedy, best temperature against best) and
    base-large, and SFT against base-small. Win rates are on the same prompts."""
    def scores(name, key="t1"):
        return evals[name]["decodings"][key]["scores"]

    sft_best = "best" if "best" in evals["sft"]["decodings"] else "t1"
    rates = {"sft_vs_base_small": win_rate(scores("sft"), scores("base_small"))}
    if "greedy" in evals["sft"]["decodings"] and "greedy" in evals["base_small"]["decodings"]:
        rates["sft_vs_base_small_greedy"] = win_rate(scores("sft", "greedy"), scores("base_small", "greedy"))
    # every method (ppo, ppo_ptx, dpo, bon4, ...) against base-large and SFT, as the paper's Figure 1
    for name in [n for n in evals if n not in TRAINED]:
        decodings = evals[name]["decodings"]
        rates[f"{name}_vs_base_large"] = win_rate(scores(name), scores("base_large"))
        rates[f"{name}_vs_sft"] = win_rate(scores(name), scores("sft"))
        rates[f"{name}_vs_sft_best_temperature"] = win_rate(scores(name), scores("sft", sft_best))
        if "best" in decodings:
            rates[f"{name}_best_vs_sft_best"] = win_rate(scores(name, "best"), scores("sft", sft_best))
        if "greedy" in decodings:
            rates[f"{name}_vs_sft_greedy"] = win_rate(scores(name, "greedy"), scores("sft", "greedy"))
    if "ppo_ptx" in evals and "ppo" in evals:
        rates["ppo_ptx_vs_ppo"] = win_rate(scores("ppo_ptx"), scores("ppo"))
    if "ppo_gold" in evals and "ppo" in evals:
        rates["ppo_gold_vs_ppo"] = win_rate(scores("ppo_gold"), scores("ppo"))
    best = evals["sft"]["decodings"].get("best", {}).get("temperature", 1.0)
    return rates, {"sft_best_temperature": best}


def method_table(models: dict, rates: dict) -> list[dict]:
    """The method table's rows: SFT and every method the run has, in METHOD_ORDER
    (others after), with gold, follows, exact, KL and the win rates against SFT."""
    names = [n for n in METHOD_ORDER if n in models] + [n for n in models if n not in METHOD_ORDER and n not in TRAINED]
    rows = []
    for name in names:
        fig = models[name]
        rows.append({"method": name, "gold": fig["gold"], "follows": fig.get("follows"),
                     "follows_constrained": fig.get("follows_constrained"), "exact": fig["exact"],
                     "kl_to_sft": fig["kl_to_sft"], "length": fig["length"],
                     "vs_sft": 0.5 if name == "sft" else rates.get(f"{name}_vs_sft"),
                     "vs_sft_greedy": 0.5 if name == "sft" else rates.get(f"{name}_vs_sft_greedy"),
                     "best_vs_sft_best": 0.5 if name == "sft" else rates.get(f"{name}_best_vs_sft_best"),
                     "best_temperature": fig.get("best_temperature"),
                     "oracle": name == "ppo_gold"})
    return rows


def training_curve(metrics_path: Path, window: int = 3) -> dict:
    """Proxy (RM) and gold reward of an RL run's rollouts: the mean over the first
    and the last `window` logged steps, and the number of steps."""
    rows = [r for r in read_metrics(metrics_path) if "objective/kl" in r and not r.get("final")]
    out: dict = {"steps": len(rows)}
    for key, name in (("objective/scores_rm", "proxy"), ("objective/scores_gold", "gold"), ("objective/kl", "kl")):
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        if values:
            out[f"{name}_first"] = sum(values[:window]) / len(values[:window])
            out[f"{name}_last"] = sum(values[-window:]) / len(values[-window:])
    return out


def _rm_form_line(rm: dict) -> list[str]:
    form = rm.get("reward_form")
    init = RM_INIT_LABELS.get(rm.get("init", "base_large"), rm.get("init"))
    if form == "mean_logprob":
        text = (f"{init} kept whole, LM head included; a response scores {rm.get('reward_scale')} x its mean "
                "token log-likelihood (SimPO's implicit reward), trained with Bradley-Terry over all pairs per prompt")
    elif form == "head":
        text = f"{init} with a new scalar head on the last token (InstructGPT), Bradley-Terry over all pairs per prompt"
    else:
        return []
    return [f"- Reward model: {text}.", ""]


def _rm_learned_rows(rm: dict) -> list[str]:
    """What the reward model learned (runs before this figure existed have none)."""
    if "exact_pair_accuracy" not in rm:
        return []
    per_family = ", ".join(f"{f} {_f(a, '.0%')}" for f, a in rm["exact_pair_accuracy_per_family"].items())
    corr = rm["score_correlation"]
    return [f"| RM prefers the exactly-right response ({rm['exact_pairs']} pairs where only one is) | "
            f"{_f(rm['exact_pair_accuracy'], '.1%')} |",
            f"| correlation of the RM score with gold / with length in characters | "
            f"{_f(corr['gold'], '.2f')} / {_f(corr['length'], '.2f')} |",
            f"| RM prefers the response in the asked format ({rm.get('follows_pairs')} pairs where only one is) | "
            f"{_f(rm.get('follows_pair_accuracy'), '.1%')} |", "",
            f"Per family, the RM prefers the exactly-right response of such pairs: {per_family}."]


def _ai_labeler_lines(report: dict) -> list[str]:
    ai = report.get("ai_labeler")
    if not ai:
        return []
    return ["## AI feedback (RLAIF)", "",
            f"The AI labeler ({ai['judge']}, Constitutional AI's multiple choice after the web text's review "
            f"template, both orders averaged) ranked the {ai['train_rankings']} training rankings' responses for "
            f"{ai['forward_passes']:,} judge forward passes ({_f(ai['seconds'], '.0f')} s).", "",
            "| on the held-out pairs | agreement |", "|---|---:|",
            f"| AI labeler vs gold | {_f(ai['agreement_gold'], '.1%')} |",
            f"| AI labeler vs the simulated labeler | {_f(ai['agreement_labeler'], '.1%')} |",
            f"| simulated labeler vs gold | {_f(ai['labeler_agreement_gold'], '.1%')} |",
            f"| reward model on AI labels vs the labeler / vs gold | {_f(ai['rm_val_accuracy'], '.1%')} / "
            f"{_f(ai['rm_val_accuracy_vs_gold'], '.1%')} |", ""]


def build_report(out: Path, models: dict[str, str], seconds: dict[str, float], seed: int) -> tuple[dict, dict]:
    evals = {name: load_eval(out, name) for name in models}
    rates, extra = win_rates(evals)
    rm = json.loads((out / "rm" / "heldout.json").read_text())
    figures = {name: {k: evals[name]["figures"].get(k) for k in FIGURE_KEYS} for name in models}
    large_likert = figures["base_large"]["likert"]
    counts = json.loads((out / "data" / "counts.json").read_text()) if (out / "data" / "counts.json").exists() else {}
    report = {
        "world_version": WORLD_VERSION,
        "models": figures,
        "win_rates": rates,
        "method_table": method_table(figures, rates),
        "likert_ratio_vs_base_large": {name: f["likert"] / large_likert for name, f in figures.items()},
        "paper_likert_ratio": PAPER_LIKERT_RATIO,
        "training": {name: training_curve(out / name / "metrics.jsonl") for name in models
                     if (out / name / "metrics.jsonl").exists() and (name.startswith("ppo") or name in GROUP_ADVANTAGES)},
        "reward_model": {k: rm[k] for k in RM_KEYS if k in rm},
        "eval": {"prompts": len(evals["sft"]["decodings"]["t1"]["scores"]),
                 "validation_prompts": counts.get("validation_prompts"), "temperature": 1.0, "seed": seed},
        "seconds": {k: round(float(v), 3) for k, v in seconds.items()},
    }
    ai = out / "comparisons_ai" / "ai_labeler.json"
    if ai.exists():  # --feedback ai: the AI labeler beside the simulated ones, and the RM trained on it
        rm_ai = json.loads((out / "rm_ai" / "heldout.json").read_text())
        report["ai_labeler"] = {**json.loads(ai.read_text()),
                                "rm_val_accuracy": rm_ai["val_accuracy"],
                                "rm_val_accuracy_vs_gold": rm_ai["val_accuracy_vs_gold"]}
    details = {"evals": evals, "rm": rm, **extra}
    return _json_safe(report), details


# ----------------------------------------------------------------------------- plots

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_likert(report: dict, path: Path) -> None:
    plt = _plt()
    names = list(report["models"])
    values = [report["models"][n]["likert"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([LABELS.get(n, n) for n in names], values, color=(["#999", "#666", "#4a90d9", "#d9534f", "#f0ad4e", "#5cb85c", "#9b59b6", "#1abc9c"] * 2)[:len(names)])
    ax.set_ylim(1, 7)
    ax.set_ylabel("mean Likert (1-7, gold judge)")
    ax.set_title("Quality on held-out prompts (T = 1)")
    for i, v in enumerate(values):
        ax.text(i, v + 0.05, f"{v:.2f}", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _series(rows: list[dict], key: str) -> tuple[list, list]:
    pts = [(r["step"], r[key]) for r in rows if key in r and isinstance(r[key], (int, float)) and not r.get("final")]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_training(out: Path, path: Path, ppo_dirs: dict[str, Path]) -> None:
    """One panel per stage: SFT loss (and base-large's), RM loss and accuracy, then per PPO run the
    rewards (proxy and gold) and the KL and response length."""
    plt = _plt()
    panels = [("SFT", out / "sft" / "metrics.jsonl", ["loss/train", "loss/val"])]
    if (out / "sft_large" / "metrics.jsonl").exists():
        panels.append(("SFT of base-large (RM init)", out / "sft_large" / "metrics.jsonl", ["loss/train", "loss/val"]))
    panels += [("reward model", out / "rm" / "metrics.jsonl", ["loss/reward", "rewards/accuracy", "val/accuracy"])]
    for name, d in ppo_dirs.items():
        panels.append((f"{name}: rewards", d / "metrics.jsonl", ["objective/scores_rm", "objective/scores_gold",
                                                                   "objective/rlhf_reward"]))
        panels.append((f"{name}: KL and length", d / "metrics.jsonl", ["objective/kl", "response/length",
                                                                         "response/eos_rate"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.5))
    for ax, (title, metrics, keys) in zip(axes, panels):
        rows = read_metrics(metrics)
        for key in keys:
            x, y = _series(rows, key)
            final = [(r["step"], r[key]) for r in rows if r.get("final") and isinstance(r.get(key), (int, float))]
            if x:
                ax.plot(x, y, marker="." if len(x) < 30 else None, label=key)
            if final:  # end-of-training evaluation (e.g. validation loss)
                ax.plot([f[0] for f in final], [f[1] for f in final], "*", ms=10, label=f"{key} (final)")
        ax.set_title(title)
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
            ax.plot(_smooth(p["sqrt_kl"]), _smooth(p[key]), "-", color=c, label=name)
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
    on the held-out prompts, with PPO's training trajectory behind them: the
    gold-vs-KL frontier on one plot."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, metrics in ppo_metrics.items():
        p = overoptimisation_points(metrics)
        ax.plot(_smooth(p["sqrt_kl"]), _smooth(p["gold"]), "-", alpha=0.4, label=f"{LABELS.get(name, name)} (training)")
    for name, fig_ in report["models"].items():
        if name in ("base_small", "base_large") or fig_.get("kl_to_sft") is None:
            continue
        x = math.sqrt(max(fig_["kl_to_sft"], 0.0))
        ax.scatter([x], [fig_["gold"]], s=40, zorder=3)
        ax.annotate(LABELS.get(name, name), (x, fig_["gold"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("sqrt(KL to SFT), nats^0.5 per response")
    ax.set_ylabel("gold score (held-out prompts, T = 1)")
    ax.set_title("Gold vs KL: PPO and the direct methods")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def method_comparison(report: dict) -> list[str]:
    """Markdown: the method table (every method on the same data, against SFT)."""
    lines = ["| method | gold | follows (constrained) | exact | KL to SFT | vs SFT (T = 1) | vs SFT greedy | "
             "best vs SFT best |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["method_table"]:
        lines.append(f"| {LABELS.get(row['method'], row['method'])} | {_f(row['gold'])} | "
                     f"{_f(row['follows_constrained'], '.1%')} | {_f(row['exact'], '.1%')} | "
                     f"{_f(row['kl_to_sft'], '.2f')} | {_f(row['vs_sft'], '.1%')} | {_f(row['vs_sft_greedy'], '.1%')} | "
                     f"{_f(row['best_vs_sft_best'], '.1%')} |")
    return lines


# ----------------------------------------------------------------------------- markdown

def _f(x, fmt=".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def render_markdown(report: dict, details: dict, out: Path, cfg) -> str:
    m, w, rm = report["models"], report["win_rates"], report["reward_model"]
    lab = json.loads((out / "comparisons" / "labelers.json").read_text())
    lines = ["# Instruction world: InstructGPT in miniature", "",
             f"Run directory `{out}`, seed {report['eval']['seed']}, {report['eval']['prompts']} held-out evaluation "
             "prompts (even over the 8 families), sampled at temperature 1.0 (top-k 0, top-p 1, "
             f"at most {cfg.max_new_tokens} new tokens), judged by the gold judge.", "",
             "## Headline (InstructGPT Figure 1 style)", "",
             "| model | size (params) | Likert (1-7) | preferred to base-large |", "|---|---:|---:|---:|"]
    vs_large = {"base_large": 0.5, **{n: w[f"{n}_vs_base_large"] for n in m if f"{n}_vs_base_large" in w}}
    for name, fig in m.items():
        pref = vs_large.get(name)
        if pref is None:
            from rlhfkit.world.judge import win_rate

            pref = win_rate(details["evals"][name]["decodings"]["t1"]["scores"],
                            details["evals"]["base_large"]["decodings"]["t1"]["scores"])
        lines.append(f"| {LABELS.get(name, name)} | {fig['params']:,} | {_f(fig['likert'], '.2f')} | {_f(pref, '.1%')} |")
    lines += ["", "![Likert per model](likert.png)", "", "## All figures (samples at T = 1)", "",
              "| model | gold | Likert | exact | follows | follows (constrained) | terminated | polite | length (tok) | "
              "KL to SFT (nats) | web-text loss |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, fig in m.items():
        lines.append(f"| {LABELS.get(name, name)} | {_f(fig['gold'])} | {_f(fig['likert'], '.2f')} | "
                     f"{_f(fig['exact'], '.1%')} | {_f(fig['follows'], '.1%')} | {_f(fig['follows_constrained'], '.1%')} | "
                     f"{_f(fig['terminated'], '.1%')} | {_f(fig['polite'], '.1%')} | "
                     f"{_f(fig['length'], '.1f')} | {_f(fig['kl_to_sft'], '.2f')} | {_f(fig['webtext_loss'])} |")
    constraints = list(next(iter(m.values()))["per_constraint"])
    lines += ["", "Per constraint (follows / gold at T = 1; `none`: prompts without a constraint):", "",
              "| model | " + " | ".join(constraints) + " |", "|---|" + "---:|" * len(constraints)]
    for name, fig in m.items():
        cells = [f"{_f(fig['per_constraint'][c]['follows'], '.0%')} / {_f(fig['per_constraint'][c]['gold'], '.2f')}"
                 for c in constraints]
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    lines += ["", "Likert over base-large's: " + ", ".join(
        f"{LABELS.get(n, n)} {_f(r, '.2f')}x" for n, r in report["likert_ratio_vs_base_large"].items())
        + f" (InstructGPT: {PAPER_LIKERT_RATIO}x; this world's base-large scores higher than GPT-3 did)."]
    lines += ["", "Greedy decoding and each model's best temperature (chosen on the validation prompts):", "",
              "| model | decoding | gold | exact | follows (constrained) | terminated | length |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for name, ev in details["evals"].items():
        for key, d in ev["decodings"].items():
            label = f"best (T = {d['temperature']:g})" if key == "best" else "T = " + key[1:] if key.startswith("t") else key
            lines.append(f"| {LABELS.get(name, name)} | {label} | {_f(d['gold'])} | {_f(d['exact'], '.1%')} | "
                         f"{_f(d.get('follows_constrained'), '.1%')} | {_f(d['terminated'], '.1%')} | {_f(d['length'], '.1f')} |")
    families = list(next(iter(m.values()))["per_family"])
    lines += ["", "Per family (gold / exact at T = 1):", "", "| model | " + " | ".join(families) + " |",
              "|---|" + "---:|" * len(families)]
    for name, fig in m.items():
        cells = [f"{_f(fig['per_family'][f]['gold'], '.2f')} / {_f(fig['per_family'][f]['exact'], '.0%')}"
                 for f in families]
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    lines += ["", "## Win rates (gold judge; ties count one half)", "", "| comparison | win rate |", "|---|---:|"]
    for k, v in w.items():
        lines.append(f"| {k.replace('_', ' ')} | {_f(v, '.1%')} |")
    lines += ["", f"SFT's best sampling temperature among {list(cfg.eval_temperatures)} on the validation prompts: "
              f"{details.get('sft_best_temperature')}.", "",
              "RL training (rollout means over the first and last 3 steps):", "",
              "| run | steps | proxy (RM) first -> last | gold first -> last | KL last |", "|---|---:|---:|---:|---:|",
              *[f"| {LABELS.get(n, n)} | {c['steps']} | {_f(c.get('proxy_first'))} -> {_f(c.get('proxy_last'))} | "
                f"{_f(c.get('gold_first'))} -> {_f(c.get('gold_last'))} | {_f(c.get('kl_last'), '.2f')} |"
                for n, c in report["training"].items()], "",
              "## Labelers and reward model", "",
              f"- Comparison prompts: {lab['prompts']}, K = {lab['k']} SFT samples each at temperature "
              f"{cfg.comparison_temperature}; {lab['responses_unterminated']} of {lab['responses_sampled']} responses "
              "ran out of tokens without EOS.",
              "- Unterminated responses stay in their ranking, encoded without EOS (as PPO's reward model sees "
              "them); empty responses and duplicate texts (the loader refuses both) were dropped, and "
              f"rankings with fewer than 2 responses left: "
              f"{lab['rankings_kept']} rankings, {lab['pairs_kept']} pairs kept "
              f"({lab['train_prompts']} train / {lab['heldout_prompts']} held out).",
              f"- Labeler noise recalibrated on these SFT samples to {cfg.labeler_target_agreement:.0%} agreement: "
              f"noise_std {_f(lab['noise_std'], '.4f')} (default {lab['noise_std_default']}); two labelers agree on "
              f"{_f(lab['labeler_agreement'], '.1%')} of pairs of different SFT samples, a labeler agrees with gold "
              f"on {_f(lab['oracle_agreement'], '.1%')}."
              + (f" Calibration failed: {lab['calibration_error']}" if lab.get("calibration_error") else ""), "",
              *_rm_form_line(rm),
              f"Held-out pairs ({details['rm'].get('pairs', 0)} pairs of different texts, labeler order):", "",
              "| figure | value |", "|---|---:|",
              f"| RM accuracy vs the labeler | {_f(rm['val_accuracy'], '.1%')} |",
              f"| second labeler vs the labeler (labelers' agreement) | {_f(rm['labeler_agreement'], '.1%')} |",
              f"| RM accuracy vs gold (gold ties one half) | {_f(rm['val_accuracy_vs_gold'], '.1%')} |",
              f"| labeler vs gold (oracle ceiling) | {_f(rm['oracle_agreement'], '.1%')} |",
              *_rm_learned_rows(rm), "",
              *_ai_labeler_lines(report),
              "## Alignment methods on the same comparisons", "",
              *method_comparison(report), "",
              "![gold vs KL for every method](frontier.png)", "",
              "## Training curves", "", "![training curves](training.png)", "",
              "## Over-optimisation", "",
              "Gold score (evaluated on the PPO rollouts during training by a weight-0 reward function) and the proxy "
              "(normalised RM score) against sqrt(KL to SFT) per logged PPO step:", "",
              "![over-optimisation](overoptimisation.png)", "",
              "## Time (seconds)", "", "| stage | seconds |", "|---|---:|"]
    for k, v in report["seconds"].items():
        lines.append(f"| {k} | {v:.1f} |")
    lines.append(f"| total | {sum(report['seconds'].values()):.1f} |")
    lines += ["", "## Settings", "",
              f"- SFT: {cfg.sft.num_epochs} epochs, lr {cfg.sft.learning_rate}, batch {cfg.sft.per_device_batch_size}.",
              *([f"- SFT of base-large (the RM's init): {cfg.sft_large.num_epochs} epochs, lr "
                 f"{cfg.sft_large.learning_rate}, batch {cfg.sft_large.per_device_batch_size}."]
                if cfg.rm_init == "sft_large" else []),
              f"- RM: init {cfg.rm_init}, {cfg.rm.num_epochs} epoch, lr {cfg.rm.learning_rate}, "
              f"{cfg.rm.per_device_batch_size} prompts per step (all C(K,2) pairs of a prompt in one element), "
              "normalised to mean 0 / std 1 on the SFT comparison responses"
              f"{f' ({cfg.rm.normalize_max_texts} sampled)' if cfg.rm.normalize_max_texts else ''}.",
              f"- PPO: {cfg.ppo.total_episodes} episodes, rollout batch {cfg.ppo.rollout_batch_size}, "
              f"{cfg.ppo.num_minibatches} minibatches x {cfg.ppo.ppo_epochs} epochs, lr {cfg.ppo.learning_rate}, "
              f"beta {cfg.ppo.kl_coef} (per-token KL to SFT), value model: {cfg.ppo.value_model}, "
              f"missing-EOS penalty {cfg.ppo.missing_eos_penalty}."]
    if any(n in m for n in GROUP_ADVANTAGES):
        lines.append(f"- RLOO / GRPO: the PPO settings above with {cfg.rl_group_size} responses per prompt "
                     f"({cfg.ppo.total_episodes // cfg.rl_group_size} prompts), the group as baseline, no value model.")
    if cfg.ptx:
        lines.append(f"- PPO-ptx: the same plus ptx_coef {cfg.ptx_coef} x web-text NLL ({cfg.ptx_docs} documents).")
    return "\n".join(lines) + "\n"


def write_report(out: Path, cfg, models: dict[str, str], seconds: dict[str, float]) -> dict:
    report, details = build_report(out, models, seconds, cfg.seed)
    write_json(out / "report.json", report, indent=2)
    ppo_dirs = {name: out / name for name in models if name.startswith("ppo") or name in GROUP_ADVANTAGES}
    try:
        plot_likert(report, out / "likert.png")
        plot_training(out, out / "training.png", ppo_dirs)
        plot_overoptimisation({n: d / "metrics.jsonl" for n, d in ppo_dirs.items()}, out / "overoptimisation.png")
        plot_frontier(report, {n: d / "metrics.jsonl" for n, d in ppo_dirs.items()}, out / "frontier.png")
    except ImportError as e:  # matplotlib missing: the numbers are still written
        print(f"report: no plots ({e})")
    (out / "report.md").write_text(render_markdown(report, details, out, cfg))
    return report
