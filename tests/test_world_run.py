"""The world run end to end at micro size (configs/world-micro.yaml) on tiny
stand-in base models: report.json has every key, SFT beats base-small on gold,
the reward model beats chance on held-out pairs, and re-running resumes (every
stage skipped) with the same report."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlhfkit.config import from_dict, load_yaml
from rlhfkit.experiment.report import FIGURE_KEYS, RM_KEYS
from rlhfkit.experiment.options import RunConfig
from rlhfkit.experiment.run import run_world
from rlhfkit.io import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("data", "sft", "comparisons", "rm", "comparisons_ai", "rm_ai", "ppo_ai", "ppo", "rloo", "dpo", "orpo", "ppo_gold", "eval/sft",
          "eval/base_small", "eval/base_large", "eval/ppo", "eval/rloo", "eval/dpo", "eval/orpo", "eval/ppo_gold",
          "eval/bon", "eval/ppo_ai")
METHODS = ("ppo", "ppo_ai", "ppo_ai_direct", "rloo", "dpo", "orpo", "ppo_gold", "bon4", "bon16")
# every method against SFT (T = 1, greedy, best against best, T = 1 against SFT's best) and base-large
WIN_RATES = ("sft_vs_base_small", "sft_vs_base_small_greedy", "sft_vs_base_large", "base_small_vs_base_large",
             "ppo_gold_vs_ppo",
             *[f"{m}_{k}" for m in METHODS for k in ("vs_base_large", "vs_sft", "vs_sft_best_temperature",
                                                     "best_vs_sft_best", "vs_sft_greedy")
               if not (m.startswith("bon") and k == "vs_sft_greedy")])  # best-of-n has no greedy decoding


def make_standins(directory: Path) -> dict[str, str]:
    """Random-init Llama stand-ins for base-small / base-large with a 512-token BPE
    tokenizer trained on web text (the real ones come from `rlhfkit world pretrain`)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhfkit.models.tokenizer import train_bpe_tokenizer
    from rlhfkit.world.webtext import make_webtext

    tok = train_bpe_tokenizer(make_webtext(300, seed=5), vocab_size=512)
    paths = {}
    for name, hidden in (("base-small", 64), ("base-large", 96)):
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                          tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                          bos_token_id=None)
        LlamaForCausalLM(cfg).save_pretrained(directory / name)
        tok.save_pretrained(directory / name)
        paths[name] = str(directory / name)
    return paths


def micro_config(tmp: Path, models: dict[str, str]) -> RunConfig:
    data = load_yaml(ROOT / "configs" / "world-micro.yaml")
    data.update(output_dir=str(tmp / "run"), base_small=models["base-small"], base_large=models["base-large"])
    return from_dict(RunConfig, data)


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("world")
    cfg = micro_config(tmp, make_standins(tmp / "models"))
    out = run_world(cfg)
    return cfg, out


