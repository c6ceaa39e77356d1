"""The world's intervals and significance tests (rlhfkit/experiment/intervals.py) on
synthetic seeds x prompts tables whose true mean and differences are known."""
from __future__ import annotations

import math
import random

import pytest

from rlhfkit.experiment.intervals import (holm, kendall_tau, mean_interval, pairwise_table, ratio_interval,
                                          t_quantile, t_two_sided_p)


def test_student_t_matches_tabulated_values():
    # two-sided 95% critical values (any statistics table)
    for df, q in ((1, 12.706), (2, 4.303), (5, 2.571), (10, 2.228), (30, 2.042), (1e9, 1.960)):
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-3)
    assert t_two_sided_p(2.0, 5) == pytest.approx(0.1019, abs=1e-4)
    assert t_two_sided_p(0.0, 7) == pytest.approx(1.0)


def _table(rng, mean, seeds, prompts, seed_sd, prompt_sd, noise_sd, prompt_effects=None):
    prompt_effects = prompt_effects or [rng.gauss(0, prompt_sd) for _ in range(prompts)]
    return [[mean + a + b + rng.gauss(0, noise_sd) for b in prompt_effects]
            for a in [rng.gauss(0, seed_sd) for _ in range(seeds)]]


@pytest.mark.parametrize("seeds,seed_sd", [(1, 0.0), (3, 0.03), (5, 0.02)])
def test_a_95_percent_interval_covers_the_true_mean_about_95_percent_of_the_time(seeds, seed_sd):
    rng = random.Random(seeds)
    covered = 0
    for _ in range(200):
        figure = mean_interval(_table(rng, 0.4, seeds, 150, seed_sd, 0.15, 0.25))
        lo, hi = figure["ci95"]
        covered += lo <= 0.4 <= hi
    assert 0.90 <= covered / 200 <= 0.99


def test_one_seed_is_the_usual_interval_over_prompts():
    rng = random.Random(0)
    values = [rng.random() for _ in range(400)]
    figure = mean_interval([values])
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    assert figure["mean"] == pytest.approx(mean) and figure["seed_std"] is None
    assert figure["ci95"][1] - mean == pytest.approx(t_quantile(0.975, 399) * sd / 20)


def test_seed_spread_widens_the_interval_and_is_reported():
    rng = random.Random(1)
    effects = [rng.gauss(0, 0.1) for _ in range(200)]
    calm = mean_interval(_table(rng, 0.5, 3, 200, 0.0, 0.1, 0.2, effects))
    shaky = mean_interval(_table(rng, 0.5, 3, 200, 0.1, 0.1, 0.2, effects))
    width = lambda f: f["ci95"][1] - f["ci95"][0]
    assert width(shaky) > 2 * width(calm)
    assert shaky["seed_std"] > calm["seed_std"]


def test_prompts_outside_a_figure_are_left_out_and_bounds_clip():
    figure = mean_interval([[1.0, math.nan, 1.0, 0.0], [1.0, 0.0, 1.0, math.nan]], bounds=(0.0, 1.0))
    assert figure["prompts"] == 2 and figure["mean"] == 1.0  # the two prompts every seed has
    assert figure["ci95"] == [1.0, 1.0]
    assert mean_interval([[0.3]])["ci95"] == [None, None]  # one value says nothing about its spread


def test_the_pairwise_table_flags_a_planted_difference_and_not_a_null_one():
    rng = random.Random(2)
    prompts = [rng.gauss(0, 0.2) for _ in range(300)]
    tables = {"a": _table(rng, 0.65, 5, 300, 0.01, 0, 0.3, prompts),
              "b": _table(rng, 0.50, 5, 300, 0.01, 0, 0.3, prompts),  # 15 points below a
              "c": _table(rng, 0.50, 5, 300, 0.01, 0, 0.3, prompts)}  # the same as b
    rows = {(r["a"], r["b"]): r for r in pairwise_table(tables, ["a", "b", "c"])}
    assert rows[("a", "b")]["significant"] and rows[("a", "c")]["significant"]
    assert rows[("a", "b")]["difference"] == pytest.approx(0.15, abs=0.04)
    assert not rows[("b", "c")]["significant"] and rows[("b", "c")]["p_holm"] > 0.05


def test_the_null_is_rejected_about_five_percent_of_the_time():
    rng = random.Random(3)
    rejected = 0
    for _ in range(200):
        prompts = [rng.gauss(0, 0.2) for _ in range(100)]
        a = _table(rng, 0.5, 3, 100, 0.02, 0, 0.3, prompts)
        b = _table(rng, 0.5, 3, 100, 0.02, 0, 0.3, prompts)
        rejected += pairwise_table({"a": a, "b": b}, ["a", "b"])[0]["significant"]
    assert rejected / 200 <= 0.10


def test_holm_steps_down_and_stops_at_the_first_failure():
    out = holm({"x": 0.01, "y": 0.04, "z": 0.03})
    assert out["x"]["significant"] and out["x"]["p_holm"] == pytest.approx(0.03)
    assert not out["z"]["significant"] and not out["y"]["significant"]  # 0.03 > 0.05 / 2
    assert out["y"]["p_holm"] == pytest.approx(0.06)


def test_kendall_tau_counts_agreeing_orders():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    assert math.isnan(kendall_tau([1, 1], [1, 2]))


def test_a_ratio_of_counts_clusters_by_prompt():
    # 50 prompts of 6 pairs: each prompt's pairs all right or all wrong, so the
    # effective sample is 50 prompts, not 300 pairs
    numerators = [6.0 if i % 2 else 0.0 for i in range(50)]
    figure = ratio_interval(numerators, [6.0] * 50)
    assert figure["mean"] == pytest.approx(0.5)
    half = (figure["ci95"][1] - figure["ci95"][0]) / 2
    assert half == pytest.approx(t_quantile(0.975, 49) * math.sqrt(0.25 / 49), rel=1e-6)


def test_model_flops_count_parameters_and_the_share_of_the_peak(tmp_path):
    from rlhfkit.experiment.flops import flops_table, parameters
    from rlhfkit.models.loading import count_parameters
    from rlhfkit.testing import tiny_llama, tiny_tokenizer

    model = tiny_llama(tiny_tokenizer())
    model.save_pretrained(tmp_path)
    # float32 safetensors, tied weights stored once (the header adds a few hundred bytes)
    assert parameters(tmp_path) == pytest.approx(count_parameters(model), rel=0.05)
    table = flops_table({"sft": 6e9, "rm": 0.0}, {"sft": 3.0, "rm": 1.0}, 1e10)
    assert table == {"sft": {"flops": 6e9, "seconds": 3.0, "peak_fraction": pytest.approx(0.2)}}
