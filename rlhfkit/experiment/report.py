"""report.json and report.md of a world run (rlhfkit.experiment.run), rebuilt from the
files the stages stored, so a resumed run writes the same report.

report.json:
    world_version  2
    seeds        the seeds the methods were trained with; seed_scope (methods or all)
    models       base_small | base_large | sft | ppo (| rloo | dpo | bon4 | ppo_gold | ...): path,
                 params, and every figure that is a mean (gold, likert, exact, follows,
                 follows_constrained, terminated, polite, length, kl_to_sft, webtext_loss, and
                 per_family / per_constraint) as {"mean", "ci95": [lo, hi], "seed_std"}: the mean
                 over the seeds, its 95% interval over prompts and seeds
                 (experiment/intervals.py), and the spread of the seeds' own means (null for
                 one seed, or a model every seed shares); best_temperature per seed
    win_rates    the same form for sft_vs_base_small, and for every method M (ppo, rloo, dpo,
                 bon4, ...): M_vs_sft (T = 1 both), M_vs_sft_greedy (greedy both),
                 M_best_vs_sft_best (each at its best temperature, chosen on the validation
                 prompts), M_vs_sft_best_temperature (M at T = 1 against SFT at its best),
                 M_vs_base_large
    method_table one row per method, sorted by mean win rate against SFT: gold,
                 follows_constrained, exact, kl_to_sft, length and the three win rates against SFT
    pairwise     every pair of methods (SFT included): the difference of their win rates
                 against SFT, its interval, p-value, Holm-corrected p-value and whether it is
                 significant at 5% (paired over prompts and seeds)
    kendall_tau  with several seeds: Kendall's tau between each pair of seeds' method orders
    likert_ratio_vs_base_large  every model's mean Likert over base-large's (paper: 2.94x)
    training     per RL run: the proxy (RM) and gold reward over the first and last steps
                 (mean over seeds)
    reward_model val_accuracy, labeler_agreement, val_accuracy_vs_gold, oracle_agreement,
                 follows_pair_accuracy (each with its interval over the held-out prompts), ...
    eval         prompts, validation prompts, temperature, the run's seed and its seeds
    seconds      per stage, summed over the seeds; workers: how many ran at once (--workers)
    flops        the machine's measured float32 matrix-product peak and, per stage, its model
                 FLOPs (experiment/flops.py), seconds and the fraction of the peak achieved
    per_seed     {seed: the same report for that seed alone, figures as plain numbers}
"""
from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path

from rlhfkit.experiment.data import tasks_of
from rlhfkit.experiment.flops import flops_table, run_flops
from rlhfkit.experiment.intervals import kendall_tau, mean_interval, pairwise_table, ratio_interval
from rlhfkit.experiment.layout import SeedLayout
from rlhfkit.experiment.report_markdown import PAPER_LIKERT_RATIO, render_markdown
from rlhfkit.experiment.report_plots import plot_frontier, plot_likert, plot_overoptimisation, plot_training, read_metrics
from rlhfkit.experiment.reward_figures import RATIO_FIGURES
from rlhfkit.io import read_jsonl, write_json
from rlhfkit.losses.advantages import GROUP_ADVANTAGES
from rlhfkit.world.judge import win_indicators

WORLD_VERSION = 2
FIGURE_KEYS = ("path", "params", "gold", "likert", "exact", "follows", "follows_constrained", "terminated", "polite",
               "length", "kl_to_sft", "webtext_loss", "per_family", "per_constraint", "best_temperature")
# figures that are a mean over the evaluation prompts, and the range each lies in
PROMPT_MEANS = {"gold": (0.0, 1.0), "likert": (1.0, 7.0), "exact": (0.0, 1.0), "follows": (0.0, 1.0),
                "follows_constrained": (0.0, 1.0), "terminated": (0.0, 1.0), "polite": (0.0, 1.0), "length": None,
                "kl_to_sft": None}
RM_KEYS = ("val_accuracy", "labeler_agreement", "val_accuracy_vs_gold", "oracle_agreement", "exact_pairs",
           "exact_pair_accuracy", "exact_pair_accuracy_per_family", "follows_pairs", "follows_pair_accuracy",
           "score_correlation", "format_preference", "format_pairs", "reward_form", "reward_scale", "init")
