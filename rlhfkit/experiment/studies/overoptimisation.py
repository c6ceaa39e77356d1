"""overoptimisation: reward-model over-optimisation as Gao et al. (2022) measured it.
Gold and proxy (RM) reward against d = sqrt(KL to SFT) for best-of-n (n = 1 ... 256;
KL = log n - (n - 1) / n) and for PPO along training (each logged step's rollouts),
for reward models of two sizes trained on the same comparisons: from the SFT of
base-small (the run's) and from base-large fine-tuned on the demonstrations. Gao et
al.'s forms are fitted to the gold gain over SFT: d (a - b d) for best-of-n,
d (a - b log d) for RL; the fitted peak says where over-optimisation begins (theirs
moves to larger d as the RM grows)."""
from __future__ import annotations

import math
from pathlib import Path

from rlhfkit.experiment.studies.common import Study, cached_values, figure
from rlhfkit.experiment.studies.fits import best_of_n_expectation, fit_form, form_value, peak_d
from rlhfkit.experiment.studies.report import table, write_study_report
from rlhfkit.io import read_jsonl, write_jsonl

RM_LABELS = {"sft": "RM from SFT of base-small", "sft_large": "RM from SFT of base-large"}


def reward_models(study: Study) -> dict[str, Path]:
    """{rm_init: reward model}: the run's own for its rm_init, the other trained here on the
    run's comparisons with the run's seed (one RM per size, shared by the seeds)."""
    from rlhfkit.experiment.options import resolve_model_path
    from rlhfkit.experiment.stages import stage_config
    from rlhfkit.pipeline import run_stage
    from rlhfkit.trainers.sft import SFTConfig, train_sft

    run_cfg, out = study.run_cfg, {}
    for init in study.cfg.rm_inits:
        if init == run_cfg.rm_init:
            out[init] = study.lay.rm
            continue
        start = str(study.lay.sft)
        if init == "sft_large":
            large = study.run / "sft_large" if (study.run / "sft_large" / ".done").exists() else study.out / "sft_large"
            sft_cfg = stage_config(SFTConfig, run_cfg.sft_large, run_cfg, model=resolve_model_path(run_cfg.base_large),
                                   data=str(study.lay.data / "demonstrations.jsonl"), output_dir=str(large),
                                   num_threads=study.cfg.num_threads)
            run_stage("sft_large", large, train_sft, sft_cfg, log=print)
            start = str(large)
        out[init] = study.reward_model(study.out / f"rm_{init}", study.lay.comparisons / "comparisons.jsonl",
                                       run_cfg.seed, init=start)
    return out


def bon_draws(study: Study, seed: int) -> list[dict]:
    """max(bon_n) SFT samples (T = 1) per best-of-n prompt with their gold; cached."""
    from rlhfkit.experiment.sampling import sample_responses
    from rlhfkit.world.judge import judge_task

    path = study.out / "bon" / f"draws_seed_{seed}.jsonl"
    if path.exists():
        return read_jsonl(path)
    n, k = study.cfg.bon_prompts, max(study.cfg.bon_n)
    tasks, prompts = study.eval_tasks[:n], study.eval_prompts[:n]
    s = sample_responses(study.sft_model(), study.tokenizer(), [p for p in prompts for _ in range(k)], temperature=1.0,
                         max_new_tokens=study.run_cfg.max_new_tokens, batch_size=study.run_cfg.eval_batch_size,
                         seed=study.run_cfg.seed + 13 + 1000 * seed)
    rows = []
    for i, (task, prompt) in enumerate(zip(tasks, prompts)):
        texts, ended = s.texts[i * k:(i + 1) * k], s.terminated[i * k:(i + 1) * k]
        rows.append({"prompt": prompt, "responses": texts, "terminated": ended,
                     "gold": [judge_task(task, y, e).gold for y, e in zip(texts, ended)]})
    write_jsonl(path, rows)
    return rows


def bon_curves(study: Study, rm: Path, name: str) -> dict:
    """Per n: gold and proxy of best-of-n (the exact expectation over the draws' n-subsets),
    as gains over n = 1; proxy in units of the RM's std over the SFT draws."""
    from rlhfkit.experiment.reward_figures import reward_model_scores
    from rlhfkit.models.loading import load_reward_model, load_tokenizer

    gold, proxy = {n: [] for n in study.cfg.bon_n}, {n: [] for n in study.cfg.bon_n}
    for seed in study.cfg.seeds:
        draws = bon_draws(study, seed)

        def score(draws=draws):
            tokenizer = load_tokenizer(str(rm))
            model = load_reward_model(str(rm), tokenizer).eval()
            flat = reward_model_scores(model, tokenizer, [d["prompt"] for d in draws for _ in d["responses"]],
                                       [y for d in draws for y in d["responses"]],
                                       [e for d in draws for e in d["terminated"]],
                                       batch_size=study.run_cfg.eval_batch_size)
            k = len(draws[0]["responses"])
            return [flat[i * k:(i + 1) * k] for i in range(len(draws))]

        scores = cached_values(study.out / "bon" / f"scores_{name}_seed_{seed}.json", score)
        flat = [x for row in scores for x in row]
        mean = sum(flat) / len(flat)
        std = math.sqrt(sum((x - mean) ** 2 for x in flat) / max(len(flat) - 1, 1)) or 1.0
        base_gold = [sum(d["gold"]) / len(d["gold"]) for d in draws]
        base_proxy = [sum(s) / len(s) for s in scores]
        for n in study.cfg.bon_n:
            gold[n].append([best_of_n_expectation(s, d["gold"], n) - b for s, d, b in zip(scores, draws, base_gold)])
            proxy[n].append([(best_of_n_expectation(s, s, n) - b) / std for s, b in zip(scores, base_proxy)])
    points = [{"n": n, "kl": math.log(n) - (n - 1) / n, "d": math.sqrt(math.log(n) - (n - 1) / n),
               "gold_gain": figure(gold[n]), "proxy_gain": figure(proxy[n])} for n in study.cfg.bon_n]
    fit = fit_form([p["d"] for p in points], [p["gold_gain"]["mean"] for p in points], "bon")
    return {"points": points, "fit_gold": {**fit, "peak_d": peak_d(fit)}}


