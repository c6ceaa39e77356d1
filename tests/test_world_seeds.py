"""`rlhfkit run --seeds`: the method stages once per seed from one shared recipe, every
figure over the seeds with its interval; an interrupted multi-seed run resumes to the
same report, and a seed added to a finished run trains only that seed's stages."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhfkit.config import from_dict, load_yaml
from rlhfkit.experiment.options import RunConfig
from rlhfkit.experiment.run import run_world

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(demonstrations=256, comparison_prompts=64, ppo_prompts=32, eval_prompts=48, validation_prompts=16,
            webtext_eval_docs=8, algo=["ppo", "dpo", "bon"], bon_n=[2], feedback="labelers", num_threads=1,
            sft={"num_epochs": 2, "learning_rate": 0.003, "per_device_batch_size": 32, "eval_fraction": 0.05,
                 "log_every": 5},
            ppo={"total_episodes": 64, "rollout_batch_size": 32, "num_minibatches": 1, "ppo_epochs": 1,
                 "per_device_train_batch_size": 32, "generation_batch_size": 32, "response_length": 24,
                 "learning_rate": 0.0001, "kl_coef": 0.05})


def tiny_config(out: Path, models: dict[str, str], **overrides) -> RunConfig:
    data = load_yaml(ROOT / "configs" / "world-micro.yaml")
    data.update(TINY, output_dir=str(out), base_small=models["base-small"], base_large=models["base-large"])
    data.update(overrides)
    return from_dict(RunConfig, data)


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    from test_world_run import make_standins

    return make_standins(tmp_path_factory.mktemp("standins"))


@pytest.fixture(scope="module")
def two_seeds(standins, tmp_path_factory):
    """An uninterrupted run with seeds 0 and 1."""
    return run_world(tiny_config(tmp_path_factory.mktemp("two") / "run", standins, seeds=[0, 1]))


def figures(out: Path) -> dict:
    """report.json without the timings (seconds, and the FLOPs' share of the peak) and the
    run directory's own paths."""
    text = (out / "report.json").read_text().replace(str(out), "RUN")
    report = json.loads(text)
    report.pop("seconds")
    report.pop("flops")
    report.pop("workers")
    for seed in report["per_seed"].values():
        seed.pop("seconds")
    return report


def test_two_seeds_share_the_recipe_and_report_means_with_intervals(two_seeds):
    out = two_seeds
    assert (out / "sft").is_dir() and not (out / "seeds" / "1" / "sft").exists()  # one shared recipe
    for stage in ("ppo", "dpo"):
        assert (out / "seeds" / "1" / stage / ".done").exists()
        assert load_yaml(out / "seeds" / "1" / stage / "config.yaml")["seed"] == 1
        assert load_yaml(out / "seeds" / "1" / stage / "config.yaml")["model"] == str(out / "sft")
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"] == [0, 1] and set(report["per_seed"]) == {"0", "1"}
    ppo = report["models"]["ppo"]["gold"]
    per_seed = [report["per_seed"][s]["models"]["ppo"]["gold"] for s in ("0", "1")]
    assert ppo["mean"] == pytest.approx(sum(per_seed) / 2)
    assert ppo["seed_std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2 ** 0.5)
    assert ppo["ci95"][0] < ppo["mean"] < ppo["ci95"][1]
    win = report["win_rates"]["ppo_vs_sft"]
    assert win["mean"] == pytest.approx(sum(report["per_seed"][s]["win_rates"]["ppo_vs_sft"] for s in "01") / 2)
    # SFT is one model every seed shares: evaluated once, so no spread between seeds
    assert report["models"]["sft"]["gold"]["seed_std"] is None and report["models"]["sft"]["evaluations"] == 1
    assert report["models"]["ppo"]["evaluations"] == 2
    assert set(report["kendall_tau"]["pairs"]) == {"0-1"}
    # each stage's model FLOPs against the machine's measured peak: the shared recipe
    # counted once, every seed's methods summed
    flops = report["flops"]["stages"]
    assert report["flops"]["matmul_peak"]["flops_per_second"] > 1e8
    assert {"sft", "comparisons", "rm", "ppo", "dpo", "eval"} <= set(flops)
    assert all(0 < row["peak_fraction"] < 1 for row in flops.values())
    seed0 = json.loads((out / "flops_peak.json").read_text())
    assert seed0 == report["flops"]["matmul_peak"]  # measured once, so a rebuilt report is the same
    assert "2 seeds (0, 1;" in (out / "report.md").read_text()


def test_a_seed_added_to_a_finished_run_trains_only_its_own_stages(standins, two_seeds, tmp_path, capsys):
    out = tmp_path / "run"
    run_world(tiny_config(out, standins))  # one seed, finished
    one_seed = json.loads((out / "report.json").read_text())
    assert one_seed["seeds"] == [0]
    markers = {p: p.stat().st_mtime_ns for p in out.rglob(".done")}
    capsys.readouterr()
    run_world(tiny_config(out, standins, seeds=[0, 1]))
    log = capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == t for p, t in markers.items())  # nothing of seed 0 retrained
    trained = sorted(line.split("]")[0][1:] for line in log.splitlines() if " -> " in line and line.startswith("["))
    assert trained == ["dpo seed 1", "eval bon seed 1", "eval dpo seed 1", "eval ppo seed 1", "ppo seed 1"]
    assert figures(out) == figures(two_seeds)  # the same as running both seeds from the start


def test_workers_run_the_seeds_stages_side_by_side_to_the_same_report(standins, two_seeds, tmp_path, capfd):
    """--workers 2: every seed's method stages and evaluations in two processes of one
    thread each (TINY runs one thread), longest first; the same figures as one by one,
    and a shared model (SFT, the bases) evaluated once."""
    out = run_world(tiny_config(tmp_path / "run", standins, seeds=[0, 1], workers=2))
    log = capfd.readouterr().out  # the workers' lines too (they write to the file descriptor)
    assert figures(out) == figures(two_seeds)
    assert json.loads((out / "report.json").read_text())["workers"] == 2
    started = [line.split("]")[0][1:] for line in log.splitlines() if " -> " in line and line.startswith("[eval ")]
    assert sorted(started) == sorted(set(started)) and "eval sft" in started and "eval sft seed 1" not in started
    assert "ran 2 at a time" in (out / "report.md").read_text()


@pytest.mark.kill
def test_an_interrupted_multi_seed_run_resumes_to_the_same_report(standins, two_seeds, tmp_path):
    out = tmp_path / "run"
    script = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
              "from test_world_seeds import tiny_config\nfrom rlhfkit.experiment.run import run_world\n"
              f"run_world(tiny_config({str(out)!r}, {dict(standins)!r}, seeds=[0, 1]))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    target = out / "seeds" / "1" / "ppo"  # kill -9 once the second seed's PPO has started
    deadline = time.monotonic() + 600
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.exists() and not (out / "report.json").exists()
    run_world(tiny_config(out, standins, seeds=[0, 1]))
    assert figures(out) == figures(two_seeds)


def test_seed_scope_all_trains_the_whole_recipe_per_seed(standins, tmp_path):
    cfg = tiny_config(tmp_path / "run", standins, seeds=[0, 1], seed_scope="all", algo=["ppo"])
    out = run_world(cfg)
    for stage in ("sft", "comparisons", "rm", "ppo"):
        assert (out / "seeds" / "1" / stage / ".done").exists()
    assert load_yaml(out / "seeds" / "1" / "ppo" / "config.yaml")["model"] == str(out / "seeds" / "1" / "sft")
    report = json.loads((out / "report.json").read_text())
    assert report["seed_scope"] == "all" and report["reward_model"]["reward_models"] == 2
    assert report["models"]["sft"]["evaluations"] == 2 and report["models"]["sft"]["gold"]["seed_std"] is not None


@pytest.mark.parametrize("options,message", [({"seeds": [1, 1]}, "listed twice"), ({"seeds": [-1]}, ">= 0"),
                                             ({"seed_scope": "everything"}, "unknown scope")])
def test_bad_seed_options_are_refused_when_the_config_is_built(standins, tmp_path, options, message):
    with pytest.raises(Exception, match=message):
        tiny_config(tmp_path / "run", standins, **options)


def test_the_stage_layout_of_a_seed():
    from rlhfkit.experiment.layout import seed_layout

    run = Path("/r")
    own = seed_layout(run, 0, 0, "methods")
    assert own.recipe == own.methods == run and own.eval_dir("ppo") == run / "eval"
    other = seed_layout(run, 0, 2, "methods")
    assert other.recipe == run and other.methods == run / "seeds" / "2" and other.recipe_seed == 0
    assert other.eval_dir("sft") == run / "eval" and other.eval_dir("ppo") == run / "seeds" / "2" / "eval"
    assert other.eval_dir("base_large") == run / "eval" and other.stage_name("ppo") == "ppo seed 2"
    whole = seed_layout(run, 0, 2, "all")
    assert whole.recipe == run / "seeds" / "2" and whole.eval_dir("sft") == run / "seeds" / "2" / "eval"
    assert dataclasses.replace(whole, seed=3).seed == 3
