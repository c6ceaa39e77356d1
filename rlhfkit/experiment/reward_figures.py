"""The reward model's held-out figures: on the held-out comparison pairs, how often
it agrees with the labeler who ranked them, with the gold judge, and on pairs where
only one response is exact or follows the asked format; a second independent
labeler and the gold judge give the ceilings. Beside them, on pairs built from the
held-out tasks, how often it prefers the exactly right answer in the asked format
to the same answer without it (format_preference), and how its score correlates
with gold and with length, also at fixed gold (score_correlation)."""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

import torch

from rlhfkit.world.judge import WIN_RATE_TOLERANCE, judge_task
from rlhfkit.world.labelers import LabelerConfig, rank
from rlhfkit.world.tasks import CONSTRAINTS, allowed_constraints, apply_format, constrain, parse_instruction

# Offset of the second, independent labeler (never in the pool) used for the
# labelers' own agreement on the reward model's held-out pairs.
SECOND_LABELER_OFFSET = 1_000_003


@torch.no_grad()
def reward_model_figures(rm_dir: str, rows: Sequence[dict], labeler: LabelerConfig, batch_size: int = 64) -> dict:
    """Held-out pairwise figures on the same pairs (different texts, labeler order):
    val_accuracy (RM vs the labeler who ranked them), val_accuracy_vs_gold (RM vs
    the gold judge, gold ties count one half), labeler_agreement (a second,
    independent labeler vs the first), oracle_agreement (gold vs the first labeler:
    the ceiling a reward model that learned the labeler could reach against gold);
    format_preference and format_pairs per constraint (format_preference_figures);
    reward_scale of a likelihood-form model."""
    from rlhfkit.models.loading import load_reward_model, load_tokenizer, reward_form

    tokenizer = load_tokenizer(rm_dir)
    model = load_reward_model(rm_dir, tokenizer).eval()

    def score(prompts, responses, terminated):
        return reward_model_scores(model, tokenizer, prompts, responses, terminated, batch_size=batch_size)

    figures = heldout_pair_figures(rows, score([row["prompt"] for row in rows for _ in row["responses"]],
                                               [y for row in rows for y in row["responses"]],
                                               [t for row in rows for t in row["terminated"]]), labeler)
    figures.update(format_preference_figures(rows, score))
    form, scale = reward_form(model)
    if form != "head":
        figures["reward_scale"] = scale
    return figures


def format_pairs(rows: Sequence[dict]) -> list[tuple[str, list, str, str]]:
    """(constraint, prompt, formatted, plain) for every held-out task and every constraint
    allowed for its family: the task's instruction asking for that constraint, its
    canonical answer in that format, and the same answer plain. Kept only where the
    world's judge finds both exactly right, the first following the request and the
    second not, so a pair differs in the asked format alone."""
    pairs = []
    for row in rows:
        task = parse_instruction(row["prompt"][-1]["content"])
        for constraint in allowed_constraints(task.family):
            asked = constrain(task, constraint)
            formatted, plain = apply_format(asked.answer, constraint), asked.answer
            good, bad = judge_task(asked, formatted, True), judge_task(asked, plain, True)
            if good.exact and bad.exact and good.follows and not bad.follows:
                prompt = [*row["prompt"][:-1], {**row["prompt"][-1], "content": asked.instruction}]
                pairs.append((constraint, prompt, formatted, plain))
    return pairs