# PPO's logged steps after the first are pooled into this many windows of consecutive
# steps: one step's gold is the mean of one rollout batch, too noisy across seeds to read
RL_POINTS = 8


def step_windows(steps: int, points: int = RL_POINTS) -> list[range]:
    """Logged step indices grouped as [0] (the SFT policy's own rollouts, the origin) and
    up to `points` windows of consecutive later steps, as even as they divide."""
    later = steps - 1
    n = min(points, later)
    return [range(0, 1)] + [range(1 + later * i // n, 1 + later * (i + 1) // n) for i in range(n)]


def rl_curves(study: Study, rm: Path, name: str) -> dict:
    """Per window of logged PPO steps (step_windows): sqrt(KL), gold and proxy of the
    rollouts, as gains over the first step (the SFT policy's own rollouts); each seed's
    window mean is one value, the interval is over the seeds."""
    from rlhfkit.experiment.report_plots import overoptimisation_points

    runs = [overoptimisation_points(study.ppo(study.out / f"ppo_{name}" / f"seed_{seed}", seed,
                                              reward_model=rm) / "metrics.jsonl") for seed in study.cfg.seeds]

    def mean(r: dict, key: str, window: range) -> float:
        return sum(r[key][i] for i in window) / len(window)

    points = []
    for w in step_windows(min(len(r["step"]) for r in runs)):
        first, last = runs[0]["step"][w[0]], runs[0]["step"][w[-1]]
        points.append({"step": f"{first}" if first == last else f"{first}-{last}",
                       "d": sum(mean(r, "sqrt_kl", w) for r in runs) / len(runs),
                       "gold_gain": figure([[mean(r, "gold", w) - r["gold"][0]] for r in runs]),
                       "proxy_gain": figure([[mean(r, "proxy", w) - r["proxy"][0]] for r in runs])})
    fit = fit_form([p["d"] for p in points], [p["gold_gain"]["mean"] for p in points], "rl")
    return {"points": points, "fit_gold": {**fit, "peak_d": peak_d(fit)}}


def overoptimisation_study(study: Study) -> dict:
    cfg = study.cfg
    rms = reward_models(study)
    parts = {}
    if "bon" in cfg.parts:
        parts["bon"] = {name: bon_curves(study, rm, name) for name, rm in rms.items()}
    if "rl" in cfg.parts:
        parts["rl"] = {name: rl_curves(study, rm, name) for name, rm in rms.items()}
    report = {"study": "overoptimisation", "run_dir": str(study.run), "seeds": list(cfg.seeds),
              "bon_prompts": cfg.bon_prompts, "reward_models": {k: str(v) for k, v in rms.items()}, **parts}
    plots, sections = {}, []
    for part, curves in parts.items():
        what = "best-of-n" if part == "bon" else "PPO steps"
        fitted = {}
        for name, c in curves.items():
            f = c["fit_gold"]
            if f["a"] is not None:
                top = max(p["d"] for p in c["points"])
                xs = [top * i / 50 for i in range(51)]
                fitted[f"fit {f['form']}, {name}"] = (xs, [form_value(f, x) for x in xs])
        panels = [{"xlabel": "d = sqrt(KL to SFT)", "ylabel": "gold gain over SFT", "curves": fitted,
                   "series": {RM_LABELS.get(n, n): [(p["d"], p["gold_gain"]) for p in c["points"]]
                              for n, c in curves.items()}},
                  {"xlabel": "d = sqrt(KL to SFT)", "ylabel": "proxy (RM) gain over SFT, RM std units",
                   "series": {RM_LABELS.get(n, n): [(p["d"], p["proxy_gain"]) for p in c["points"]]
                              for n, c in curves.items()}}]
        plots[f"overoptimisation_{part}.png"] = (panels, f"Over-optimisation, {what}: gold and proxy vs sqrt(KL)")
        fits = table(["reward model", "form", "a", "b", "R^2", "fitted peak d", "points"],
                     [[RM_LABELS.get(n, n), c["fit_gold"]["form"], c["fit_gold"]["a"], c["fit_gold"]["b"],
                       c["fit_gold"]["r2"], c["fit_gold"]["peak_d"], f"{c['fit_gold']['points']}"]
                      for n, c in curves.items()])
        key = "n" if part == "bon" else "step"
        points = table([key, "d", *[f"gold gain ({n})" for n in curves], *[f"proxy gain ({n})" for n in curves]],
                       [[f"{p[key]}", f"{p['d']:.2f}", *[c["points"][i]["gold_gain"] for c in curves.values()],
                         *[c["points"][i]["proxy_gain"] for c in curves.values()]]
                        for i, p in enumerate(next(iter(curves.values()))["points"])])
        sections.append((f"{what}: Gao et al.'s form fitted to the gold gain", fits))
        sections.append((f"{what}: points", points))
    write_study_report(study.out, "overoptimisation", report, sections, plots)
    return report
