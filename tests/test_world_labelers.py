"""Simulated labelers: agreement in docs/world.md's band, mild length bias, determinism."""
import random

import pytest

from rlhfkit.world.demonstrators import CHATTER, correct_answer, near_miss, verbose_answer
from rlhfkit.world.labelers import (
    DEFAULT_NOISE_STD, LabelerConfig, calibrate_noise, compare, labeler_agreement, length_bias,
    make_comparisons, oracle_agreement, pairwise_agreement, proxy_samples, rank, recompute_agreement,
)
from rlhfkit.world.splits import make_split
from rlhfkit.world.tasks import constrain


@pytest.fixture(scope="module")
def samples():
    return proxy_samples(1000, 4, seed=0)


def test_default_agreement_in_band(samples):
    agreement = labeler_agreement(samples, LabelerConfig())
    assert 0.70 <= agreement <= 0.76
    # On fresh proxy samples too, and with other labeler pairs.
    assert 0.70 <= labeler_agreement(proxy_samples(600, 4, seed=7), labelers=(3, 9)) <= 0.76
    assert 0.70 <= oracle_agreement(samples) <= 0.85


def test_calibration_reproduces_default(samples):
    sigma = calibrate_noise(samples, target=0.73)
    assert sigma == pytest.approx(DEFAULT_NOISE_STD, abs=0.005)
    assert labeler_agreement(samples, LabelerConfig(noise_std=sigma)) == pytest.approx(0.73, abs=0.002)
    # More noise, less agreement; none, full agreement.
    assert labeler_agreement(samples, LabelerConfig(noise_std=0.5)) < 0.65
    assert labeler_agreement(samples, LabelerConfig(noise_std=0.0)) == 1.0


def test_rank_deterministic():
    task = make_split("comparisons", 1, 0)[0]
    ys = [task.answer, task.answer + "\nHappy to help!", "nonsense", ""]
    ts = [True, True, True, False]
    a = rank(task, ys, ts, labeler_id=3, seed=1, prompt_index=5)
    assert a == rank(task, ys, ts, labeler_id=3, seed=1, prompt_index=5)
    assert sorted(a) == [0, 1, 2, 3]
    orders = {tuple(rank(task, ys, ts, labeler_id=i, seed=1, prompt_index=5)) for i in range(30)}
    assert len(orders) > 1  # labelers differ


def test_length_bias_mild():
    config = LabelerConfig()
    assert length_bias("x" * 1000, config) == pytest.approx(config.length_bias * config.length_cap)
    assert length_bias("a   b", config) == length_bias("a b", config)
    rng = random.Random(0)
    tasks = [constrain(t, None) for t in make_split("eval", 800, 0)]  # plain prompts: the answers' format is right
    prefers_verbose = prefers_wrong = 0
    for p, task in enumerate(tasks):
        canonical = correct_answer(task, rng)
        verbose = verbose_answer(task, rng)
        wrong = near_miss(task, rng) + "\n" + " ".join(rng.sample(CHATTER, 3))  # long and wrong
        prefers_verbose += compare(task, canonical, verbose, labeler_id=0, seed=0, prompt_index=p) == 1
        prefers_wrong += compare(task, canonical, wrong, labeler_id=0, seed=0, prompt_index=p) == 1
    assert 0.15 < prefers_verbose / len(tasks) < 0.5  # sometimes prefers the chattier correct answer
    assert prefers_wrong / len(tasks) < 0.03  # almost never a long wrong one
    # With no noise the bias alone decides close calls only: long chatter beats canonical.
    quiet = LabelerConfig(noise_std=0.0)
    task = tasks[0]
    long_chatter = task.answer + "\n" + " ".join(CHATTER[:4])
    assert compare(task, task.answer, long_chatter, config=quiet) == 1
    assert compare(task, task.answer, near_miss(task, rng) + "\n" + " ".join(CHATTER), config=quiet) == 0


def test_gumbel_noise(samples):
    agreement = labeler_agreement(samples[:500], LabelerConfig(noise="gumbel"))
    assert 0.68 <= agreement <= 0.78
    with pytest.raises(ValueError):
        LabelerConfig(noise="uniform")