def format_preference_figures(rows: Sequence[dict], score: Callable[[list, list, list], Sequence[float]]) -> dict:
    """format_preference: per constraint, the share of format_pairs(rows) where `score`
    ranks the answer in the asked format above the same answer without it (ties one
    half); format_pairs: how many pairs each share is over. `score(prompts, responses,
    terminated)` gives one score per response, both members ending with EOS."""
    pairs = format_pairs(rows)
    prompts = [p for _, p, _, _ in pairs for _ in range(2)]
    responses = [y for _, _, formatted, plain in pairs for y in (formatted, plain)]
    s = list(score(prompts, responses, [True] * len(responses))) if pairs else []
    won: dict[str, list[float]] = {c: [] for c in CONSTRAINTS}
    for k, (constraint, *_) in enumerate(pairs):
        a, b = s[2 * k], s[2 * k + 1]
        won[constraint].append(1.0 if a > b else 0.5 if a == b else 0.0)
    return {"format_preference": {c: sum(w) / len(w) if w else float("nan") for c, w in won.items()},
            "format_pairs": {c: len(w) for c, w in won.items()}}


@torch.no_grad()
def reward_model_scores(model, tokenizer, prompts: Sequence, responses: Sequence[str], terminated: Sequence[bool],
                        *, batch_size: int = 64) -> list[float]:
    """The reward model's raw score of each response to its prompt (its stored
    normalisation is a shift and a positive scale, so orders and best-of-n are the
    same): rlhfkit.generation.generate.score, the one scoring loop."""
    from rlhfkit.generation.generate import score

    return score(model, tokenizer, list(prompts), list(responses), list(terminated), batch_size=batch_size,
                 normalise=False)


# Each held-out figure is a ratio of counts over prompts (numerator, denominator); heldout.json keeps
# every prompt's counts under per_prompt, so the report can give the figure its interval.
RATIO_FIGURES = {"val_accuracy": "pairs", "val_accuracy_vs_gold": "pairs", "labeler_agreement": "pairs",
                 "oracle_agreement": "pairs", "follows_pair_accuracy": "follows_pairs"}
PER_PROMPT_COUNTS = ("pairs", *RATIO_FIGURES, "follows_pairs")

def gold_order_credit(score_i: float, score_j: float, gold_i: float, gold_j: float) -> float:
    """Credit for ordering a pair as the gold judge does: 1 or 0, one half where gold
    ties, within the judge's own WIN_RATE_TOLERANCE (so a pair tied here is a tie in the
    win rates too). A score tie orders j first, as `score_i > score_j` reads."""
    if abs(gold_i - gold_j) <= WIN_RATE_TOLERANCE:
        return 0.5
    return float((score_i > score_j) == (gold_i > gold_j))


