"""Smoke test of the benchmark suite's FLOP counting and table code (no peers, no training)."""
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import flops  # noqa: E402


def test_llama_params_matches_transformers():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=88, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, pad_token_id=0)
    torch.manual_seed(0)
    lm = LlamaForCausalLM(cfg)
    want = len({id(p): p for p in lm.parameters()})
    assert want > 0
    got = flops.llama_params(96, 32, 2, 88, heads=4, kv_heads=2, tied=True)
    assert got["total"] == sum({id(p): p.numel() for p in lm.parameters()}.values())
    cfg.num_labels = 1
    cls = LlamaForSequenceClassification(cfg)
    got_cls = flops.llama_params(96, 32, 2, 88, heads=4, kv_heads=2, head_outputs=1)
    assert got_cls["total"] == sum(p.numel() for p in cls.parameters())
    assert got_cls["embedding"] == 96 * 32


def test_reference_model_is_about_0_9m_parameters():
    n = flops.llama_params(512, 128, 4, 352, heads=4)["total"]
    assert 0.8e6 < n < 1.0e6
    assert 13e6 < flops.llama_params(512, 384, 8, 1024, heads=6)["total"] < 16e6


def test_ppo_flops_per_episode():
    f = flops.ppo_flops_per_episode(10, 20, 10, 20, prompt_tokens=3, response_tokens=7, ppo_epochs=4)
    assert f["generate"] == 2 * 10 * 10
    assert f["score"] == 2 * (10 + 20 + 20) * 10
    assert f["update"] == 6 * (10 + 20) * 10 * 4
    assert f["total"] == f["generate"] + f["score"] + f["update"]
    assert flops.mfu(f["total"], 2.0, f["total"] * 4) == 0.5
    assert math.isnan(flops.mfu(1.0, 0.0, 1.0))


def test_summary_and_table():
    runs = [{"episodes_per_second": 2.0, "quality": -1.0, "quality_se": 0.02, "peak_rss_mib": 100.0,
             "train_seconds": 5.0, "load_seconds": 1.0, "timings": {}},
            {"episodes_per_second": 4.0, "quality": -0.5, "quality_se": 0.04, "peak_rss_mib": 120.0,
             "train_seconds": 3.0, "load_seconds": 1.0}]
    s = flops.summarise(runs, "episodes_per_second")
    assert s["throughput"] == 3.0 and s["peak_rss_mib"] == 120.0 and s["quality"] == -0.75
    assert all("timings" not in r for r in s["repetitions"])
    peer = dict(s, throughput=6.0, name="trl 0.29.1", mfu=0.02)
    table = flops.format_table({"machine": {}, "ppo": {"rlhfkit": dict(s, mfu=0.01), "peer": peer, "ratio": 0.5}})
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["benchmark", "system"]
    assert "trl 0.29.1" in table and "0.500" in table and "1.00%" in table
    assert "-0.7500 ± 0.030" in table  # quality with the median standard error of its repetitions
    phases = flops.format_phases({"timing/generate": 3.0, "timing/update": 1.0, "timing/step": 4.0}, steps=2)
    assert "generate" in phases.splitlines()[1] and "75.0%" in phases and not any(l.startswith("step") for l in phases.splitlines())


def test_matmul_peak_is_positive():
    peak = flops.matmul_peak(threads=1, sizes=(64,), repeats=1)
    assert peak["flops"] > 0 and peak["size"] == 64


def test_standard_error_of_per_step_scores():
    assert flops.standard_error([1.0, 3.0]) == pytest.approx(1.0)  # sd sqrt(2), over sqrt(2)
    assert math.isnan(flops.standard_error([1.0]))


def test_ppo_benchmark_specs_make_valid_matched_configs(tmp_path):
    """Every PPO benchmark spec builds a valid rlhfkit PPOConfig: a value model exactly when
    the estimator is GAE; the critic-free one with K = 4, no advantage whitening and no
    missing-EOS penalty (TRL's RLOOTrainer has neither), in a rollout divisible by K."""
    import bench
    import run_rlhfkit

    paths = {m: {"policy": "p", "reward": "r"} for m in bench.MODELS}
    paths["prompts"] = "prompts.jsonl"
    for name, (_, response_length, full, _, estimator) in bench.PPO_BENCHES.items():
        spec = dict(bench.ppo_spec(name, paths, full), output_dir=str(tmp_path / name))
        cfg = run_rlhfkit.ppo_config(spec)
        cfg.sizes(num_processes=1)  # the divisibility checks
        assert cfg.response_length == response_length and cfg.total_episodes == full
        if estimator == "gae":
            assert spec["task"] == "ppo" and cfg.value_model == "r" and cfg.advantage_estimator == "gae"
        else:
            assert spec["task"] == estimator and cfg.value_model == "" and cfg.advantage_estimator == estimator
            assert (cfg.samples_per_prompt, cfg.whiten_advantages, cfg.missing_eos_penalty) == (4, "none", 0.0)
            if estimator == "grpo":  # TRL 1.16 GRPOTrainer's: the DAPO token mean, k3 KL in the loss
                assert (cfg.loss_type, cfg.kl_placement, cfg.kl_estimator) == ("dapo", "loss", "k3")
            assert cfg.rollout_batch_size % cfg.samples_per_prompt == 0


def test_profiled_run_splits_its_time_into_matmuls_attention_and_all_ops(tmp_path):
    """profiling.maybe_profiled writes PATH.json whose matmul and attention seconds come from
    those ops alone: a run that is mostly large products is mostly matmul time, and neither
    share exceeds the time of all ops or the wall time."""
    import json

    import torch
    import torch.nn.functional as F

    import profiling

    a = torch.randn(512, 512)
    q = torch.randn(2, 4, 64, 32)

    def work():
        for _ in range(20):
            a @ a
        F.scaled_dot_product_attention(q, q, q, is_causal=True)
        (a + 1).sum()
        return "done"

    path = tmp_path / "profile.txt"
    assert profiling.maybe_profiled({"profile": str(path)}, work) == "done"
    seconds = json.loads(path.with_suffix(".json").read_text())
    assert 0 < seconds["attention_seconds"] < seconds["matmul_seconds"]
    assert seconds["matmul_seconds"] + seconds["attention_seconds"] <= seconds["op_seconds"] <= seconds["wall_seconds"]
    assert seconds["matmul_seconds"] > 0.5 * seconds["op_seconds"]
    assert "aten::mm" in path.read_text()
    assert profiling.maybe_profiled({}, work) == "done"  # no profile asked: just the call
