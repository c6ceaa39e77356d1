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

from rlhfkit.experiment.reward_figures import GOLD_TIE
from rlhfkit.io import read_jsonl, write_json, write_jsonl
from rlhfkit.world.judge import judge_task
from rlhfkit.world.tasks import parse_instruction


def pairwise_agreement(rows: Sequence[dict], probs: Sequence[float]) -> dict:
    """Agreement of pairwise judgements with gold and with the labeler on every pair
    (i < j) of each row's responses, in order. Rows store responses best first in
    the labeler's ranking, so the labeler preferred i to j; `probs` holds P(i better
    than j) per pair. Gold ties and judge ties (p = 1/2) count one half."""
    expected = sum(len(r["responses"]) * (len(r["responses"]) - 1) // 2 for r in rows)
    if expected != len(probs):
        raise ValueError(f"{len(probs)} judgements for {expected} pairs")
    judge_gold = judge_labeler = labeler_gold = 0.0
    n = 0
    k = 0
    for row in rows:
        task = parse_instruction(row["prompt"][-1]["content"])
        gold = [judge_task(task, y, t).gold for y, t in zip(row["responses"], row["terminated"])]
        for i in range(len(gold)):
            for j in range(i + 1, len(gold)):
                p = probs[k]
                k += 1
                n += 1
                judge_labeler += 0.5 if p == 0.5 else float(p > 0.5)
                if abs(gold[i] - gold[j]) <= GOLD_TIE:
                    judge_gold += 0.5
                    labeler_gold += 0.5
                else:
                    judge_gold += 0.5 if p == 0.5 else float((p > 0.5) == (gold[i] > gold[j]))
                    labeler_gold += float(gold[i] > gold[j])
    nan = float("nan")
    return {"pairs": n, "agreement_gold": judge_gold / n if n else nan,
            "agreement_labeler": judge_labeler / n if n else nan, "labeler_agreement_gold": labeler_gold / n if n else nan}


def ai_comparisons_stage(out: Path, judge_dir: str, *, principles: Sequence[str] | None, seed: int,
                         batch_size: int = 64) -> dict:
    """Re-rank the comparison stage's training rankings with the AI judge and measure it
    on the held-out pairs. Writes comparisons_ai/ and returns its figures."""
    from rlhfkit.label.ai import judge_pairs, rank_items
    from rlhfkit.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(judge_dir)
    model = load_causal_lm(judge_dir, tokenizer).eval()
    stats: dict = {}
    start = time.perf_counter()
    train = read_jsonl(out / "comparisons" / "comparisons.jsonl")
    items = [{"prompt": r["prompt"], "responses": r["responses"], "terminated": r["terminated"], "id": r["index"]}
             for r in train]
    ranked = rank_items(model, tokenizer, items, list(principles) if principles else None, seed=seed,
                        batch_size=batch_size, stats=stats)
    rows = []
    for row, r in zip(train, ranked):  # responses best first in the judge's order, as the RM trainer reads them
        order = sorted(range(len(row["responses"])), key=lambda i: r["ranking"][i])
        rows.append({**row, "responses": [row["responses"][i] for i in order],
                     "terminated": [row["terminated"][i] for i in order], "labeler": "ai",
                     "original_order": [row["original_order"][i] for i in order],
                     "ai_wins": [r["ai_wins"][i] for i in order]})
    held = read_jsonl(out / "comparisons" / "heldout.jsonl")
    prompts, pairs = [], []
    for row in held:
        ys = row["responses"]
        for i in range(len(ys)):
            for j in range(i + 1, len(ys)):
                prompts.append(row["prompt"])
                pairs.append((ys[i], ys[j]))
    probs = judge_pairs(model, tokenizer, prompts, pairs, list(principles) if principles else None, seed=seed,
                        batch_size=batch_size, stats=stats).tolist()
    figures = {**pairwise_agreement(held, probs), "judge": judge_dir, "principles": list(principles or []),
               "train_rankings": len(rows), "forward_passes": stats.get("forward_sequences", 0),
               "seconds": time.perf_counter() - start}
    write_jsonl(out / "comparisons_ai" / "comparisons.jsonl", rows)
    write_jsonl(out / "comparisons_ai" / "heldout.jsonl", held)
    write_json(out / "comparisons_ai" / "ai_labeler.json", figures, indent=2)
    return figures