# The method table's rows of one seed, in order (those a run trained): SFT, then every method.
METHOD_ORDER = ("sft", "bon4", "bon16", "ppo", "ppo_ai", "ppo_ai_direct", "rloo", "grpo", "dpo", "ipo", "orpo", "kto", "ppo_gold")
TRAINED = ("base_small", "base_large", "sft")  # models that are not an alignment method
EXACT_HALF = {"mean": 0.5, "ci95": [0.5, 0.5], "seed_std": None}  # SFT against itself


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def eval_file(lay: SeedLayout, name: str) -> Path:
    if name.startswith("bon"):
        return lay.methods / "eval" / f"{name}.json"
    return lay.eval_dir(name) / f"{name}.json"


# ----------------------------------------------------------------------------- one seed

def win_tables(evals: dict[str, dict], files: dict[str, Path]) -> dict[str, tuple[list[float], tuple]]:
    """Per win rate, its per-prompt indicators and the two evaluation files compared:
    every method against SFT (T = 1, greedy, best temperature against best) and
    base-large, and SFT against base-small, on the same prompts."""
    def scores(name, key="t1"):
        return evals[name]["decodings"][key]["scores"]

    def pair(key, p, q, dp="t1", dq="t1"):
        tables[key] = (win_indicators(scores(p, dp), scores(q, dq)), (str(files[p]), dp, str(files[q]), dq))

    tables: dict[str, tuple[list[float], tuple]] = {}
    sft_best = "best" if "best" in evals["sft"]["decodings"] else "t1"
    pair("sft_vs_base_small", "sft", "base_small")
    pair("sft_vs_base_large", "sft", "base_large")
    pair("base_small_vs_base_large", "base_small", "base_large")
    if "greedy" in evals["sft"]["decodings"] and "greedy" in evals["base_small"]["decodings"]:
        pair("sft_vs_base_small_greedy", "sft", "base_small", "greedy", "greedy")
    for name in [n for n in evals if n not in TRAINED]:  # every method against base-large and SFT (Figure 1)
        decodings = evals[name]["decodings"]
        pair(f"{name}_vs_base_large", name, "base_large")
        pair(f"{name}_vs_sft", name, "sft")
        pair(f"{name}_vs_sft_best_temperature", name, "sft", "t1", sft_best)
        if "best" in decodings:
            pair(f"{name}_best_vs_sft_best", name, "sft", "best", sft_best)
        if "greedy" in decodings:
            pair(f"{name}_vs_sft_greedy", name, "sft", "greedy", "greedy")
    for other in ("ppo_ptx", "ppo_gold"):
        if other in evals and "ppo" in evals:
            pair(f"{other}_vs_ppo", other, "ppo")
    return tables


def method_table(models: dict, rates: dict) -> list[dict]:
    """One seed's method table: SFT and every method the run has, in METHOD_ORDER
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


def _is_rl(name: str) -> bool:
    return name.startswith("ppo") or name in GROUP_ADVANTAGES


def seed_report(lay: SeedLayout, models: dict[str, str], seconds: dict[str, float]) -> tuple[dict, dict]:
    """One seed's report (figures as plain numbers) and what the aggregate needs from it."""
    files = {name: eval_file(lay, name) for name in models}
    evals = {name: json.loads(path.read_text()) for name, path in files.items()}
    tables = win_tables(evals, files)
    rates = {k: sum(v) / len(v) for k, (v, _) in tables.items()}
    figures = {name: {k: evals[name]["figures"].get(k) for k in FIGURE_KEYS} for name in models}
    rm = json.loads((lay.rm / "heldout.json").read_text())
    report = {
        "models": figures,
        "win_rates": rates,
        "method_table": method_table(figures, rates),
        "training": {name: training_curve(lay.methods / name / "metrics.jsonl") for name in models
                     if _is_rl(name) and (lay.methods / name / "metrics.jsonl").exists()},
        "reward_model": {k: rm[k] for k in RM_KEYS if k in rm},
        "seconds": {k: round(float(v), 3) for k, v in seconds.items()},
    }
    ai = lay.recipe / "comparisons_ai" / "ai_labeler.json"
    if ai.exists():  # --feedback ai: the AI labeler beside the simulated ones, and the RM trained on it
        rm_ai = json.loads((lay.recipe / "rm_ai" / "heldout.json").read_text())
        report["ai_labeler"] = {**json.loads(ai.read_text()), "rm_val_accuracy": rm_ai["val_accuracy"],
                                "rm_val_accuracy_vs_gold": rm_ai["val_accuracy_vs_gold"],
                                "rm_format_preference": rm_ai.get("format_preference")}
    sft_best = evals["sft"]["decodings"].get("best", {}).get("temperature", 1.0)
    details = {"evals": evals, "files": files, "tables": tables, "rm": rm, "rm_dir": str(lay.rm),
               "sft_best_temperature": sft_best}
    return report, details


