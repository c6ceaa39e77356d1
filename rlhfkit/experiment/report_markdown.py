"""report.md of a world run: report.json's figures for people, each mean shown with its
95% interval (`60.6% [57.9, 63.2]`), one section per function."""
from __future__ import annotations

import json
import math

from rlhfkit.experiment.labels import label
from rlhfkit.losses.advantages import GROUP_ADVANTAGES

PAPER_LIKERT_RATIO = 2.94  # InstructGPT 1.3B over GPT-3 175B (Figure 1)
RM_INIT_LABELS = {"sft_large": "base-large fine-tuned on the demonstrations (sft_large)", "base_large": "base-large",
                  "sft": "the SFT policy (base-small fine-tuned on the demonstrations)"}


def _f(x, fmt=".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _ci(figure: dict | None, fmt: str = ".3f") -> str:
    """A mean and its 95% interval: `0.532 [0.515, 0.549]`, `60.6% [57.9, 63.2]`."""
    if not figure or figure.get("mean") is None:
        return "n/a"
    lo, hi = figure.get("ci95") or (None, None)
    if lo is None or hi is None:
        return _f(figure["mean"], fmt)
    if fmt.endswith("%"):
        inner = f".{fmt[1:-1] or '1'}f"  # '.1%' -> the bounds in points with one decimal
        return f"{_f(figure['mean'], fmt)} [{100 * lo:{inner}}, {100 * hi:{inner}}]"
    return f"{_f(figure['mean'], fmt)} [{lo:{fmt}}, {hi:{fmt}}]"


def _seeds_line(report: dict) -> str:
    seeds = report["seeds"]
    if len(seeds) == 1:
        return (f"One seed ({seeds[0]}): each interval is over the evaluation prompts only; training's own "
                "spread between seeds is not in it (`--seeds 0,1,2` measures it).")
    scope = ("the methods trained once per seed from one shared SFT, comparisons and reward model"
             if report["seed_scope"] == "methods" else "the whole recipe trained once per seed")
    return (f"{len(seeds)} seeds ({', '.join(map(str, seeds))}; {scope}): each figure is the mean over the seeds "
            "with its 95% interval over prompts and seeds; a model every seed shares is evaluated once.")


def _headline(report: dict) -> list[str]:
    m, w = report["models"], report["win_rates"]
    lines = ["## Headline (InstructGPT Figure 1 style)", "",
             "| model | size (params) | Likert (1-7) | preferred to base-large |", "|---|---:|---:|---:|"]
    for name, fig in m.items():
        pref = {"mean": 0.5} if name == "base_large" else w.get(f"{name}_vs_base_large")
        lines.append(f"| {label(name)} | {fig['params']:,} | {_ci(fig['likert'], '.2f')} | {_ci(pref, '.1%')} |")
    return lines + ["", "![Likert per model](likert.png)", ""]


def _all_figures(report: dict) -> list[str]:
    m = report["models"]
    lines = ["## All figures (samples at T = 1)", "",
             "| model | gold | exact | follows | follows (constrained) | terminated | polite | length (tok) | "
             "KL to SFT (nats) | web-text loss |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, fig in m.items():
        lines.append(f"| {label(name)} | {_ci(fig['gold'])} | {_ci(fig['exact'], '.1%')} | {_ci(fig['follows'], '.1%')} | "
                     f"{_ci(fig['follows_constrained'], '.1%')} | {_ci(fig['terminated'], '.1%')} | "
                     f"{_ci(fig['polite'], '.1%')} | {_ci(fig['length'], '.1f')} | {_ci(fig['kl_to_sft'], '.2f')} | "
                     f"{_ci(fig['webtext_loss'])} |")
    constraints = list(next(iter(m.values()))["per_constraint"])
    lines += ["", "Per constraint (follows / gold at T = 1, means; `none`: prompts without a constraint):", "",
              "| model | " + " | ".join(constraints) + " |", "|---|" + "---:|" * len(constraints)]
    for name, fig in m.items():
        cells = [f"{_f(fig['per_constraint'][c]['follows']['mean'], '.0%')} / "
                 f"{_f(fig['per_constraint'][c]['gold']['mean'], '.2f')}" for c in constraints]
        lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
    lines += ["", "Likert over base-large's: " + ", ".join(
        f"{label(n)} {_f(r, '.2f')}x" for n, r in report["likert_ratio_vs_base_large"].items())
        + f" (InstructGPT: {PAPER_LIKERT_RATIO}x; this world's base-large scores higher than GPT-3 did)."]
    families = list(next(iter(m.values()))["per_family"])
    lines += ["", "Per family (gold / exact at T = 1, means):", "", "| model | " + " | ".join(families) + " |",
              "|---|" + "---:|" * len(families)]
    for name, fig in m.items():
        cells = [f"{_f(fig['per_family'][f]['gold']['mean'], '.2f')} / {_f(fig['per_family'][f]['exact']['mean'], '.0%')}"
                 for f in families]
        lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _decodings(details: dict) -> list[str]:
    lines = ["Greedy decoding and each model's best temperature (chosen on the validation prompts):", "",
             "| model | decoding | gold | exact | follows (constrained) | terminated | length |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, decodings in details["decodings"].items():
        for key, d in decodings.items():
            if key == "best":
                temps = ", ".join(_f(t, "g") for t in d["temperature"])
                text = f"best (T = {temps})"
            else:
                text = "T = 1" if key == "t1" else key
            lines.append(f"| {label(name)} | {text} | {_ci(d['gold'])} | {_ci(d['exact'], '.1%')} | "
                         f"{_ci(d['follows_constrained'], '.1%')} | {_ci(d['terminated'], '.1%')} | "
                         f"{_ci(d['length'], '.1f')} |")
    return lines + [""]


def _win_rates(report: dict, details: dict, cfg) -> list[str]:
    lines = ["## Win rates (gold judge; ties count one half)", "", "| comparison | win rate |", "|---|---:|"]
    lines += [f"| {k.replace('_', ' ')} | {_ci(v, '.1%')} |" for k, v in report["win_rates"].items()]
    return lines + ["", f"SFT's best sampling temperature among {list(cfg.eval_temperatures)} on the validation "
                    f"prompts: {details.get('sft_best_temperature')}.", ""]


def method_comparison(report: dict) -> list[str]:
    """Markdown: the method table (every method on the same data, against SFT), sorted by win rate."""
    lines = ["| method | gold | follows (constrained) | exact | KL to SFT | vs SFT (T = 1) | vs SFT greedy | "
             "best vs SFT best |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["method_table"]:
        lines.append(f"| {label(row['method'])} | {_ci(row['gold'])} | {_ci(row['follows_constrained'], '.1%')} | "
                     f"{_ci(row['exact'], '.1%')} | {_ci(row['kl_to_sft'], '.2f')} | {_ci(row['vs_sft'], '.1%')} | "
                     f"{_ci(row['vs_sft_greedy'], '.1%')} | {_ci(row['best_vs_sft_best'], '.1%')} |")
    return lines


def _significance(report: dict) -> list[str]:
    rows = report.get("pairwise") or []
    if not rows:
        return []
    lines = ["Which differences hold: each pair's difference in win rate against SFT (T = 1), paired over prompts "
             "and seeds, Holm-corrected over every pair of this table; `yes` where it is significant at 5%:", "",
             "| A | B | A - B (points) | p (Holm) | significant |", "|---|---|---:|---:|:---:|"]
    for r in rows:
        lo, hi = r["ci95"]
        interval = f"[{_f(100 * lo, '+.1f')}, {_f(100 * hi, '+.1f')}]" if lo is not None else ""
        lines.append(f"| {label(r['a'])} | {label(r['b'])} | {_f(100 * r['difference'], '+.1f')} {interval} | "
                     f"{_f(r['p_holm'], '.3f')} | {'yes' if r['significant'] else 'no'} |")
    tau = report.get("kendall_tau") or {}
    if tau.get("pairs"):
        pairs = ", ".join(f"seeds {k}: {_f(v, '.2f')}" for k, v in tau["pairs"].items())
        lines += ["", f"Kendall's tau between the seeds' method orders (by win rate against SFT): {pairs} "
                  f"(mean {_f(tau['mean'], '.2f')})."]
    return lines + [""]


def _training(report: dict) -> list[str]:
    return ["RL training (rollout means over the first and last 3 steps, mean over seeds):", "",
            "| run | steps | proxy (RM) first -> last | gold first -> last | KL last |", "|---|---:|---:|---:|---:|",
            *[f"| {label(n)} | {c['steps']:g} | {_f(c.get('proxy_first'))} -> {_f(c.get('proxy_last'))} | "
              f"{_f(c.get('gold_first'))} -> {_f(c.get('gold_last'))} | {_f(c.get('kl_last'), '.2f')} |"
              for n, c in report["training"].items()], ""]


def _rm_form_line(rm: dict) -> list[str]:
    form = rm.get("reward_form")
    init = RM_INIT_LABELS.get(rm.get("init", "base_large"), rm.get("init"))
    if form == "mean_logprob":
        text = (f"{init} kept whole, LM head included; a response scores {rm.get('reward_scale')} x its mean "
                "token log-likelihood (SimPO's implicit reward), trained with Bradley-Terry over all pairs per prompt")
    elif form == "logratio":
        text = (f"{init} kept whole, LM head included; a response scores {rm.get('reward_scale')} x its mean "
                "token log-likelihood minus the frozen starting model's (a DPO-style implicit reward that cancels "
                "the start's prior), trained with Bradley-Terry over all pairs per prompt")
    elif form == "head":
        text = f"{init} with a new scalar head on the last token (InstructGPT), Bradley-Terry over all pairs per prompt"
    else:
        return []
    return [f"- Reward model: {text}.", ""]


def _rm_learned_rows(rm: dict) -> list[str]:
    """What the reward model learned (runs before these figures existed have none)."""
    if "exact_pair_accuracy" not in rm:
        return []
    per_family = ", ".join(f"{f} {_f(a, '.0%')}" for f, a in rm["exact_pair_accuracy_per_family"].items())
    corr = rm["score_correlation"]
    rows = [f"| RM prefers the exactly-right response ({rm['exact_pairs']} pairs where only one is) | "
            f"{_f(rm['exact_pair_accuracy'], '.1%')} |",
            f"| correlation of the RM score with gold / with length in characters / with length at fixed gold | "
            f"{_f(corr['gold'], '.2f')} / {_f(corr['length'], '.2f')} / {_f(corr.get('length_at_fixed_gold'), '.2f')} |",
            f"| RM prefers the response in the asked format ({rm.get('follows_pairs')} pairs where only one is) | "
            f"{_ci(rm.get('follows_pair_accuracy'), '.1%')} |"]
    formats = rm.get("format_preference") or {}
    if formats:
        pairs = sum((rm.get("format_pairs") or {}).values())
        rows.append(f"| RM prefers the right answer in the asked format to the same answer plain ({' / '.join(formats)}; "
                    f"{pairs} pairs) | {' / '.join(_f(v, '.0%') for v in formats.values())} |")
    return [*rows, "", f"Per family, the RM prefers the exactly-right response of such pairs: {per_family}."]


def _labelers_and_rm(report: dict, details: dict, lay, cfg) -> list[str]:
    rm = report["reward_model"]
    lab = json.loads((lay.comparisons / "labelers.json").read_text())
    shared = ("one reward model shared by every seed: intervals over its held-out prompts"
              if rm.get("reward_models", 1) == 1 else f"{rm['reward_models']} reward models: intervals over the seeds")
    return ["## Labelers and reward model", "",
            f"- Comparison prompts: {lab['prompts']}, K = {lab['k']} SFT samples each at temperature "
            f"{cfg.comparison_temperature}; {lab['responses_unterminated']} of {lab['responses_sampled']} responses "
            "ran out of tokens without EOS.",
            "- Unterminated responses stay in their ranking, encoded without EOS (as PPO's reward model sees "
            "them); empty responses and duplicate texts (the loader refuses both) were dropped, and "
            f"rankings with fewer than 2 responses left: {lab['rankings_kept']} rankings, {lab['pairs_kept']} pairs "
            f"kept ({lab['train_prompts']} train / {lab['heldout_prompts']} held out).",
            f"- Labeler noise recalibrated on these SFT samples to {cfg.labeler_target_agreement:.0%} agreement: "
            f"noise_std {_f(lab['noise_std'], '.4f')} (default {lab['noise_std_default']}); two labelers agree on "
            f"{_f(lab['labeler_agreement'], '.1%')} of pairs of different SFT samples, a labeler agrees with gold "
            f"on {_f(lab['oracle_agreement'], '.1%')}."
            + (f" Calibration failed: {lab['calibration_error']}" if lab.get("calibration_error") else ""), "",
            *_rm_form_line(rm),
            f"Held-out pairs ({details['rm'].get('pairs', 0)} pairs of different texts, labeler order; {shared}):", "",
            "| figure | value |", "|---|---:|",
            f"| RM accuracy vs the labeler | {_ci(rm.get('val_accuracy'), '.1%')} |",
            f"| second labeler vs the labeler (labelers' agreement) | {_ci(rm.get('labeler_agreement'), '.1%')} |",
            f"| RM accuracy vs gold (gold ties one half) | {_ci(rm.get('val_accuracy_vs_gold'), '.1%')} |",
            f"| labeler vs gold (oracle ceiling) | {_ci(rm.get('oracle_agreement'), '.1%')} |",
            *_rm_learned_rows(rm), ""]


def _ai_labeler(report: dict) -> list[str]:
    ai = report.get("ai_labeler")
    if not ai:
        return []
    how = ", ".join(filter(None, ["writing its checks before each verdict" if ai.get("reasoning") else "",
                                  f"{len(ai.get('principles') or [])} principles, one drawn per pair"
                                  if ai.get("principles") else "no principles"]))
    lines = ["## AI feedback (RLAIF)", "",
             f"The AI labeler ({ai['judge']}, {_f(ai.get('parameters', 0) / 1e6, '.1f')}M parameters; Constitutional "
             f"AI's multiple choice, both orders averaged; {how}) ranked the {ai['train_rankings']} training rankings "
             f"({ai.get('train_pairs', 0):,} pairs) for {ai.get('train_forward_passes', 0):,} judge sequences"
             f" and {ai.get('train_review_tokens', 0):,} review tokens ({_f(ai.get('train_seconds'), '.0f')} s).", "",
             "| on the held-out pairs | agreement |", "|---|---:|",
             f"| AI labeler vs gold | {_f(ai['agreement_gold'], '.1%')} |",
             f"| AI labeler vs the simulated labeler | {_f(ai['agreement_labeler'], '.1%')} |",
             f"| simulated labeler vs gold | {_f(ai['labeler_agreement_gold'], '.1%')} |",
             f"| AI labeler prefers the asked format (pairs where only one has it) | "
             f"{_f(ai.get('format_preference'), '.1%')} (labeler: {_f(ai.get('labeler_format_preference'), '.1%')}) |",
             f"| reward model on AI labels vs the labeler / vs gold | {_f(ai['rm_val_accuracy'], '.1%')} / "
             f"{_f(ai['rm_val_accuracy_vs_gold'], '.1%')} |", ""]
    for key, what in (("agreement_gold_by_constraint", "constraint"), ("agreement_gold_by_family", "family")):
        if ai.get(key):
            lines += [f"Agreement with gold by {what}: " + ", ".join(f"{k} {_f(v, '.0%')}" for k, v in ai[key].items())
                      + ".", ""]
    configurations = ai.get("configurations")
    if configurations:
        lines += ["What each labeler costs and how well it judges, on the same held-out pairs:", "",
                  "| labeler | judge parameters | agreement with gold | prefers the asked format | labels/s | seconds |",
                  "|---|---:|---:|---:|---:|---:|",
                  f"| simulated labeler | - | {_f(ai['labeler_agreement_gold'], '.1%')} | "
                  f"{_f(ai.get('labeler_format_preference'), '.1%')} | - | - |"]
        lines += [f"| {c['name']} | {_f(c['parameters'] / 1e6, '.2f')}M | {_f(c['agreement_gold'], '.1%')} | "
                  f"{_f(c['format_preference'], '.1%')} | {_f(c['labels_per_second'], '.1f')} | {_f(c['seconds'], '.0f')} |"
                  for c in configurations]
        lines.append("")
    return lines


def _plots_and_time(report: dict) -> list[str]:
    lines = ["## Training curves", "", "![training curves](training.png)", "",
             "## Over-optimisation", "",
             "Gold score (evaluated on the PPO rollouts during training by a weight-0 reward function) and the proxy "
             "(normalised RM score) against sqrt(KL to SFT) per logged PPO step:", "",
             "![over-optimisation](overoptimisation.png)", "",
             "## Time (seconds, summed over the seeds)", ""]
    flops = report.get("flops") or {"stages": {}, "matmul_peak": {}}
    peak = flops["matmul_peak"]
    if peak:
        lines += [f"Model FLOPs per stage (2N a token forward, 6N trained; an estimate from the tokens each stage "
                  "processed, padding not counted) against the float32 matrix-product peak measured on the machine "
                  f"that ran it, {_f(peak['flops_per_second'] / 1e9, '.1f')} GFLOP/s on {peak['threads']} thread(s):",
                  ""]
    if report.get("workers", 1) > 1:
        lines += [f"The method stages and evaluations ran {report['workers']} at a time (--workers), each on a share "
                  "of the threads: their seconds overlap, the total is more than the run's wall time, and the shares "
                  "of the peak of stages that ran side by side add up.", ""]
    lines += ["| stage | seconds | model GFLOP | share of the peak |", "|---|---:|---:|---:|"]
    for k, v in report["seconds"].items():
        row = flops["stages"].get(k, {})
        gflop = _f(row["flops"] / 1e9, ",.0f") if row.get("flops") else ""
        share = _f(row.get("peak_fraction"), ".1%") if row.get("peak_fraction") is not None else ""
        lines.append(f"| {k} | {v:.1f} | {gflop} | {share} |")
    return lines + [f"| total | {sum(report['seconds'].values()):.1f} | | |", ""]


def _settings(report: dict, cfg) -> list[str]:
    lines = ["## Settings", "",
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
    if any(n in report["models"] for n in GROUP_ADVANTAGES):
        lines.append(f"- RLOO / GRPO: the PPO settings above with {cfg.rl_group_size} responses per prompt "
                     f"({cfg.ppo.total_episodes // cfg.rl_group_size} prompts), the group as baseline, no value model.")
    if cfg.ptx:
        lines.append(f"- PPO-ptx: the same plus ptx_coef {cfg.ptx_coef} x web-text NLL ({cfg.ptx_docs} documents).")
    return lines


def render_markdown(report: dict, details: dict, lay, cfg) -> str:
    intro = ["# Instruction world: InstructGPT in miniature", "",
             f"Run directory `{lay.run}`, {report['eval']['prompts']} held-out evaluation prompts (even over the 8 "
             "families), sampled at temperature 1.0 (top-k 0, top-p 1, "
             f"at most {cfg.max_new_tokens} new tokens), judged by the gold judge. {_seeds_line(report)}", ""]
    sections = [intro, _headline(report), _all_figures(report), _decodings(details), _win_rates(report, details, cfg),
                ["## Alignment methods on the same comparisons", "",
                 "Sorted by mean win rate against SFT at T = 1.", "", *method_comparison(report), "",
                 "![gold vs KL for every method](frontier.png)", ""],
                _significance(report), _training(report), _labelers_and_rm(report, details, lay, cfg),
                _ai_labeler(report), _plots_and_time(report), _settings(report, cfg)]
    return "\n".join(line for section in sections for line in section) + "\n"
