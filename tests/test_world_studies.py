"""`rlhfkit world study`: Gao et al.'s forms and the best-of-n estimator on known data,
the labelers' noise knob, and every study at micro size from a tiny finished run
(the stand-in models of tests/test_world_run.py): what each study holds out, adds or
reuses is what it says, its figures are computed from the values it stored, and a
rerun resumes to the same report."""
from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import pytest

from rlhfkit.experiment.run import run_world
from rlhfkit.experiment.studies import StudyConfig, run_study
from rlhfkit.experiment.studies.fits import best_of_n_expectation, fit_form, form_value, peak_d
from rlhfkit.experiment.studies.overoptimisation import step_windows
from rlhfkit.io import read_jsonl
from rlhfkit.world.labelers import LabelerConfig, labeler_agreement, proxy_samples
from rlhfkit.world.splits import SHARED_FAMILIES
from rlhfkit.world.tasks import parse_instruction


# ----------------------------------------------------------------------------- pure pieces

@pytest.mark.parametrize("form, a, b", [("bon", 0.30, 0.08), ("rl", 0.25, 0.10)])
def test_gao_forms_recover_known_coefficients(form, a, b):
    rng = random.Random(0)
    d = [0.1 * i for i in range(1, 40)]
    g = [x * x if form == "bon" else x * math.log(x) for x in d]
    exact = fit_form(d, [a * x - b * y for x, y in zip(d, g)], form)
    assert exact["a"] == pytest.approx(a, abs=1e-9) and exact["b"] == pytest.approx(b, abs=1e-9)
    assert exact["r2"] == pytest.approx(1.0)
    assert peak_d(exact) == pytest.approx(a / (2 * b) if form == "bon" else math.exp(a / b - 1))
    noisy = fit_form(d, [a * x - b * y + rng.gauss(0, 0.01) for x, y in zip(d, g)], form)
    assert noisy["a"] == pytest.approx(a, abs=0.02) and noisy["b"] == pytest.approx(b, abs=0.02)
    assert 0.9 < noisy["r2"] < 1.0
    assert form_value(exact, 0.0) == 0.0 and form_value(exact, 1.5) == pytest.approx(a * 1.5 - b * g[14])


def test_best_of_n_expectation_is_the_mean_over_every_subset():
    rng = random.Random(1)
    proxy = [rng.random() for _ in range(7)]
    gold = [rng.random() for _ in range(7)]
    for n in range(1, 8):
        subsets = list(itertools.combinations(range(7), n))
        brute = sum(gold[max(s, key=lambda j: proxy[j])] for s in subsets) / len(subsets)
        assert best_of_n_expectation(proxy, gold, n) == pytest.approx(brute)
    assert best_of_n_expectation(proxy, gold, 1) == pytest.approx(sum(gold) / 7)
    assert best_of_n_expectation(proxy, gold, 7) == gold[max(range(7), key=lambda j: proxy[j])]


@pytest.mark.parametrize("steps, points", [(32, 8), (2, 8), (5, 8), (33, 8), (10, 3)])
def test_step_windows_keep_the_origin_and_split_the_rest_evenly_in_order(steps, points):
    windows = step_windows(steps, points)
    assert windows[0] == range(0, 1)  # the SFT policy's own rollouts alone
    later = [i for w in windows[1:] for i in w]
    assert later == list(range(1, steps))  # every later step once, in order
    sizes = [len(w) for w in windows[1:]]
    assert len(sizes) == min(points, steps - 1) and max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_the_noise_knob_moves_the_labelers_agreement_monotonically():
    samples = proxy_samples(n_tasks=200, k=4, seed=0)
    agreements = [labeler_agreement(samples, LabelerConfig(noise_std=noise), seed=0)
                  for noise in (0.02, 0.1, 0.3, 1.0)]
    assert agreements == sorted(agreements, reverse=True)
    assert agreements[0] > 0.85 and agreements[-1] < 0.7


# ----------------------------------------------------------------------------- micro studies

