"""data: the reward model and PPO from ~250 comparison prompts to all of the run's, and
beyond: the world makes more comparison prompts (the next ones of the comparisons
split, disjoint from every other split), samples K SFT responses to each and has the
run's labelers (their recalibrated noise kept) rank them. RM accuracy against gold
and PPO's win rate against SFT against the number of prompts, on a log axis."""
from __future__ import annotations

import itertools
import json

from rlhfkit.experiment.comparisons import filter_ranking
from rlhfkit.experiment.data import chat
from rlhfkit.experiment.studies.common import Study, figure
from rlhfkit.experiment.studies.points import train_point
from rlhfkit.experiment.studies.report import table, write_study_report
from rlhfkit.io import read_jsonl, write_json, write_jsonl
from rlhfkit.world.judge import win_indicators
from rlhfkit.world.labelers import LabelerConfig, make_comparisons
from rlhfkit.world.splits import iter_split


def extra_comparisons(study: Study, n_prompts: int) -> list[dict]:
    """Rankings of `n_prompts` new comparison prompts (the comparisons split's stream after the
    run's own prompts): K SFT samples each, ranked by the run's labelers; cached and extended."""
    from rlhfkit.experiment.sampling import sample_responses
    from rlhfkit.models.loading import load_causal_lm, load_tokenizer

    path, count_path = study.out / "extra_comparisons.jsonl", study.out / "extra_comparisons.count.json"
    have = read_jsonl(path) if path.exists() else []
    labeled = json.loads(count_path.read_text())["prompts"] if count_path.exists() else 0  # rankings can be dropped
    want = n_prompts - labeled
    if want <= 0:
        return have
    run_cfg = study.run_cfg
    seen = {r["instruction"] for r in read_jsonl(study.lay.data / "comparison_prompts.jsonl")}
    stream = (t for t in iter_split("comparisons", run_cfg.seed) if t.instruction not in seen)
    start = run_cfg.comparison_prompts + labeled  # prompt indices continue the run's: the labelers' assignment
    tasks = list(itertools.islice(stream, labeled, labeled + want))
    tokenizer = load_tokenizer(str(study.lay.sft))
    model = load_causal_lm(str(study.lay.sft), tokenizer).eval()
    s = sample_responses(model, tokenizer, [chat(t.instruction) for t in tasks for _ in range(run_cfg.k)],
                         temperature=run_cfg.comparison_temperature, max_new_tokens=run_cfg.max_new_tokens,
                         batch_size=run_cfg.eval_batch_size, seed=run_cfg.seed + 101 + start)
    k = run_cfg.k
    labeler = LabelerConfig(**json.loads((study.lay.comparisons / "labelers.json").read_text())["labeler_config"])
    raw = make_comparisons(tasks, [s.texts[i * k:(i + 1) * k] for i in range(len(tasks))],
                           [s.terminated[i * k:(i + 1) * k] for i in range(len(tasks))], run_cfg.seed, labeler,
                           index_offset=start)
    rows = have + [r for r in (filter_ranking(x) for x in raw) if r is not None]
    write_jsonl(path, rows)
    write_json(count_path, {"prompts": labeled + len(tasks)})
    return rows


def comparisons_for(study: Study, count: int, train: list[dict]) -> list[dict]:
    """The first `count` prompts' rankings (0: all the run's training rankings; more: new ones)."""
    if count == 0:
        return train
    if count <= len(train):
        return train[:count]
    return train + extra_comparisons(study, count - len(train))


def data_study(study: Study) -> dict:
    cfg = study.cfg
    sft = study.sft_eval()
    heldout = study.heldout_rows()
    train = study.train_rows()
    rows = []
    for count in cfg.comparison_counts:
        comparisons = comparisons_for(study, count, train)
        name = f"prompts_{len(comparisons)}"
        per_seed = train_point(study, name, lambda seed: comparisons, heldout)
        rows.append({"requested": count, "rankings": len(comparisons), "beyond_run": len(comparisons) > len(train),
                     "rm_accuracy_vs_gold": figure([v["rm_accuracy"] for v in per_seed.values()], (0.0, 1.0)),
                     "ppo_gold": figure([v["eval"]["gold"] for v in per_seed.values()]),
                     "ppo_win_vs_sft": figure([win_indicators(v["eval"]["gold"], sft["gold"])
                                               for v in per_seed.values()], (0.0, 1.0))})
    report = {"study": "data", "run_dir": str(study.run), "seeds": list(cfg.seeds), "run_rankings": len(train),
              "heldout_rankings": len(heldout), "points": rows}
    x = "comparison prompts (rankings of K responses; log axis)"
    panels = [{"xlabel": x, "ylabel": "RM accuracy vs gold (held-out rankings)", "logx": True,
               "series": {"reward model": [(r["rankings"], r["rm_accuracy_vs_gold"]) for r in rows]}},
              {"xlabel": x, "ylabel": "PPO win rate vs SFT (gold)", "logx": True, "hline": (0.5, "even"),
               "series": {"PPO": [(r["rankings"], r["ppo_win_vs_sft"]) for r in rows]}}]
    lines = table(["comparison prompts", "RM accuracy vs gold", "PPO gold", "PPO win rate vs SFT"],
                  [[f"{r['rankings']}" + (" (new prompts)" if r["beyond_run"] else ""), r["rm_accuracy_vs_gold"],
                    r["ppo_gold"], r["ppo_win_vs_sft"]] for r in rows])
    write_study_report(study.out, "data", report,
                       [("Per comparison count", [f"The run's RM learned from {len(train)} rankings.", "", *lines])],
                       {"data.png": (panels, "Comparison data: RM accuracy and PPO's win rate (95% intervals)")})
    return report
