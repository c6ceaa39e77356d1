"""--report_to: every tracker Accelerate drives runs when installed; an unknown name or
a missing package is a one-line error before training; a list never loses one."""
import importlib.util
import os

import pytest
from conftest import write_jsonl

from rlhfkit.cli import main
from rlhfkit.config import ConfigError
from rlhfkit.trainers import trackers
from rlhfkit.trainers.sft import SFTConfig, train_sft


def _without(monkeypatch, *modules):
    """Make `modules` look uninstalled to importlib, as on a machine without them."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name.split(".")[0] in modules else real(name, *a, **k))


def test_missing_package_is_refused_naming_what_to_install(monkeypatch):
    _without(monkeypatch, "wandb")
    with pytest.raises(ConfigError, match=r"report_to wandb needs the wandb package.*pip install wandb"):
        SFTConfig(report_to=["wandb"])
    # a list with an installed tracker first still refuses the missing one (never dropped)
    with pytest.raises(ConfigError, match="pip install wandb"):
        SFTConfig(report_to=["tensorboard", "wandb"])
    _without(monkeypatch, "comet_ml")
    with pytest.raises(ConfigError, match="pip install comet-ml"):
        SFTConfig(report_to=["comet"])


def test_unknown_tracker_has_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"unknown tracker 'tensorbord' \(did you mean 'tensorboard'\?\)"):
        SFTConfig(report_to=["tensorbord"])
    with pytest.raises(ConfigError, match="'none' together with"):
        SFTConfig(report_to=["none", "tensorboard"])


def test_names_resolve_to_accelerates(monkeypatch):
    assert trackers.resolve_trackers(["none"]) == []
    assert trackers.resolve_trackers(["TensorBoard", "comet", "tensorboard"]) == ["tensorboard", "comet_ml"]
    _without(monkeypatch, *[m for t, (_, mods) in trackers.TRACKERS.items() if t != "tensorboard" for m in mods])
    assert trackers.resolve_trackers(["all"]) == ["tensorboard"]  # every installed one


def test_cli_refuses_a_missing_tracker_before_writing_anything(monkeypatch, tmp_path, capsys):
    _without(monkeypatch, "trackio")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["sft", "--model", "m", "--data", "d.jsonl", "--output_dir", str(out), "--report_to", "tensorboard,trackio"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rlhfkit sft: command line: report_to trackio needs the trackio package, which is not "
                   "installed: pip install trackio"]
    assert not out.exists()


def test_a_tracker_accelerate_skips_is_an_error():
    class Running:
        name = "tensorboard"

    class FakeAccelerator:
        is_main_process = True
        trackers = [Running()]

    trackers.check_started(FakeAccelerator(), ["tensorboard"])
    with pytest.raises(ValueError, match="wandb did not start"):
        trackers.check_started(FakeAccelerator(), ["tensorboard", "wandb"])


def test_wandb_without_a_login_logs_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "")  # recorded, so what prepare_environment sets is undone
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    said = []
    trackers.prepare_environment(["wandb"], log=said.append)
    assert os.environ["WANDB_MODE"] == "offline" and "offline" in said[0]
    monkeypatch.setenv("WANDB_MODE", "online")  # a choice the user made is kept
    trackers.prepare_environment(["wandb"], log=said.append)
    assert os.environ["WANDB_MODE"] == "online" and len(said) == 1


def test_tensorboard_and_wandb_both_receive_the_metrics(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)  # wandb writes ./wandb
    monkeypatch.setenv("WANDB_MODE", "")  # recorded, so what prepare_environment sets is undone
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Say a.", "completion": "a."}] * 16)
    out = train_sft(SFTConfig(model=str(tiny_model_dir), data=data, output_dir=str(tmp_path / "o"),
                              report_to=["tensorboard", "wandb"], log_every=1, progress=False, eval_fraction=0,
                              per_device_batch_size=4))
    scalars = set()
    for e in out.rglob("events.out.tfevents*"):
        acc = EventAccumulator(str(e))
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
    assert "loss/train" in scalars
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "wandb").iterdir())
    record = next(runs[0].glob("run-*.wandb")).read_bytes()  # the offline run's protobuf records
    assert b"loss/train" in record and b"learning_rate" in record  # a logged metric, the run's config


def test_every_tracker_accelerate_drives_is_known():
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    assert set(LOGGER_TYPE_TO_CLASS) <= set(trackers.TRACKERS), set(LOGGER_TYPE_TO_CLASS) - set(trackers.TRACKERS)
