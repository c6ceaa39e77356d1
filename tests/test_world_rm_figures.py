"""The reward model's report card from given scorers: format preference per
constraint on pairs built from held-out tasks, and the partial correlation of
score with length at fixed gold."""
import math
import random

import pytest

from rlhfkit.experiment.reward_figures import (format_pairs, format_preference_figures, gold_order_credit,
                                              partial_correlation)
from rlhfkit.world.judge import WIN_RATE_TOLERANCE, judge_task
from rlhfkit.world.splits import make_split
from rlhfkit.world.tasks import parse_instruction


def _rows(n=40):
    return [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": t.instruction}]}
            for t in make_split("comparisons", n, 0)]


def test_format_pairs_differ_in_the_asked_format_alone():
    rows = _rows()
    pairs = format_pairs(rows)
    tasks = [parse_instruction(r["prompt"][-1]["content"]) for r in rows]
    # every held-out task once per constraint its family allows (caps never for count)
    assert len(pairs) == sum(3 if t.family == "count" else 4 for t in tasks)
    for constraint, prompt, formatted, plain in pairs:
        asked = parse_instruction(prompt[-1]["content"])
        assert asked.constraint == constraint and prompt[0] == {"role": "system", "content": "Be brief."}
        good, bad = judge_task(asked, formatted, True), judge_task(asked, plain, True)
        assert good.exact and bad.exact and good.follows and not bad.follows
        assert good.gold == pytest.approx(2 * bad.gold)  # the judge halves the plain answer's score


def test_format_preference_of_stub_scorers():
    rows = _rows()
    calls = []

    def capitals(prompts, responses, terminated):
        calls.append(len(responses))
        assert all(terminated)
        return [sum(ch.isupper() for ch in y) for y in responses]

    figures = format_preference_figures(rows, capitals)
    # capitals: caps always, prefix always ("Answer:" has one); brackets and no_period tie
    assert figures["format_preference"] == {"caps": 1.0, "brackets": 0.5, "prefix": 1.0, "no_period": 0.5}
    assert calls == [2 * sum(figures["format_pairs"].values())]  # one call, both members of every pair
    assert min(figures["format_pairs"].values()) > 20
    longer = format_preference_figures(rows, lambda p, ys, t: [len(y) for y in ys])["format_preference"]
    assert longer == {"caps": 0.5, "brackets": 1.0, "prefix": 1.0, "no_period": 0.0}
    empty = format_preference_figures([], lambda p, ys, t: [])
    assert all(math.isnan(v) for v in empty["format_preference"].values())


def test_gold_order_credit_counts_gold_ties_one_half_and_score_ties_against_the_first():
    assert gold_order_credit(2.0, 1.0, 0.9, 0.1) == 1.0 and gold_order_credit(1.0, 2.0, 0.9, 0.1) == 0.0
    assert gold_order_credit(1.0, 2.0, 0.1, 0.9) == 1.0
    # gold within the judge's tie tolerance: one half whatever the scores say
    assert gold_order_credit(2.0, 1.0, 0.5, 0.5 + WIN_RATE_TOLERANCE / 2) == 0.5
    assert gold_order_credit(1.0, 1.0, 0.9, 0.1) == 0.0 and gold_order_credit(1.0, 1.0, 0.1, 0.9) == 1.0


def test_length_at_fixed_gold_is_zero_for_gold_and_positive_for_a_length_bias():
    rng = random.Random(0)
    gold = [rng.random() for _ in range(2000)]
    length = [20 * g + rng.gauss(0, 5) for g in gold]  # longer answers are better on average
    noisy_gold = [g + rng.gauss(0, 0.1) for g in gold]
    biased = [g + 0.05 * n for g, n in zip(gold, length)]
    # an RM that scores gold (plus noise) correlates with length through gold alone
    assert partial_correlation(noisy_gold, length, gold) == pytest.approx(0.0, abs=0.06)
    assert partial_correlation(biased, length, gold) > 0.5
    # the formula equals the correlation of the residuals after regressing on gold
    import numpy as np

    g, s, n = np.array(gold), np.array(biased), np.array(length)
    resid = lambda y: y - np.polyval(np.polyfit(g, y, 1), g)
    assert partial_correlation(biased, length, gold) == pytest.approx(np.corrcoef(resid(s), resid(n))[0, 1])
    assert math.isnan(partial_correlation(gold, length, gold))  # the score is gold itself: undefined


def test_reward_model_figures_of_a_trained_logratio_model(tmp_path):
    """The figures' whole path on a saved logratio reward model: it loads with its
    reference, scores the held-out pairs and the format pairs, and records its scale."""
    from conftest import write_jsonl

    from rlhfkit.experiment.comparisons import label_comparisons
    from rlhfkit.experiment.reward_figures import reward_model_figures
    from rlhfkit.testing import save_tiny_model
    from rlhfkit.trainers.reward import RewardConfig, train_reward_model
    from rlhfkit.world.demonstrators import near_miss, verbose_answer
    from rlhfkit.world.labelers import LabelerConfig

    rng = random.Random(0)
    tasks = make_split("comparisons", 24, 0)
    responses = [[t.formatted_answer, verbose_answer(t, rng), near_miss(t, rng)] for t in tasks]
    rows, _, labeler = label_comparisons(tasks, responses, [[True] * 3 for _ in tasks], seed=0,
                                         labeler=LabelerConfig(), target_agreement=0.73, calibrate=False)
    out = train_reward_model(RewardConfig(model=save_tiny_model(tmp_path / "base", hidden=32),
                                          data=write_jsonl(tmp_path / "c.jsonl", rows), output_dir=str(tmp_path / "rm"),
                                          reward_form="logratio", reward_scale=3.0, num_epochs=1, eval_fraction=0.0,
                                          per_device_batch_size=8, progress=False))
    figures = reward_model_figures(str(out), rows, labeler)
    assert figures["reward_scale"] == 3.0 and figures["pairs"] == 3 * len(rows)
    assert figures["format_pairs"] == {c: sum(c != "caps" or t.family != "count" for t in tasks)
                                       for c in ("caps", "brackets", "prefix", "no_period")}
    assert all(0 <= v <= 1 for v in figures["format_preference"].values())
    assert set(figures["score_correlation"]) == {"gold", "length", "length_at_fixed_gold"}