def test_pairwise_agreement():
    assert pairwise_agreement([[0, 1, 2]], [[0, 1, 2]]) == 1.0
    assert pairwise_agreement([[0, 1, 2]], [[2, 1, 0]]) == 0.0
    assert pairwise_agreement([[0, 1]], [[1, 0]], responses=[["a", "b"]]) == 0.0
    # Pairs of identical texts are left out.
    assert pairwise_agreement([[0, 1, 2]], [[1, 0, 2]], responses=[["a", "a", "b"]]) == 1.0


def test_make_comparisons(samples):
    tasks = [s[0] for s in samples[:300]]
    responses = [list(s[1]) for s in samples[:300]]
    terminated = [list(s[2]) for s in samples[:300]]
    rows = make_comparisons(tasks, responses, terminated, seed=4)
    assert rows == make_comparisons(tasks, responses, terminated, seed=4)
    labelers = {r["labeler"] for r in rows}
    assert len(labelers) > 20 and all(0 <= lab < LabelerConfig().n_labelers for lab in labelers)
    for row, task, ys, ts in zip(rows, tasks, responses, terminated):
        assert row["prompt"] == task.instruction and row["family"] == task.family and row["seed"] == 4
        assert row["responses"] == [ys[i] for i in row["order"]]
        assert row["terminated"] == [ts[i] for i in row["order"]]
        # The recorded labeler id, seed and index reproduce the ranking.
        assert rank(task, ys, ts, row["labeler"], row["seed"], prompt_index=row["index"]) == row["order"]
    assert 0.68 <= recompute_agreement(rows) <= 0.78
    shifted = make_comparisons(tasks[:5], responses[:5], terminated[:5], seed=4, index_offset=100)
    assert [r["index"] for r in shifted] == list(range(100, 105))


def test_heldout_pair_figures_of_an_oracle_and_of_a_length_counter():
    """The reward model's held-out figures from given scores: an RM that scores gold matches
    the oracle and always prefers the exactly-right response; one that counts characters
    correlates with length only."""
    from rlhfkit.world.judge import judge_task
    from rlhfkit.experiment.comparisons import label_comparisons
    from rlhfkit.experiment.reward_figures import heldout_pair_figures

    rng = random.Random(0)
    tasks = make_split("comparisons", 60, 0)
    responses = [[t.formatted_answer, verbose_answer(t, rng), near_miss(t, rng), near_miss(t, rng) + " " + CHATTER[0]]
                 for t in tasks]
    terminated = [[True] * 4 for _ in tasks]
    rows, _, labeler = label_comparisons(tasks, responses, terminated, seed=0, labeler=LabelerConfig(),
                                         target_agreement=0.73, calibrate=False)
    by_instruction = {t.instruction: t for t in tasks}

    def gold(row):
        task = by_instruction[row["prompt"][-1]["content"]]
        return [judge_task(task, y, e).gold for y, e in zip(row["responses"], row["terminated"])]

    oracle = heldout_pair_figures(rows, [g for row in rows for g in gold(row)], labeler)
    assert oracle["val_accuracy"] == pytest.approx(oracle["oracle_agreement"])
    assert oracle["exact_pairs"] > 100 and oracle["exact_pair_accuracy"] == 1.0
    assert set(oracle["exact_pair_accuracy_per_family"]) <= {t.family for t in tasks}
    assert oracle["score_correlation"]["gold"] == pytest.approx(1.0)
    # on a constrained prompt the first response is in the asked format (so is the wrong answer that ends
    # in "!" when the period was to be left out): gold prefers the one that follows, unless it is wrong
    assert oracle["follows_pairs"] > 50 and oracle["follows_pair_accuracy"] > 0.9
    counter = heldout_pair_figures(rows, [float(len(y)) for row in rows for y in row["responses"]], labeler)
    assert counter["score_correlation"]["length"] == pytest.approx(1.0)
    assert counter["score_correlation"]["gold"] < 0.5