def heldout_pair_figures(rows: Sequence[dict], scores: Sequence[float], labeler: LabelerConfig) -> dict:
    """reward_model_figures from given scores: `scores` holds one score per response of
    `rows`, in order (responses of a row best first in the labeler's ranking)."""
    acc = acc_gold = agree = oracle = 0.0
    pairs = 0
    pos = 0
    exact_pairs: dict[str, list[float]] = {}  # family -> [pairs differing in exactness, RM prefers the exact one]
    follows_pairs = [0, 0.0]  # [pairs where only one response follows the asked format, RM prefers that one]
    all_scores, all_gold, all_length = [], [], []
    per_prompt: dict[str, list[float]] = {k: [] for k in PER_PROMPT_COUNTS}
    for row in rows:
        before = {"pairs": pairs, "val_accuracy": acc, "val_accuracy_vs_gold": acc_gold, "labeler_agreement": agree,
                  "oracle_agreement": oracle, "follows_pairs": follows_pairs[0],
                  "follows_pair_accuracy": follows_pairs[1]}
        ys = row["responses"]
        k = len(ys)
        s = scores[pos:pos + k]
        pos += k
        task = parse_instruction(row["prompt"][-1]["content"])
        ended = row["terminated"]
        judged = [judge_task(task, y, t) for y, t in zip(ys, ended)]
        g = [j.gold for j in judged]
        all_scores += s
        all_gold += g
        all_length += [len(y) for y in ys]
        fam = exact_pairs.setdefault(row.get("family", task.family), [0, 0])
        for i in range(k):
            for j in range(i + 1, k):
                if judged[i].exact != judged[j].exact:  # score ties count one half
                    fam[0] += 1
                    fam[1] += 0.5 if s[i] == s[j] else float((s[i] > s[j]) == judged[i].exact)
                if judged[i].follows != judged[j].follows:
                    follows_pairs[0] += 1
                    follows_pairs[1] += 0.5 if s[i] == s[j] else float((s[i] > s[j]) == judged[i].follows)
        other = rank(task, ys, ended, row["labeler"] + SECOND_LABELER_OFFSET, row["seed"],
                     prompt_index=row["index"], config=labeler)
        other_pos = {idx: r for r, idx in enumerate(other)}
        for i in range(k):
            for j in range(i + 1, k):  # the labeler preferred i to j
                pairs += 1
                acc += 1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0
                acc_gold += gold_order_credit(s[i], s[j], g[i], g[j])
                oracle += gold_order_credit(1.0, 0.0, g[i], g[j])  # the labeler put i first
                agree += float(other_pos[i] < other_pos[j])
        after = {"pairs": pairs, "val_accuracy": acc, "val_accuracy_vs_gold": acc_gold, "labeler_agreement": agree,
                 "oracle_agreement": oracle, "follows_pairs": follows_pairs[0], "follows_pair_accuracy": follows_pairs[1]}
        for k in per_prompt:  # this prompt's share of each count: the clusters of the figures' intervals
            per_prompt[k].append(after[k] - before[k])
    if not pairs:
        return {"val_accuracy": float("nan"), "labeler_agreement": float("nan"),
                "val_accuracy_vs_gold": float("nan"), "oracle_agreement": float("nan"), "pairs": 0}
    n_exact = sum(n for n, _ in exact_pairs.values())
    return {"val_accuracy": acc / pairs, "labeler_agreement": agree / pairs,
            "val_accuracy_vs_gold": acc_gold / pairs, "oracle_agreement": oracle / pairs, "pairs": pairs,
            "prompts": len(rows),
            # what the RM learned: does it prefer the exactly-right response when only one of a
            # pair is, and does its score follow gold or merely length (characters)?
            "exact_pairs": n_exact,
            "exact_pair_accuracy": sum(r for _, r in exact_pairs.values()) / n_exact if n_exact else float("nan"),
            "exact_pair_accuracy_per_family": {f: r / n for f, (n, r) in sorted(exact_pairs.items()) if n},
            "follows_pairs": follows_pairs[0],
            "follows_pair_accuracy": follows_pairs[1] / follows_pairs[0] if follows_pairs[0] else float("nan"),
            "score_correlation": {"gold": _pearson(all_scores, all_gold), "length": _pearson(all_scores, all_length),
                                  "length_at_fixed_gold": partial_correlation(all_scores, all_length, all_gold)},
            "per_prompt": per_prompt}


def partial_correlation(a: Sequence[float], b: Sequence[float], c: Sequence[float]) -> float:
    """Correlation of a and b with c held fixed (linearly): the correlation of their
    residuals after each is regressed on c,

        r_ab.c = (r_ab - r_ac r_bc) / sqrt((1 - r_ac^2) (1 - r_bc^2)).

    With a the RM score, b length and c gold: does the RM still reward length among
    responses of equal gold? NaN where undefined (a or b a linear function of c)."""
    r_ab, r_ac, r_bc = _pearson(a, b), _pearson(a, c), _pearson(b, c)
    denominator = (1 - r_ac ** 2) * (1 - r_bc ** 2)
    if not denominator > 1e-12:  # also NaN
        return float("nan")
    return (r_ab - r_ac * r_bc) / math.sqrt(denominator)


def _pearson(a: Sequence[float], b: Sequence[float]) -> float:
    """statistics.correlation, NaN where it is undefined (fewer than 2 points, a constant side)."""
    try:
        return statistics.correlation(a, b)
    except statistics.StatisticsError:
        return float("nan")