# ----------------------------------------------------------------------------- over the seeds

def prompt_values(ev: dict, figure: str, tasks: list, decoding: str = "t1") -> list[float]:
    """The per-prompt values whose mean is `figure` (NaN where a prompt is not in it)."""
    d = ev["decodings"][decoding]
    if figure == "gold":
        return list(d["scores"])
    if figure == "likert":
        return [1 + 6 * g for g in d["scores"]]
    per_prompt = d.get("per_prompt", {})
    if figure == "follows_constrained":
        return [float(f) if t.constraint else math.nan for f, t in zip(per_prompt["follows"], tasks)]
    if figure == "kl_to_sft" and "kl_to_sft" not in per_prompt:  # SFT (0) and best-of-n (analytic): one value
        kl = ev["figures"].get("kl_to_sft")
        return [kl if kl is not None else math.nan] * len(d["scores"])
    return [float(v) for v in per_prompt[figure]]


def _rows(seed_evals: list[tuple[Path, dict]]) -> list[dict]:
    """The distinct evaluations behind a model: a model every seed shares is counted once."""
    seen, rows = set(), []
    for path, ev in seed_evals:
        if str(path) not in seen:
            seen.add(str(path))
            rows.append(ev)
    return rows


def _interval(table: list[list[float]], bounds=None) -> dict:
    figure = mean_interval(table, bounds=bounds)
    return {"mean": figure["mean"], "ci95": figure["ci95"], "seed_std": figure["seed_std"]}


def _masked(values: list[float], keep: list[bool]) -> list[float]:
    return [v if k else math.nan for v, k in zip(values, keep)]


def aggregate_model(evals: list[dict], tasks: list, decoding: str = "t1") -> dict:
    """A model's figures over its distinct evaluations (seeds), each with its interval."""
    out: dict = {"params": evals[0]["figures"]["params"]}
    for figure, bounds in PROMPT_MEANS.items():
        out[figure] = _interval([prompt_values(ev, figure, tasks, decoding) for ev in evals], bounds)
    webtext = [ev["figures"].get("webtext_loss") for ev in evals]
    out["webtext_loss"] = _interval([[w] for w in webtext if w is not None and math.isfinite(w)])
    families = sorted({t.family for t in tasks})
    out["per_family"] = {f: {k: _interval([_masked(prompt_values(ev, k, tasks, decoding),
                                                   [t.family == f for t in tasks]) for ev in evals], (0.0, 1.0))
                             for k in ("gold", "exact", "follows")} for f in families}
    constraints = list(evals[0]["figures"].get("per_constraint") or {})
    out["per_constraint"] = {}
    for c in constraints:
        keep = [(t.constraint or "none") == c for t in tasks]
        out["per_constraint"][c] = {"prompts": sum(keep), **{
            k: _interval([_masked(prompt_values(ev, k, tasks, decoding), keep) for ev in evals], (0.0, 1.0))
            for k in ("gold", "follows")}}
    out["best_temperature"] = [ev["figures"].get("best_temperature") for ev in evals]
    out["evaluations"] = len(evals)
    return out


def aggregate_reward_model(seed_details: list[dict]) -> dict:
    """The reward model's held-out figures: one shared RM gets intervals over its held-out
    prompts; one RM per seed (seed_scope all) gets them over the seeds."""
    rms = list({d["rm_dir"]: d["rm"] for d in seed_details}.values())
    out = {k: rms[0][k] for k in RM_KEYS if k in rms[0] and k not in RATIO_FIGURES}
    for figure, denominator in RATIO_FIGURES.items():
        if figure not in rms[0]:
            continue
        if len(rms) > 1:
            out[figure] = _interval([[rm[figure]] for rm in rms if rm.get(figure) is not None], (0.0, 1.0))
        elif "per_prompt" in rms[0]:
            counts = rms[0]["per_prompt"]
            out[figure] = ratio_interval(counts[figure], counts[denominator])
        else:  # a reward model measured before its held-out counts were kept
            out[figure] = {"mean": rms[0][figure], "ci95": [None, None], "seed_std": None}
    out["reward_models"] = len(rms)
    return out