@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    from test_world_seeds import tiny_config

    from test_world_run import make_standins

    tmp = tmp_path_factory.mktemp("study")
    return run_world(tiny_config(tmp / "run", make_standins(tmp / "models"), algo=["ppo"]))


def study(run: Path, name: str, **options) -> dict:
    defaults = dict(seeds=[0, 1], eval_prompts=24, num_threads=1)
    out = run_study(StudyConfig(study=name, run_dir=str(run), **{**defaults, **options}))
    assert out == run / "studies" / name and (out / "report.md").exists()
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow  # a micro world run and each study's stages: minutes
def test_overoptimisation_fits_both_forms_for_two_reward_models(micro_run):
    report = study(micro_run, "overoptimisation", bon_n=[1, 2, 4, 8], bon_prompts=6)
    assert set(report["bon"]) == set(report["rl"]) == {"sft", "sft_large"}
    assert report["reward_models"]["sft"] == str(micro_run / "rm")  # the run's own RM is reused
    for name, curves in report["bon"].items():
        points = curves["points"]
        assert points[0]["gold_gain"]["mean"] == pytest.approx(0.0, abs=1e-12) and points[0]["d"] == 0.0  # SFT itself
        proxy = [p["proxy_gain"]["mean"] for p in points]
        # picking by the RM can only raise the expected RM score of the pick
        assert all(b >= a - 1e-12 for a, b in zip(proxy, proxy[1:])) and proxy[-1] > 0
        assert points[-1]["kl"] == pytest.approx(math.log(8) - 7 / 8)
        assert points[-1]["gold_gain"]["seeds"] == 2 and curves["fit_gold"]["form"] == "d (a - b d)"
    for curves in report["rl"].values():
        assert curves["points"][0]["gold_gain"]["mean"] == pytest.approx(0.0, abs=1e-12) and len(curves["points"]) == 2  # 64 / 32 steps
        assert curves["fit_gold"]["form"] == "d (a - b log d)"
    # the run's own PPO is seed 0's policy against the run's RM: not trained again
    assert not (micro_run / "studies" / "overoptimisation" / "ppo_sft" / "seed_0").exists()
    assert (micro_run / "studies" / "overoptimisation" / "ppo_sft_large" / "seed_0" / ".done").exists()


@pytest.mark.slow  # a micro world run and each study's stages: minutes
def test_labeler_noise_relabels_the_same_samples_at_each_agreement(micro_run):
    report = study(micro_run, "labeler_noise", agreements=[0.65, 0.9], seeds=[0])
    low, high = report["points"]
    assert low["noise_std"] > high["noise_std"] and low["labeler_agreement"] < high["labeler_agreement"]
    assert high["labeler_agreement"] == pytest.approx(0.9, abs=0.03)
    out = micro_run / "studies" / "labeler_noise"
    a, b = (read_jsonl(out / f"agreement_{x:g}" / "comparisons.jsonl") for x in (0.65, 0.9))
    run_rows = read_jsonl(micro_run / "comparisons" / "comparisons.jsonl")
    assert [r["index"] for r in a] == [r["index"] for r in b] == [r["index"] for r in run_rows]  # count fixed
    assert [sorted(r["responses"]) for r in a] == [sorted(r["responses"]) for r in b]  # same samples, new ranks
    accuracy = json.loads((out / "agreement_0.9" / "seed_0" / "rm_accuracy.json").read_text())
    finite = [v for v in accuracy if math.isfinite(v)]
    assert high["rm_accuracy_vs_gold"]["mean"] == pytest.approx(sum(finite) / len(finite))


@pytest.mark.slow  # a micro world run and each study's stages: minutes
def test_data_adds_new_prompts_beyond_the_run_disjoint_from_its_own(micro_run):
    report = study(micro_run, "data", comparison_counts=[12, 0, 70], seeds=[0])
    train = read_jsonl(micro_run / "comparisons" / "comparisons.jsonl")
    counts = [p["rankings"] for p in report["points"]]
    assert counts[0] == 12 and counts[1] == len(train) and counts[2] > len(train)
    extra = read_jsonl(micro_run / "studies" / "data" / "extra_comparisons.jsonl")
    used = {r["instruction"] for name in ("comparison_prompts", "eval_prompts", "ppo_prompts")
            for r in read_jsonl(micro_run / "data" / f"{name}.jsonl")}
    # disjoint from every prompt of the run, but for the family every split shares by design ("Name a fruit.")
    assert extra and not {r["prompt"][-1]["content"] for r in extra if r["family"] not in SHARED_FAMILIES} & used
    assert [p["beyond_run"] for p in report["points"]] == [False, False, True]


