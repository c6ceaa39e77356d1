"""The reasoning world: canonical working, the sloppy demonstrator, the exact check,
pass@k, faithfulness on crafted samples, the times tables of the pretraining text, the
RL algorithms' wiring, and micro runs end to end (resumable; several seeds and algorithms)."""
import json
import math
import random
from fractions import Fraction
from itertools import combinations
from math import comb

import pytest

from rlhfkit.reason.evaluate import (
    crossing_k,
    fixed_subset,
    pass_at_k,
    pass_at_k_curve,
    score_samples,
)
from rlhfkit.reason.tasks import (
    Problem,
    Verdict,
    answer_from_steps,
    check,
    sample_problem,
    sloppy_working,
    steps,
    times_table,
    working,
)


def test_canonical_working_of_both_procedures():
    assert working(Problem("add", 347, 586)) == "7+6+0=13\n4+8+1=13\n3+5+1=09\nAnswer: 933"
    assert working(Problem("mul", 347, 6)) == "7*6+0=42\n4*6+4=28\n3*6+2=20\nAnswer: 2082"
    assert working(Problem("add", 999, 1)) == "9+1+0=10\n9+0+1=10\n9+0+1=10\nAnswer: 1000"
    rng = random.Random(0)
    for _ in range(200):
        p = sample_problem(rng)
        assert answer_from_steps(steps(p)) == p.answer
        assert check(p, working(p)) == Verdict(True, True, True)


def test_check_separates_answer_from_working():
    p = Problem("add", 347, 586)
    wrong_step = "7+6+0=13\n4+8+1=14\n3+5+1=09\nAnswer: 933"  # right answer, wrong working
    assert (check(p, wrong_step).answer_right, check(p, wrong_step).working_right) == (True, False)
    miscopied = "7+6+0=13\n4+8+1=13\n3+5+1=09\nAnswer: 943"  # right working, wrong answer
    assert (check(p, miscopied).answer_right, check(p, miscopied).working_right) == (False, True)
    assert not check(p, "Answer: 933\nAnswer: 933").well_formed
    assert not check(p, "7+6+0=13").answer_right


def test_sloppy_demonstrator_slips_at_about_its_rate():
    rng = random.Random(1)
    problems = [sample_problem(rng) for _ in range(2000)]
    assert all(sloppy_working(p, rng, 0.0) == working(p) for p in problems[:200])
    verdicts = [check(p, sloppy_working(p, rng, 0.1)) for p in problems]
    wrong_working = sum(not v.working_right for v in verdicts) / len(verdicts)
    assert 0.2 < wrong_working < 0.45  # 3-4 steps at 10% each
    assert any(v.answer_right and not v.working_right for v in verdicts)
    assert any(v.working_right and not v.answer_right for v in verdicts)


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(16, 4, 1) == pytest.approx(4 / 16)
    assert pass_at_k(16, 4, 2) == pytest.approx(1 - comb(12, 2) / comb(16, 2))
    assert pass_at_k(16, 0, 16) == 0 and pass_at_k(16, 1, 16) == 1 and pass_at_k(4, 3, 2) == 1
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 8)


def test_pass_at_k_matches_brute_force_enumeration():
    # every way of choosing k of n samples, c of them right: the share holding a right one
    for n in range(1, 9):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(combinations(samples, k))
                assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets), abs=1e-12)


def test_pass_at_k_is_exact_at_256_samples():
    # against exact rational arithmetic where the binomials have about 75 digits
    for c, k in ((1, 1), (3, 128), (10, 200), (128, 64), (255, 2), (17, 256)):
        exact = 1 - Fraction(comb(256 - c, k), comb(256, k))
        assert pass_at_k(256, c, k) == pytest.approx(float(exact), rel=1e-12, abs=1e-15)
    curve = pass_at_k_curve([0, 1, 5, 256], 256, list(range(1, 257)))
    rates = list(curve.values())
    assert len(rates) == 256 and rates == sorted(rates)  # never falls with k
    assert rates[0] == pytest.approx((0 + 1 + 5 + 256) / 256 / 4) and rates[-1] == pytest.approx(3 / 4)


def test_crossing_k_is_where_base_or_sft_reaches_rl():
    rl = {"1": 0.6, "2": 0.7, "4": 0.75, "8": 0.8}
    base = {"1": 0.3, "2": 0.5, "4": 0.7, "8": 0.85}
    sft = {"1": 0.4, "2": 0.72, "4": 0.74, "8": 0.79}
    assert crossing_k({"base": base, "sft": sft, "rl": rl}) == 2  # SFT's curve reaches RL's at k = 2
    assert crossing_k({"base": base, "rl": rl}) == 8
    assert crossing_k({"base": {k: v - 0.5 for k, v in base.items()}, "rl": rl}) is None
    saturated = {"1": 0.9, "2": 1.0, "4": 1.0}  # both at 1 from k = 2: they meet, neither overtakes
    assert crossing_k({"base": {"1": 0.5, "2": 1.0, "4": 1.0}, "rl": saturated}) is None