def aggregate(seeds: dict[int, tuple[dict, dict]], tasks: list, run_seed: int) -> dict:
    """The report over the seeds: every mean with its interval, the sorted method table,
    the pairwise significance table and the seeds' rank agreement."""
    names = [n for n in next(iter(seeds.values()))[0]["models"] if all(n in r["models"] for r, _ in seeds.values())]
    models = {}
    for name in names:
        evals = _rows([(d["files"][name], d["evals"][name]) for _, d in seeds.values()])
        models[name] = {"path": [r["models"][name]["path"] for r, _ in seeds.values()],
                        **aggregate_model(evals, tasks)}
    win_keys = [k for k in next(iter(seeds.values()))[1]["tables"] if all(k in d["tables"] for _, d in seeds.values())]
    win_rates = {}
    win_rows = {}
    for key in win_keys:
        rows = list({d["tables"][key][1]: d["tables"][key][0] for _, d in seeds.values()}.values())
        win_rows[key] = rows
        win_rates[key] = _interval(rows, (0.0, 1.0))
    table = sorted_method_table(models, win_rates)
    methods = [row["method"] for row in table]
    per_seed_vs_sft = {m: [[0.5] * len(tasks)] * len(seeds) if m == "sft" else
                       [d["tables"][f"{m}_vs_sft"][0] for _, d in seeds.values()] for m in methods}
    report = {
        "models": models,
        "win_rates": win_rates,
        "method_table": table,
        "pairwise": pairwise_table(per_seed_vs_sft, methods),
        "kendall_tau": seed_rank_agreement({s: r for s, (r, _) in seeds.items()}, [m for m in methods if m != "sft"]),
        "likert_ratio_vs_base_large": {n: f["likert"]["mean"] / models["base_large"]["likert"]["mean"]
                                       for n, f in models.items()},
        "training": _mean_training([r["training"] for r, _ in seeds.values()]),
        "reward_model": aggregate_reward_model([d for _, d in seeds.values()]),
    }
    own = seeds.get(run_seed, next(iter(seeds.values())))[0]
    if "ai_labeler" in own:
        report["ai_labeler"] = own["ai_labeler"]
    return report


def sorted_method_table(models: dict, win_rates: dict) -> list[dict]:
    """The method table over the seeds, sorted by mean win rate against SFT (T = 1)."""
    rows = []
    for name in [n for n in models if n not in ("base_small", "base_large")]:
        fig = models[name]
        row = {"method": name, **{k: fig[k] for k in ("gold", "follows", "follows_constrained", "exact", "kl_to_sft",
                                                       "length")}}
        for column, key in (("vs_sft", f"{name}_vs_sft"), ("vs_sft_greedy", f"{name}_vs_sft_greedy"),
                            ("best_vs_sft_best", f"{name}_best_vs_sft_best")):
            row[column] = EXACT_HALF if name == "sft" else win_rates.get(key)
        row["oracle"] = name == "ppo_gold"
        rows.append(row)
    return sorted(rows, key=lambda r: -((r["vs_sft"] or {}).get("mean") or 0.0))


def seed_rank_agreement(reports: dict[int, dict], methods: list[str]) -> dict:
    """Kendall's tau between every two seeds' orders of the methods by win rate against SFT."""
    if len(reports) < 2 or len(methods) < 2:
        return {}
    order = {s: [r["win_rates"][f"{m}_vs_sft"] for m in methods] for s, r in reports.items()}
    pairs = {f"{a}-{b}": kendall_tau(order[a], order[b]) for a, b in combinations(sorted(reports), 2)}
    finite = [t for t in pairs.values() if math.isfinite(t)]
    return {"pairs": pairs, "mean": sum(finite) / len(finite) if finite else None, "methods": methods}


def _mean_training(per_seed: list[dict]) -> dict:
    out = {}
    for name in per_seed[0]:
        curves = [t[name] for t in per_seed if name in t]
        keys = [k for k in curves[0] if all(k in c for c in curves)]
        out[name] = {k: sum(c[k] for c in curves) / len(curves) for k in keys}
        out[name]["seeds"] = len(curves)
    return out