@pytest.mark.slow  # a micro world run and each study's stages: minutes
def test_shift_holds_the_family_and_the_constraint_out_of_the_comparisons(micro_run):
    report = study(micro_run, "shift", shift_family="add", shift_constraint="caps", seeds=[0])
    out = micro_run / "studies" / "shift"
    for kind, value in (("family", "add"), ("constraint", "caps")):
        trained_on = read_jsonl(out / f"{kind}_{value}" / "seed_0" / "rm.jsonl")
        tasks = [parse_instruction(r["prompt"][-1]["content"]) for r in trained_on]
        assert tasks and all((t.family if kind == "family" else t.constraint) != value for t in tasks)
    family, constraint = report["points"]
    assert family["held_out"] == "add" and not family["comparisons_hold_it"] and family["removed_rankings"] > 0
    assert family["unseen_rankings_measured"] > 0 and constraint["seen_rankings_measured"] > 0
    assert family["gain_unseen"]["mean"] is not None and family["reference"]["seeds"] == [0]


@pytest.mark.slow  # a micro world run and each study's stages: minutes
def test_kl_puts_the_runs_beta_on_the_curve_and_a_rerun_resumes(micro_run, capsys):
    options = dict(betas=[0.0, 0.05], kl_targets=[2.0], seeds=[0])
    report = study(micro_run, "kl", **options)
    fixed = [p for p in report["points"] if p["kind"] == "fixed"]
    assert [p["run_default"] for p in fixed] == [False, True] and report["run_beta"] == 0.05
    assert not (micro_run / "studies" / "kl" / "beta_0.05" / "seed_0").exists()  # the run's PPO, reused
    adaptive = micro_run / "studies" / "kl" / "target_2" / "seed_0" / "config.yaml"
    assert "adaptive_kl: true" in adaptive.read_text()
    for p in report["points"]:
        assert p["kl"]["seeds"] == 1 and p["gold"]["ci95"][0] <= p["gold"]["mean"] <= p["gold"]["ci95"][1]
    capsys.readouterr()
    again = study(micro_run, "kl", **options)
    assert " -> " not in capsys.readouterr().out  # nothing trained or evaluated again
    assert again == report


@pytest.mark.slow  # a micro world run and each study's stages: minutes
def test_forgetting_measures_the_tax_against_base_small(micro_run):
    report = study(micro_run, "forgetting", ptx_coefs=[1.0], seeds=[0], skill_prompts=6)
    models = {r["model"]: r for r in report["models"]}
    assert set(models) == {"base_small", "sft", "ppo", "ppo_ptx_1"}
    base, sft = models["base_small"]["webtext_loss"]["mean"], models["sft"]["webtext_loss"]["mean"]
    assert report["alignment_tax"]["sft"] == pytest.approx(sft - base)
    assert "ptx_coef: 1.0" in (micro_run / "studies" / "forgetting" / "ppo_ptx_1" / "seed_0" / "config.yaml").read_text()
    assert all(0.0 <= r["skill"]["mean"] <= 1.0 for r in report["models"])
    assert models["sft"]["kl"]["mean"] == 0.0


def test_the_study_is_named_positionally_and_checked(capsys, tmp_path):
    from rlhfkit.cli import main

    with pytest.raises(SystemExit) as info:
        main(["world", "study", "reward_hacking", "--run_dir", str(tmp_path)])
    assert info.value.code == 2 and "choose one of overoptimisation" in capsys.readouterr().err
    assert main(["world", "study", "kl", "--run_dir", str(tmp_path)]) == 1  # no finished run there
    assert "is not finished" in capsys.readouterr().err