def test_report_has_every_key(micro_run):
    _, out = micro_run
    report = json.loads((out / "report.json").read_text())
    assert set(report) == {"world_version", "seeds", "seed_scope", "models", "win_rates", "method_table", "pairwise",
                           "kendall_tau", "likert_ratio_vs_base_large", "paper_likert_ratio", "training",
                           "reward_model", "eval", "seconds", "workers", "flops", "per_seed", "ai_labeler"}
    assert report["world_version"] == 2 and report["seeds"] == [0] and set(report["per_seed"]) == {"0"}
    assert set(report["models"]) == {"base_small", "base_large", "sft", *METHODS}
    for name, figures in report["models"].items():
        assert set(figures) == {*FIGURE_KEYS, "evaluations"}, name
        gold = figures["gold"]
        assert set(gold) == {"mean", "ci95", "seed_std"} and gold["seed_std"] is None  # one seed
        assert figures["params"] > 0 and gold["ci95"][0] <= gold["mean"] <= gold["ci95"][1]
        assert 0 <= gold["ci95"][0] and gold["ci95"][1] <= 1
        assert figures["likert"]["mean"] == pytest.approx(1 + 6 * gold["mean"])
        assert set(figures["per_family"]) == {"add", "compare", "count", "reverse", "sort", "repeat", "name", "greet"}
        assert set(figures["per_constraint"]) == {"none", "caps", "brackets", "prefix", "no_period"}
        assert 0 <= figures["follows_constrained"]["mean"] <= 1 and 0 <= figures["follows"]["mean"] <= 1
        assert all(t in (0.5, 0.7, 1.0) for t in figures["best_temperature"])
        assert figures["webtext_loss"]["mean"] > 0
        # the per-seed report keeps today's plain numbers
        plain = report["per_seed"]["0"]["models"][name]
        assert plain["gold"] == pytest.approx(gold["mean"]) and plain["exact"] == pytest.approx(figures["exact"]["mean"])
    # the method table: SFT and each method, sorted by mean win rate against SFT, every row filled
    table = report["method_table"]
    assert sorted(r["method"] for r in table) == sorted(["sft", "bon4", "bon16", "ppo", "ppo_ai", "ppo_ai_direct", "rloo", "dpo", "orpo",
                                                         "ppo_gold"])
    wins = [r["vs_sft"]["mean"] for r in table]
    assert wins == sorted(wins, reverse=True)
    for row in table:
        assert all(row[k]["mean"] is not None for k in ("gold", "follows_constrained", "exact", "kl_to_sft", "vs_sft",
                                                        "best_vs_sft_best")), row
        assert row["vs_sft_greedy"] is not None or row["method"].startswith("bon")
    assert [r["method"] for r in table if r["oracle"]] == ["ppo_gold"]
    # every pair of the table's methods tested once, Holm-corrected
    assert len(report["pairwise"]) == len(table) * (len(table) - 1) // 2
    assert all(0 <= r["p"] <= r["p_holm"] <= 1 for r in report["pairwise"])
    assert report["kendall_tau"] == {}  # one seed: no order to compare
    # --feedback ai: the AI labeler measured on the held-out pairs, its RM and PPO beside RLHF's
    ai = report["ai_labeler"]
    assert 0 <= ai["agreement_gold"] <= 1 and 0 <= ai["agreement_labeler"] <= 1 and ai["forward_passes"] > 0
    assert ai["reasoning"] and ai["review_tokens"] > 0 and len(ai["principles"]) == 5  # the world's constitution
    assert 0 <= ai["format_preference"] <= 1 and ai["format_pairs"] > 0
    assert set(ai["agreement_gold_by_constraint"]) <= {"plain", "caps", "brackets", "prefix", "no_period"}
    assert [c["name"] for c in ai["configurations"]] == ["AI labeler", "without reasoning", "without principles",
                                                         "base-small, direct", "base-large, direct"]
    assert load_yaml(out / "ppo_ai" / "config.yaml")["reward_model"] == str(out / "rm_ai")
    # direct RLAIF: no reward model, the judge's preference over an SFT reference, scaled like the RM
    direct = load_yaml(out / "ppo_ai_direct" / "config.yaml")
    assert direct["reward_model"] == "" and direct["ai_judge"] == str(out.parent / "models" / "base-large")
    scale = json.loads((out / "references_ai" / "scale.json").read_text())
    assert direct["reward_weights"]["ai_judge"] == pytest.approx(1 / scale["std"])
    refs = read_jsonl(out / "references_ai" / "ppo_prompts.jsonl")
    assert len(refs) == 128 and all(isinstance(r["reference"], str) for r in refs)
    bon = {n: report["models"][f"bon{n}"]["kl_to_sft"]["mean"] for n in (4, 16)}
    assert bon[4] == pytest.approx(math.log(4) - 3 / 4) and bon[16] > bon[4]
    assert report["likert_ratio_vs_base_large"]["base_large"] == pytest.approx(1.0)
    assert set(report["training"]) == {"ppo", "ppo_ai", "ppo_ai_direct", "rloo", "ppo_gold"}
    assert report["training"]["ppo"]["steps"] == 4
    assert "proxy_first" in report["training"]["ppo"] and "proxy_first" not in report["training"]["ppo_gold"]
    assert report["models"]["sft"]["kl_to_sft"]["mean"] == 0.0
    assert report["models"]["ppo"]["kl_to_sft"]["mean"] > -0.5  # a Monte-Carlo KL: about zero or positive
    assert set(report["win_rates"]) == set(WIN_RATES)
    assert all(0 <= v["ci95"][0] <= v["mean"] <= v["ci95"][1] <= 1 for v in report["win_rates"].values())
    rm = report["reward_model"]
    assert set(rm) == set(RM_KEYS) | {"reward_models"}
    assert rm["val_accuracy"]["ci95"][0] < rm["val_accuracy"]["mean"] < rm["val_accuracy"]["ci95"][1]
    assert report["eval"] == {"prompts": 128, "validation_prompts": 32, "temperature": 1.0, "seed": 0, "seeds": [0]}
    assert {"data", "sft", "comparisons", "rm", "ppo", "rloo", "dpo", "orpo", "ppo_gold",
            "comparisons_ai", "rm_ai", "ppo_ai", "eval"} <= set(report["seconds"])
    for png in ("likert.png", "training.png", "overoptimisation.png", "frontier.png"):
        assert (out / png).stat().st_size > 0
    markdown = (out / "report.md").read_text()
    assert "| model | size (params) | Likert" in markdown and "One seed (0)" in markdown
    assert "| DPO |" in markdown and "| PPO (RLHF) |" in markdown  # the method comparison table
    assert "| best-of-16 (RM) |" in markdown and "| PPO on the gold judge (oracle, upper bound) |" in markdown
    assert "Per constraint (follows / gold" in markdown and "| A | B | A - B (points)" in markdown
    assert "| RLOO (no critic) |" in markdown and "- RLOO / GRPO: the PPO settings above with 4" in markdown
    assert (out / "ppo" / "value_model").is_dir() and not (out / "rloo" / "value_model").exists()
    rloo = [json.loads(line) for line in (out / "rloo" / "metrics.jsonl").read_text().splitlines()]
    assert rloo[-1]["episodes"] == 128 and "loss/value" not in rloo[-1]
    assert rm["reward_form"] == "mean_logprob"  # the world's default reward model
    # the reward model starts from the SFT policy (InstructGPT's RM started from an SFT model)
    assert rm["init"] == "sft"
    assert "- Reward model: the SFT policy" in markdown
    assert load_yaml(out / "rm" / "config.yaml")["model"] == str(out / "sft")


