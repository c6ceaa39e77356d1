"""AI feedback in the world (RLAIF beside RLHF): base-large judges the same SFT
samples the simulated labelers ranked, by Constitutional AI's multiple-choice
method (rlhfkit.label.ai: the review template its web text taught it, "(A)"
against "(B)", both orders averaged), and the AI rankings train a second reward
model and a second PPO policy (`rlhfkit run --feedback ai`: rm_ai/, ppo_ai/).

    comparisons_ai/comparisons.jsonl  the labelers' training rankings, re-ranked by the judge
                                      (responses ordered by their summed win probabilities)
    comparisons_ai/heldout.jsonl      the held-out rankings, unchanged (the RM's figures are
                                      measured against the labelers and gold, as for RLHF)
    comparisons_ai/ai_labeler.json    agreement with gold and with the labeler on the held-out
                                      pairs, beside the labeler's own agreement with gold, and
                                      the labeling cost in judge forward passes
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from rlhfkit.io import read_jsonl, write_json, write_jsonl
from rlhfkit.label.ai import Reasoning
from rlhfkit.world.judge import WIN_RATE_TOLERANCE, judge_task
from rlhfkit.world.tasks import parse_instruction


def pairwise_agreement(rows: Sequence[dict], probs: Sequence[float]) -> dict:
    """Agreement of pairwise judgements with gold and with the labeler on every pair
    (i < j) of each row's responses, in order. Rows store responses best first in
    the labeler's ranking, so the labeler preferred i to j; `probs` holds P(i better
    than j) per pair. Gold ties and judge ties (p = 1/2) count one half.

    Also: agreement with gold per constraint ("plain" for none) and per task family,
    and `format_preference`, the share of pairs on constrained prompts where only one
    response has the asked format on which the judge prefers that one (ties one half),
    with `labeler_format_preference`, the labeler's own share on the same pairs."""
    expected = sum(len(r["responses"]) * (len(r["responses"]) - 1) // 2 for r in rows)
    if expected != len(probs):
        raise ValueError(f"{len(probs)} judgements for {expected} pairs")
    totals: dict[str, list[float]] = {}  # figure -> [sum, count]

    def add(name: str, value: float) -> None:
        entry = totals.setdefault(name, [0.0, 0])
        entry[0] += value
        entry[1] += 1

    k = 0
    for row in rows:
        task = parse_instruction(row["prompt"][-1]["content"])
        verdicts = [judge_task(task, y, t) for y, t in zip(row["responses"], row["terminated"])]
        for i in range(len(verdicts)):
            for j in range(i + 1, len(verdicts)):
                p = probs[k]
                k += 1
                judge_says = 0.5 if p == 0.5 else float(p > 0.5)  # 1: i better
                add("agreement_labeler", judge_says)
                gi, gj = verdicts[i].gold, verdicts[j].gold
                tie = abs(gi - gj) <= WIN_RATE_TOLERANCE  # gold_order_credit's rule, for a soft verdict
                judge_gold = 0.5 if tie else judge_says if gi > gj else 1 - judge_says
                add("agreement_gold", judge_gold)
                add("labeler_agreement_gold", 0.5 if tie else float(gi > gj))
                add(f"constraint/{task.constraint or 'plain'}", judge_gold)
                add(f"family/{task.family}", judge_gold)
                if verdicts[i].follows != verdicts[j].follows:  # only one has the asked format
                    add("format_preference", judge_says if verdicts[i].follows else 1 - judge_says)
                    add("labeler_format_preference", float(verdicts[i].follows))
    nan = float("nan")
    mean = {name: s / n for name, (s, n) in totals.items()}
    return {"pairs": k, **{name: mean.get(name, nan) for name in
                           ("agreement_gold", "agreement_labeler", "labeler_agreement_gold", "format_preference",
                            "labeler_format_preference")},
            "format_pairs": totals.get("format_preference", [0, 0])[1],
            "agreement_gold_by_constraint": {n.split("/", 1)[1]: v for n, v in sorted(mean.items())
                                             if n.startswith("constraint/")},
            "agreement_gold_by_family": {n.split("/", 1)[1]: v for n, v in sorted(mean.items())
                                         if n.startswith("family/")}}


def heldout_pairs(rows: Sequence[dict]) -> tuple[list, list[tuple[str, str]]]:
    """(prompts, pairs) of every pair i < j of each held-out row's responses, in order."""
    prompts, pairs = [], []
    for row in rows:
        ys = row["responses"]
        for i in range(len(ys)):
            for j in range(i + 1, len(ys)):
                prompts.append(row["prompt"])
                pairs.append((ys[i], ys[j]))
    return prompts, pairs


def ai_comparisons_stage(out: Path, judge_dir: str, *, principles: Sequence[str] | None, seed: int,
                         batch_size: int = 64, reasoning: Reasoning | None = None, ablations: bool = False,
                         base_dirs: dict[str, str] | None = None) -> dict:
    """Re-rank the comparison stage's training rankings with the AI judge and measure it
    on the held-out pairs. With `ablations`, the same held-out pairs are also judged
    without reasoning, without principles, and by each base model of `base_dirs`
    (`configurations`: agreement and cost per row). Writes comparisons_ai/ and returns
    its figures."""
    from rlhfkit.label.ai import rank_items
    from rlhfkit.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(judge_dir)
    model = load_causal_lm(judge_dir, tokenizer).eval()
    principles = list(principles) if principles else None
    stats: dict = {}
    start = time.perf_counter()
    train = read_jsonl(out / "comparisons" / "comparisons.jsonl")
    items = [{"prompt": r["prompt"], "responses": r["responses"], "terminated": r["terminated"], "id": r["index"]}
             for r in train]
    ranked = rank_items(model, tokenizer, items, principles, seed=seed, batch_size=batch_size, stats=stats,
                        reasoning=reasoning)
    train_seconds = time.perf_counter() - start
    rows = []
    for row, r in zip(train, ranked):  # responses best first in the judge's order, as the RM trainer reads them
        order = sorted(range(len(row["responses"])), key=lambda i: r["ranking"][i])
        rows.append({**row, "responses": [row["responses"][i] for i in order],
                     "terminated": [row["terminated"][i] for i in order], "labeler": "ai",
                     "original_order": [row["original_order"][i] for i in order],
                     "ai_wins": [r["ai_wins"][i] for i in order]})
    held = read_jsonl(out / "comparisons" / "heldout.jsonl")
    labeler = measure_judge(judge_dir, held, principles=principles, reasoning=reasoning, seed=seed,
                            batch_size=batch_size, loaded=(model, tokenizer))
    train_pairs = sum(len(r["responses"]) * (len(r["responses"]) - 1) // 2 for r in rows)
    figures = {**labeler, "principles": principles or [], "train_rankings": len(rows), "train_pairs": train_pairs,
               "train_forward_passes": stats.get("forward_sequences", 0),
               "train_review_tokens": stats.get("review_tokens", 0), "train_seconds": train_seconds,
               "seconds": time.perf_counter() - start}
    if ablations:
        variants = {"AI labeler": labeler}
        if reasoning is not None:
            variants["without reasoning"] = measure_judge(judge_dir, held, principles=principles, seed=seed,
                                                          batch_size=batch_size, loaded=(model, tokenizer))
        if principles:
            variants["without principles"] = measure_judge(judge_dir, held, reasoning=reasoning, seed=seed,
                                                           batch_size=batch_size, loaded=(model, tokenizer))
        for name, path in (base_dirs or {}).items():  # the judge's size and reading: the plain base models
            variants[f"{name}, direct"] = measure_judge(path, held, seed=seed, batch_size=batch_size)
        figures["configurations"] = [{"name": name, **{k: v for k, v in fig.items() if k != "review_samples"}}
                                     for name, fig in variants.items()]
    write_jsonl(out / "comparisons_ai" / "comparisons.jsonl", rows)
    write_jsonl(out / "comparisons_ai" / "heldout.jsonl", held)
    write_json(out / "comparisons_ai" / "ai_labeler.json", figures, indent=2)
    return figures


def reference_responses_stage(prompts_file: Path, sft_dir: Path, out_dir: Path, judge_dir: str,
                              principles_file: str, *, max_new_tokens: int, batch_size: int, seed: int,
                              scale_prompts: int = 256) -> None:
    """Direct RLAIF's references: one SFT sample (T = 1) per PPO prompt, in the prompt
    records' `reference` column (out_dir/ppo_prompts.jsonl); and the scale of the judge's
    reward, the std of logit P(y better than the reference) over a second SFT sample y
    of the first `scale_prompts` prompts (out_dir/scale.json), so the reward can be
    divided by it as the RM's is normalised."""
    from rlhfkit.experiment.sampling import sample_responses
    from rlhfkit.label.ai import AIJudgeReward, read_principles
    from rlhfkit.models.loading import load_causal_lm, load_tokenizer

    rows = read_jsonl(prompts_file)
    tokenizer = load_tokenizer(str(sft_dir))
    sft = load_causal_lm(str(sft_dir), tokenizer).eval()
    prompts = [r["prompt"] for r in rows]
    refs = sample_responses(sft, tokenizer, prompts, temperature=1.0, max_new_tokens=max_new_tokens,
                            batch_size=batch_size, seed=seed).texts
    head = prompts[:scale_prompts]
    fresh = sample_responses(sft, tokenizer, head, temperature=1.0, max_new_tokens=max_new_tokens,
                             batch_size=batch_size, seed=seed + 1).texts
    judge = AIJudgeReward(judge_dir, principles=read_principles(principles_file) if principles_file else None)
    scores = judge.score(head, fresh, refs[:len(head)]).tolist()
    mean = sum(scores) / len(scores)
    std = (sum((x - mean) ** 2 for x in scores) / max(len(scores) - 1, 1)) ** 0.5
    write_jsonl(out_dir / "ppo_prompts.jsonl", [{**r, "reference": y} for r, y in zip(rows, refs)])
    write_json(out_dir / "scale.json", {"std": std, "mean": mean, "n": len(scores)}, indent=2)


def measure_judge(judge_dir: str, held: Sequence[dict], *, principles: Sequence[str] | None = None,
                  reasoning: Reasoning | None = None, seed: int = 0, batch_size: int = 64, loaded=None) -> dict:
    """One AI labeler configuration on the held-out pairs: its agreement figures
    (pairwise_agreement), what it cost (judge sequences, review tokens, seconds) and
    labels per second, so configurations and judge sizes compare in one table.
    `loaded`: the judge's (model, tokenizer) when already loaded."""
    from rlhfkit.label.ai import judge_pairs
    from rlhfkit.models.loading import load_causal_lm, load_tokenizer

    if loaded is None:
        tokenizer = load_tokenizer(judge_dir)
        loaded = (load_causal_lm(judge_dir, tokenizer).eval(), tokenizer)
    model, tokenizer = loaded
    prompts, pairs = heldout_pairs(held)
    stats: dict = {}
    start = time.perf_counter()
    probs = judge_pairs(model, tokenizer, prompts, pairs, list(principles) if principles else None, seed=seed,
                        batch_size=batch_size, stats=stats, reasoning=reasoning).tolist()
    seconds = time.perf_counter() - start
    return {**pairwise_agreement(held, probs), "judge": judge_dir, "principles": len(principles or []),
            "reasoning": reasoning is not None, "parameters": sum(p.numel() for p in model.parameters()),
            "forward_passes": stats.get("forward_sequences", 0), "review_tokens": stats.get("review_tokens", 0),
            "seconds": seconds, "labels_per_second": len(pairs) / seconds if seconds > 0 else float("nan"),
            "review_samples": stats.get("review_samples", [])[:2]}