def _seconds(shared: dict[str, float], per_seed: list[dict[str, float]]) -> dict[str, float]:
    total = {k: float(v) for k, v in shared.items()}
    for seconds in per_seed:
        for k, v in seconds.items():
            total[k] = total.get(k, 0.0) + float(v)
    return {k: round(v, 3) for k, v in total.items()}


def build_report(out: Path, cfg, seeds: dict[int, tuple[SeedLayout, dict[str, str], dict[str, float]]],
                 shared_seconds: dict[str, float]) -> tuple[dict, dict]:
    """report.json's content and what report.md needs beyond it."""
    tasks = tasks_of(read_jsonl(out / "data" / "eval_prompts.jsonl"))
    per_seed = {s: seed_report(lay, models, seconds) for s, (lay, models, seconds) in seeds.items()}
    counts = json.loads((out / "data" / "counts.json").read_text()) if (out / "data" / "counts.json").exists() else {}
    report = {"world_version": WORLD_VERSION, "seeds": list(seeds), "seed_scope": cfg.seed_scope,
              **aggregate(per_seed, tasks, cfg.seed), "paper_likert_ratio": PAPER_LIKERT_RATIO,
              "eval": {"prompts": len(tasks), "validation_prompts": counts.get("validation_prompts"),
                       "temperature": 1.0, "seed": cfg.seed, "seeds": list(seeds)},
              "seconds": _seconds(shared_seconds, [seconds for _, _, seconds in seeds.values()]),
              "workers": cfg.workers, "per_seed": {str(s): r for s, (r, _) in per_seed.items()}}
    flops = run_flops(out, cfg, seeds)
    report["flops"] = {"matmul_peak": flops["matmul_peak"],
                       "stages": flops_table(flops["stages"], report["seconds"],
                                             flops["matmul_peak"]["flops_per_second"])}
    own = per_seed.get(cfg.seed, next(iter(per_seed.values())))[1]
    decodings = _aggregate_decodings(per_seed, tasks)
    details = {"decodings": decodings, "sft_best_temperature": own["sft_best_temperature"], "rm": own["rm"]}
    return _json_safe(report), details


def _aggregate_decodings(per_seed: dict, tasks: list) -> dict[str, dict[str, dict]]:
    """Every model's figures per decoding (T = 1, greedy, best temperature) over the seeds."""
    out: dict[str, dict[str, dict]] = {}
    first = next(iter(per_seed.values()))[1]
    for name, ev in first["evals"].items():
        evals = _rows([(d["files"][name], d["evals"][name]) for _, d in per_seed.values() if name in d["evals"]])
        keys = [k for k in ("t1", "greedy", "best") if all(k in e["decodings"] for e in evals)]
        out[name] = {}
        for key in keys:
            out[name][key] = {figure: _interval([prompt_values(e, figure, tasks, key) for e in evals], bounds)
                              for figure, bounds in PROMPT_MEANS.items() if figure != "kl_to_sft"}
            if key == "best":
                out[name][key]["temperature"] = [e["decodings"]["best"].get("temperature") for e in evals]
    return out


def write_report(out: Path, cfg, seeds: dict[int, tuple[SeedLayout, dict[str, str], dict[str, float]]],
                 shared_seconds: dict[str, float]) -> dict:
    report, details = build_report(out, cfg, seeds, shared_seconds)
    write_json(out / "report.json", report, indent=2)
    lay, models, _ = seeds.get(cfg.seed, next(iter(seeds.values())))
    ppo_dirs = {name: lay.methods / name for name in models if _is_rl(name)}
    direct_dirs = {name: lay.methods / name for name in models
                   if name not in (*TRAINED, *ppo_dirs) and (lay.methods / name / "metrics.jsonl").exists()}
    try:
        plot_likert(report, out / "likert.png")
        plot_training(lay.recipe, out / "training.png", ppo_dirs, direct_dirs)
        plot_overoptimisation({n: d / "metrics.jsonl" for n, d in ppo_dirs.items()}, out / "overoptimisation.png")
        plot_frontier(report, {n: d / "metrics.jsonl" for n, d in ppo_dirs.items()}, out / "frontier.png")
    except ImportError as e:  # matplotlib missing: the numbers are still written
        print(f"report: no plots ({e})")
    (out / "report.md").write_text(render_markdown(report, details, lay, cfg))
    return report