def test_fixed_subset_takes_the_first_of_each_family():
    problems = [Problem("add", 100 + i, 100) if i % 3 else Problem("mul", 100 + i, 2) for i in range(12)]
    subset = fixed_subset(problems, 2)
    assert [(p.op, p.a) for p in subset] == [("add", 101), ("add", 102), ("mul", 100), ("mul", 103)]


def test_score_samples_counts_faithfulness():
    p, q = Problem("add", 347, 586), Problem("mul", 347, 6)
    right = working(p)
    right_answer_bad_work = "7+6+0=13\n4+8+1=14\n3+5+1=09\nAnswer: 933"
    bad_answer_right_work = "7+6+0=13\n4+8+1=13\n3+5+1=09\nAnswer: 943"
    junk = "Answer: 7"
    result = score_samples([p, q], [[right, right_answer_bad_work, bad_answer_right_work, junk],
                                    [working(q), junk, junk, junk]], ks=(1, 2, 4, 8))
    assert result["pass_at_1"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert result["pass_at_k"]["4"] == 1.0 and "8" not in result["pass_at_k"]
    assert result["pass_at_1_by_op"] == {"add": 0.5, "mul": 0.25}
    assert result["right_answer_wrong_working"] == pytest.approx(1 / 3)  # 3 right answers, 1 on wrong working
    assert result["wrong_answer_right_working"] == pytest.approx(1 / 5)  # 5 wrong answers, 1 on right working


def test_rl_mix_repeats_multiplications_and_changes_nothing_else(tmp_path):
    from rlhfkit.reason.run import ReasonConfig, make_data

    def data(share):
        cfg = ReasonConfig(pretrain_problems=300, demonstrations=40, rl_prompts=200, eval_problems=20,
                           rl_mul_share=share, hidden=16, layers=1, heads=2)
        paths = make_data(cfg, tmp_path / str(share))
        return {k: [json.loads(line) for line in open(paths[k])] for k in ("pretrain", "sft", "rl_prompts", "eval")}

    drawn, mixed = data(0.0), data(0.75)
    for k in ("pretrain", "sft", "eval"):
        assert drawn[k] == mixed[k]  # only the RL prompts change: same texts, same models
    assert len(mixed["rl_prompts"]) == 200
    assert sum("*" in r["prompt"] for r in mixed["rl_prompts"]) == 150
    drawn_rl = {r["prompt"]: r["answer"] for r in drawn["rl_prompts"]}
    assert all(drawn_rl[r["prompt"]] == r["answer"] for r in mixed["rl_prompts"])  # drawn ones, answers kept
    assert {r["prompt"] for r in mixed["rl_prompts"] if "*" in r["prompt"]} == {p for p in drawn_rl if "*" in p}


def test_times_tables_are_in_the_pretraining_text_and_change_nothing_else(tmp_path):
    from rlhfkit.reason.run import ReasonConfig, make_data

    assert times_table(7).split("\n")[:3] == ["0*7+0=00", "1*7+0=07", "2*7+0=14"]
    assert times_table(7, carry=5).endswith("9*7+5=68")

    def texts(tables):
        cfg = ReasonConfig(pretrain_problems=300, pretrain_times_tables=tables, demonstrations=40, rl_prompts=200,
                           eval_problems=20, hidden=16, layers=1, heads=2)
        paths = make_data(cfg, tmp_path / str(tables))
        return [json.loads(line)["text"] for line in open(paths["pretrain"])], open(paths["sft"]).read()

    with_tables, demos = texts(144)
    without, demos_without = texts(0)
    assert with_tables[:300] == without and demos == demos_without  # the tables draw nothing from the RNG
    facts = {line for text in with_tables[300:] for line in text.split("\n")}
    # every step a multiplication can need: digit 0-9 times 2-9 plus a carry 0-8, two result digits
    assert facts == {f"{d}*{m}+{c}={d * m + c:02d}" for d in range(10) for m in range(2, 10) for c in range(9)}
    assert len(with_tables) == 300 + 144


@pytest.mark.parametrize("algo", ["grpo", "dr_grpo", "dapo", "gspo", "rloo", "ppo"])
def test_each_algo_makes_a_valid_rl_stage(tmp_path, algo):
    from rlhfkit.reason.run import RL_ALGOS, ReasonConfig, data_paths, stage_configs

    cfg = ReasonConfig(output_dir=str(tmp_path))
    _, _, rl = stage_configs(cfg, tmp_path, data_paths(tmp_path / "data"), algo, f"rl_{algo}")
    for name, value in RL_ALGOS[algo][1].items():
        assert getattr(rl, name) == value
    assert rl.output_dir == str(tmp_path / f"rl_{algo}")
    sizes = rl.sizes(1)  # the trainer's own checks accept the combination
    assert sizes.ppo_steps == cfg.rl_episodes // cfg.rl_batch
    expected = {"grpo": ("grpo", "grpo", 0.0, False), "dr_grpo": ("dr_grpo", "dr_grpo", 0.0, False),
                "dapo": ("grpo", "dapo", 0.28, True), "gspo": ("grpo", "gspo", 4e-4, False),
                "rloo": ("rloo", "ppo", 0.0, False), "ppo": ("gae", "ppo", 0.0, False)}[algo]
    assert (rl.advantage_estimator, rl.loss_type, rl.clip_range_high, rl.dynamic_sampling) == expected
    assert rl.samples_per_prompt == (1 if algo == "ppo" else cfg.rl_group_size)


def test_unknown_algo_is_refused():
    from rlhfkit.reason.run import parse_algos

    assert parse_algos("grpo, dr_grpo") == ["grpo", "dr_grpo"]
    with pytest.raises(ValueError, match="grpo2"):
        parse_algos("grpo,grpo2")


def test_sweep_intervals_and_the_dr_grpo_check():
    from rlhfkit.reason.sweep import sweep_summary, t_interval

    interval = t_interval([0.5, 0.6, 0.7])
    assert interval["mean"] == pytest.approx(0.6)
    assert interval["ci95"][1] - 0.6 == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)  # t_0.975,2
    assert t_interval([0.5])["ci95"] == [None, None]

    def report(pass1, wrong_lengths):
        model = {"pass_at_1": pass1, "pass_at_k": {"16": 0.9}, "pass_at_1_by_op": {"add": 0.9, "mul": 0.5},
                 "right_answer_wrong_working": 0.01, "wrong_answer_right_working": 0.02}
        curve = [{"step": 4 * (i + 1), "length_right": 35.0, "length_wrong": w, "accuracy": 0.5,
                  "response_length": 35.0} for i, w in enumerate(wrong_lengths)]
        return {"models": {"base": model, "sft": model, "rl": model}, "gain_pass_at_1": 0.1,
                "rl_training": curve, "seconds": {"rl": 10.0}}

    reports = {("grpo", 0): report(0.6, [30, 30, 30, 40]), ("grpo", 1): report(0.7, [30, 30, 30, 44]),
               ("dr_grpo", 0): report(0.6, [30, 30, 30, 31]), ("dr_grpo", 1): report(0.6, [30, 30, 30, 33])}
    summary = sweep_summary(reports, ["grpo", "dr_grpo"], [0, 1])
    assert summary["algos"]["grpo"]["pass_at_1"]["mean"] == pytest.approx(0.65)
    assert summary["algos"]["grpo"]["length_wrong_end"]["mean"] == pytest.approx(42)  # the last quarter: one step
    assert summary["algos"]["grpo"]["length_wrong_change"]["mean"] == pytest.approx(12)
    assert summary["dr_grpo_check"]["grpo_minus_dr_grpo_length_wrong_end"]["mean"] == pytest.approx(10)