def test_sft_beats_base_small_and_rm_beats_chance(micro_run):
    _, out = micro_run
    report = json.loads((out / "report.json").read_text())
    assert report["models"]["sft"]["gold"]["mean"] > report["models"]["base_small"]["gold"]["mean"]
    assert report["win_rates"]["sft_vs_base_small"]["mean"] > 0.5
    assert report["reward_model"]["val_accuracy"]["mean"] > 0.55


def test_orpo_learns_from_base_small_in_one_stage(micro_run):
    """ORPO starts from base-small (no SFT stage) on the comparisons plus labeled
    (demonstration, base-small sample) pairs, and must learn the demonstrations."""
    cfg, out = micro_run
    run = load_yaml(out / "orpo" / "config.yaml")
    assert run["model"] == cfg.base_small and run["loss"] == "orpo"
    figures = json.loads((out / "orpo_data" / "figures.json").read_text())
    assert figures["demonstration_pairs"] > 0.9 * cfg.demonstrations
    assert figures["demonstration_preferred"] > 0.8  # labelers mostly prefer a demonstration to base-small
    report = json.loads((out / "report.json").read_text())
    assert report["models"]["orpo"]["gold"]["mean"] > report["models"]["base_small"]["gold"]["mean"] + 0.05
    metrics = [json.loads(line) for line in (out / "orpo" / "metrics.jsonl").read_text().splitlines()]
    nll = [r["loss/nll"] for r in metrics if "loss/nll" in r]
    assert nll[-1] < 0.7 * nll[0]


