"""The reasoning world: canonical working, the sloppy demonstrator, the exact check,
pass@k, faithfulness on crafted samples, and a micro run end to end (resumable)."""
import json
import math
import random
from math import comb

import pytest

from rlhfkit.reason.evaluate import pass_at_k, score_samples
from rlhfkit.reason.tasks import (
    Problem,
    Verdict,
    answer_from_steps,
    check,
    sample_problem,
    sloppy_working,
    steps,
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


def test_micro_world_runs_end_to_end_and_resumes(tmp_path):
    from rlhfkit.reason.run import ReasonConfig, run_reason

    cfg = ReasonConfig(output_dir=str(tmp_path / "r"), pretrain_problems=160, pretrain_epochs=4, demonstrations=16,
                       sft_epochs=1, rl_prompts=16, eval_problems=4, eval_samples=4, hidden=32, layers=1, heads=2,
                       rl_episodes=32, rl_batch=16, rl_group_size=4, response_length=12, num_threads=1)
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
    assert report["seconds"]["rl"] > 0
    # the base model learned the worked problems' text: from a uniform guess over the vocabulary
    # (ln of its size, about 5.6 nats a token) to at least a nat below it in 40 steps
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(out / "data" / "init"))
    losses = [json.loads(line)["loss/train"] for line in (out / "base" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and losses[-1] < math.log(vocab) - 1.0
    prompts = {json.loads(line)["prompt"] for line in (out / "data" / "rl_prompts.jsonl").read_text().splitlines()}
    evals = [Problem(**json.loads(line)) for line in (out / "data" / "eval.jsonl").read_text().splitlines()]
    assert not prompts & {p.prompt for p in evals}  # the evaluation is held out
    before = (out / "rl" / ".done").read_text()
    run_reason(cfg)  # resumes: every stage already done, nothing retrained
    assert (out / "rl" / ".done").read_text() == before