def test_micro_world_runs_end_to_end_and_resumes(tmp_path):
    from rlhfkit.reason.run import ReasonConfig, run_reason

    cfg = ReasonConfig(output_dir=str(tmp_path / "r"), pretrain_problems=160, pretrain_epochs=4, demonstrations=16,
                       sft_epochs=1, rl_prompts=16, eval_problems=4, eval_samples=4, hidden=32, layers=1, heads=2,
                       rl_episodes=32, rl_batch=16, rl_group_size=4, response_length=12, num_threads=1,
                       pretrain_times_tables=16, passk_per_family=2, passk_samples=8)
    out = run_reason(cfg)
    report = json.loads((out / "report.json").read_text())
    for name in ("sft", "rl"):
        m = report["models"][name]
        assert set(m["pass_at_k"]) == {"1", "2", "4"}
        for key in ("pass_at_1", "right_answer_wrong_working", "wrong_answer_right_working", "greedy_accuracy"):
            assert 0 <= m[key] <= 1
        rates = [m["pass_at_k"][k] for k in ("1", "2", "4")]
        assert rates[0] == pytest.approx(m["pass_at_1"]) and rates == sorted(rates)  # pass@k never falls with k
        assert m["seconds"] > 0 and m["eval_seconds"] > 0
    assert report["gain_pass_at_1"] == pytest.approx(report["models"]["rl"]["pass_at_1"]
                                                     - report["models"]["sft"]["pass_at_1"])
    assert len(report["rl_training"]) == 2 and "response_length" in report["rl_training"][0]
    for row in report["rl_training"]:  # the right and the wrong responses' lengths average to the batch's
        if row["length_right"] is None:  # no right response in the batch: the wrong ones are all of it
            assert row["length_wrong"] == pytest.approx(row["response_length"], rel=1e-5)
        else:
            assert min(row["length_right"], row["length_wrong"]) - 1e-4 <= row["response_length"]
            assert row["response_length"] <= max(row["length_right"], row["length_wrong"]) + 1e-4
    for name in ("base", "sft", "rl"):  # pass@k for every k up to the samples, never falling with k
        rates = list(report["pass_at_k"][name].values())
        assert list(report["pass_at_k"][name]) == [str(k) for k in range(1, 9)] and rates == sorted(rates)
    assert set(report["pass_at_k_by_family"]) <= {"add", "mul"} and sum(report["pass_at_k_problems"].values()) <= 4
    assert report["crossing_k"] is None or 1 <= report["crossing_k"] <= 8
    assert (out / "pass_at_k.png").stat().st_size > 0 and "pass_at_k.png" in (out / "report.md").read_text()
    assert report["seconds"]["rl"] > 0
    # the base model learned the worked problems' text: from a uniform guess over the vocabulary
    # (ln of its size, about 5.6 nats a token) to at least a nat below it in 44 steps
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(out / "data" / "init"))
    losses = [json.loads(line)["loss/train"] for line in (out / "base" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and losses[-1] < math.log(vocab) - 1.0  # logged at steps 20, 40, 44
    prompts = {json.loads(line)["prompt"] for line in (out / "data" / "rl_prompts.jsonl").read_text().splitlines()}
    evals = [Problem(**json.loads(line)) for line in (out / "data" / "eval.jsonl").read_text().splitlines()]
    assert not prompts & {p.prompt for p in evals}  # the evaluation is held out
    before = (out / "rl" / ".done").read_text()
    run_reason(cfg)  # resumes: every stage already done, nothing retrained
    assert (out / "rl" / ".done").read_text() == before


def test_micro_sweep_over_algos_and_seeds(tmp_path):
    from rlhfkit.reason.run import ReasonConfig, run_reason

    cfg = ReasonConfig(output_dir=str(tmp_path / "s"), pretrain_problems=80, pretrain_epochs=1, demonstrations=16,
                       sft_epochs=1, rl_prompts=16, eval_problems=4, eval_samples=4, hidden=16, layers=1, heads=2,
                       rl_episodes=32, rl_batch=16, rl_group_size=4, response_length=12, num_threads=1,
                       pretrain_times_tables=8, passk_per_family=1, passk_samples=4,
                       algo="grpo,dr_grpo,ppo", seeds=[0, 1])
    out = run_reason(cfg)
    for seed in (0, 1):
        for algo in ("grpo", "dr_grpo", "ppo"):  # each trained its own RL stage
            report = json.loads((out / f"seed{seed}" / f"report_{algo}.json").read_text())
            assert report["algo"] == algo and (out / f"seed{seed}" / f"rl_{algo}" / ".done").exists()
    # the two seeds drew different problems: their evaluation sets differ
    assert (out / "seed0" / "data" / "eval.jsonl").read_text() != (out / "seed1" / "data" / "eval.jsonl").read_text()
    summary = json.loads((out / "sweep.json").read_text())
    for algo in ("grpo", "dr_grpo", "ppo"):
        figure = summary["algos"][algo]["pass_at_1"]
        assert figure["seeds"] == 2 and figure["ci95"][0] <= figure["mean"] <= figure["ci95"][1]
        runs = [summary["runs"][f"{algo}/seed{s}"]["pass_at_1"] for s in (0, 1)]
        assert figure["mean"] == pytest.approx(sum(runs) / 2)
    assert "dr_grpo_check" in summary
    assert (out / "sweep_length.png").stat().st_size > 0 and (out / "sweep_reward.png").stat().st_size > 0
    assert all(f"| {algo} |" in (out / "sweep.md").read_text() for algo in summary["algos"])
    # the settings that tell them apart reached the trainer (its stage records them)
    import yaml

    def rl_options(algo):
        return yaml.safe_load((out / "seed0" / f"rl_{algo}" / "config.yaml").read_text())

    assert rl_options("dr_grpo")["loss_type"] == "dr_grpo" and rl_options("ppo")["advantage_estimator"] == "gae"
    assert (out / "seed0" / "rl_ppo" / "value_model").is_dir()  # PPO trained a critic; the others none
    assert not (out / "seed0" / "rl_grpo" / "value_model").exists()