def test_datasets_written_and_gold_logged(micro_run):
    _, out = micro_run
    for name in ("demonstrations", "comparison_prompts", "ppo_prompts", "eval_prompts", "validation_prompts"):
        assert (out / "data" / f"{name}.jsonl").exists()
    evals = {r["instruction"] for r in map(json.loads, (out / "data" / "eval_prompts.jsonl").read_text().splitlines())}
    vals = [json.loads(line) for line in (out / "data" / "validation_prompts.jsonl").read_text().splitlines()]
    assert len(vals) == 32 and not {r["instruction"] for r in vals if r["family"] != "name"} & evals
    # the oracle trains on the gold judge alone, scaled like the RM (1 / gold's std on the SFT samples)
    oracle = load_yaml(out / "ppo_gold" / "config.yaml")
    assert oracle["reward_model"] == "" and set(oracle["reward_weights"]) == {"gold"}
    assert oracle["reward_weights"]["gold"] > 1
    rows = [json.loads(line) for line in (out / "comparisons" / "comparisons.jsonl").read_text().splitlines()]
    assert rows and all(len(r["responses"]) >= 2 and len(r["terminated"]) == len(r["responses"]) for r in rows)
    ppo = [json.loads(line) for line in (out / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert all("objective/scores_gold" in r and "objective/scores_rm" in r for r in ppo)


def test_rerun_resumes_with_the_same_report(micro_run, capsys):
    cfg, out = micro_run
    before = (out / "report.json").read_text()
    markers = {s: (out / s / ".done").stat().st_mtime_ns for s in STAGES}
    capsys.readouterr()
    run_world(cfg)
    log = capsys.readouterr().out
    for stage in STAGES:
        assert f"[{stage.replace('/', ' ')}] already done" in log
        assert (out / stage / ".done").stat().st_mtime_ns == markers[stage]
    assert (out / "report.json").read_text() == before


def test_a_lost_evaluation_file_is_recomputed_not_an_error(micro_run, capsys):
    """An eval stage's figures live in eval/NAME.json, beside its marker directory: without
    the file a rerun evaluates that model again (it once stopped at the report instead)."""
    cfg, out = micro_run
    def figures() -> dict:  # report.json without the timings (the whole run's and each seed's)
        report = {k: v for k, v in json.loads((out / "report.json").read_text()).items()
                  if k not in ("seconds", "flops")}
        return {**report, "per_seed": {s: {k: v for k, v in r.items() if k != "seconds"}
                                       for s, r in report["per_seed"].items()}}

    before = figures()
    (out / "eval" / "base_small.json").unlink()
    capsys.readouterr()
    run_world(cfg)
    log = capsys.readouterr().out
    assert "[eval base_small] -> " in log and "[eval sft] already done" in log
    assert figures() == before  # the same seed samples the same responses again


def test_sweep_kl_reuses_the_run(micro_run, tmp_path):
    from rlhfkit.experiment.sweep import SweepConfig, sweep_kl

    _, out = micro_run
    sweep = sweep_kl(SweepConfig(run_dir=str(out), output_dir=str(tmp_path / "sweep"), betas=[0.0, 0.1],
                                 total_episodes=64, eval_prompts=16, learning_rate=3e-4))
    result = json.loads((sweep / "sweep.json").read_text())
    assert set(result) == {"beta_0", "beta_0.1"}
    for name in result:  # every beta trained at the sweep's learning rate, not the run's
        assert load_yaml(sweep / name / "config.yaml")["learning_rate"] == 3e-4
    assert "learning rate 0.0003" in (sweep / "sweep.md").read_text()
    for r in result.values():
        assert r["train_gold"] is not None and r["train_proxy"] is not None and "eval" in r
    assert (sweep / "sweep.png").stat().st_size > 0
    assert not (out / "ppo" / "beta_0").exists()  # the run's own PPO is untouched


def test_filter_ranking_keeps_unterminated_and_drops_empty_and_duplicates():
    from rlhfkit.experiment.comparisons import filter_ranking

    row = {"prompt": "Name a fruit.", "responses": ["apple.", "pear. I hope", "", "apple.", "fig."],
           "terminated": [True, False, True, True, True], "order": [3, 0, 1, 4, 2], "labeler": 5, "seed": 0,
           "index": 7, "family": "name"}
    out = filter_ranking(row)
    assert out["responses"] == ["apple.", "pear. I hope", "fig."]  # best first, the better copy of "apple." kept
    assert out["terminated"] == [True, False, True]
    assert out["ranking"] == [0, 1, 2] and out["original_order"] == [3, 0, 2]
    assert out["prompt"] == [{"role": "user", "content": "Name a fruit."}]
    assert filter_ranking({**row, "responses": ["a.", "", "", "a.", ""]}) is None


@pytest.mark.slow
def test_full_default_world_run(tmp_path):
    """The default `rlhfkit run` on the shipped base models (slow: minutes), with the
    reward model above chance and SFT above base-small. The headline figures are reported,
    not asserted: they are what the world measures, and README/report.md say where they
    stand; its time is docs/results.md's to report, not a test's to assert."""
    out = run_world(RunConfig(output_dir=str(tmp_path / "world")))
    report = json.loads((out / "report.json").read_text())
    assert report["win_rates"]["sft_vs_base_small"]["mean"] > 0.5
    assert report["reward_model"]["val_accuracy"]["mean"] > 0.5
    assert report["models"]["ppo"]["kl_to_sft"]["mean"] is not None


@pytest.mark.parametrize("rm_init", ["sft", "sft_large", "base_large"])
def test_rm_init_chooses_the_reward_models_starting_point(tmp_path, monkeypatch, rm_init):
    """rm_init sft_large trains base-large on the demonstrations first and starts the RM there;
    base_large skips that stage. The stages are recorded, not run."""
    import rlhfkit.experiment.run as world_run

    class ReachedRM(Exception):
        pass

    stages = []

    def fake_run_stage(name, directory, fn, cfg, log=None):
        stages.append((name, getattr(cfg, "model", None)))
        if name == "rm":
            raise ReachedRM
        return 0.0

    monkeypatch.setattr(world_run, "run_stage", fake_run_stage)
    monkeypatch.setattr(world_run, "run_plain_stage", lambda name, directory, fn: 0.0)
    small, large = str(tmp_path / "small"), str(tmp_path / "large")
    Path(small).mkdir(), Path(large).mkdir()
    cfg = from_dict(RunConfig, {"output_dir": str(tmp_path / "run"), "rm_init": rm_init,
                                "base_small": small, "base_large": large})
    with pytest.raises(ReachedRM):
        run_world(cfg)
    if rm_init == "sft_large":
        assert stages == [("sft", small), ("sft_large", large), ("rm", str(tmp_path / "run" / "sft_large"))]
    elif rm_init == "sft":
        assert stages == [("sft", small), ("rm", str(tmp_path / "run" / "sft"))]
    else:
        assert stages == [("sft", small), ("rm", large)]


def test_unknown_rm_init_is_an_error_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="rm_init: unknown starting point 'sft_xl'"):
        from_dict(RunConfig, {"output_dir": str(tmp_path / "run"), "rm_init": "sft_xl"})
    assert not (tmp_path / "run").exists()


def test_the_run_options_are_checked_when_the_config_is_built(tmp_path):
    with pytest.raises(ValueError, match="feedback: unknown source 'labeler'.*did you mean 'labelers'"):
        from_dict(RunConfig, {"feedback": "labeler"})
    with pytest.raises(ValueError, match="k must be >= 2, got 1"):
        RunConfig(k=1)
    with pytest.raises(ValueError, match="algo: unknown method 'bonn'.*did you mean 'bon'"):
        RunConfig(algo=["ppo", "bonn"])
    with pytest.raises(ValueError, match="ppo.reward_weights is set by this command itself"):
        from_dict(RunConfig, {"ppo": {"reward_weights": {"rm": 2.0}}})


def test_algo_all_expands_to_the_method_table_and_unknown_names_fail():
    from rlhfkit.experiment.options import ALL_METHODS, expand_algo

    assert expand_algo(["all"]) == list(ALL_METHODS)
    assert {"ppo", "rloo", "grpo", "bon", "dpo", "ipo", "orpo", "kto", "ppo_gold"} == set(ALL_METHODS)
    assert expand_algo(["ppo", "all", "simpo"]) == [*ALL_METHODS, "simpo"]  # duplicates dropped, order kept
    with pytest.raises(ValueError, match="unknown method 'bonn'"):
        expand_algo(["ppo", "bonn"])


def test_pairwise_agreement_counts_gold_ties_and_judge_ties_one_half():
    from rlhfkit.experiment.feedback import pairwise_agreement

    row = {"prompt": [{"role": "user", "content": "What is 2 plus 3?"}],
           # best first in the labeler's order: exact, near miss, exact again with chatter, wrong
           "responses": ["2 plus 3 is 5.", "2 plus 3 is 6.", "2 plus 3 is 5.\nHappy to help!", "7 is larger."],
           "terminated": [True, True, True, True]}
    # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3); gold: 1.0, ~0.28, 0.9, ~0.1
    probs = [0.9, 0.5, 0.2, 0.1, 0.6, 0.7]
    fig = pairwise_agreement([row], probs)
    assert fig["pairs"] == 6
    assert fig["agreement_labeler"] == pytest.approx((1 + 0.5 + 0 + 0 + 1 + 1) / 6)
    assert fig["agreement_gold"] == pytest.approx((1 + 0.5 + 0 + 1 + 1 + 1) / 6)
    assert fig["labeler_agreement_gold"] == pytest.approx((1 + 1 + 1 + 0 + 1 + 1) / 6)
    with pytest.raises(ValueError, match="5 judgements for 6 pairs"):
        pairwise_agreement([row], probs[:5])


def test_the_plots_have_a_panel_per_stage_that_trained_in_the_reports_words(micro_run):
    """training.png: SFT, each reward model, every RL run (rewards; KL and length) and every
    direct method, titled and labelled with the report's names, never the internal ones."""
    from PIL import Image

    from rlhfkit.experiment.report_plots import METRIC_LABELS, training_panels

    _, out = micro_run
    panels = training_panels(out, {n: out / n for n in ("ppo", "ppo_ai", "rloo", "ppo_gold")},
                             {n: out / n for n in ("dpo", "orpo")})
    titles = [title for title, _, _ in panels]
    assert titles[:3] == ["SFT", "reward model", "reward model on AI labels"]
    assert "PPO on AI feedback (RLAIF): rewards" in titles and "RLOO (no critic): KL and length" in titles
    assert titles[-2:] == ["DPO", "ORPO (from base-small)"]
    assert all("_" not in title for title in titles)  # no internal names such as ppo_ai
    assert all(key in METRIC_LABELS for _, _, keys in panels for key in keys)
    width, height = Image.open(out / "training.png").size
    assert width <= 4 * 420 + 50 and height >= 340 * (len(panels) // 4)  # rows of four, not one long strip
