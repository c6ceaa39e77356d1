"""Every trained model directory has a model card the Hub reads (README.md with YAML
front matter), and --push_to_hub uploads it through huggingface_hub, tested against a
stand-in of the Hub API (never the network)."""
import fnmatch

import pytest
from conftest import write_jsonl

from rlhfkit.cli import main
from rlhfkit.config import ConfigError
from rlhfkit.testing import save_tiny_model
from rlhfkit.trainers.dpo import DPOConfig, train_dpo
from rlhfkit.trainers.model_card import IGNORED_ON_PUSH, model_card, read_front_matter
from rlhfkit.trainers.ppo.config import PPOConfig
from rlhfkit.trainers.reward import RewardConfig, train_reward_model
from rlhfkit.trainers.sft import SFTConfig, train_sft

PAIRS = [{"prompt": f"Say {w}.", "chosen": f"{w}.", "rejected": "no."} for w in ("a", "b", "c", "d")] * 4


@pytest.fixture
def base(tmp_path):
    """A tiny model whose own card names the hub model it came from."""
    path = save_tiny_model(tmp_path / "base")
    (tmp_path / "base" / "README.md").write_text("---\nbase_model: org/tiny-base\nlicense: mit\n---\n# tiny\n")
    return path


def _sft(base, tmp_path, **kw):
    data = write_jsonl(tmp_path / "demos.jsonl", [{"prompt": "Say a.", "completion": "a."}] * 16)
    return train_sft(SFTConfig(model=base, data=data, output_dir=str(tmp_path / "sft"), progress=False,
                               eval_fraction=0.25, per_device_batch_size=4, learning_rate=3e-4, **kw))


def test_sft_and_rm_write_a_card_the_hub_reads(base, tmp_path):
    sft = _sft(base, tmp_path)
    front = read_front_matter(sft / "README.md")
    assert front["library_name"] == "rlhfkit" and front["pipeline_tag"] == "text-generation"
    assert front["base_model"] == "org/tiny-base"  # a local directory stands for the hub model its card names
    assert "sft" in front["tags"] and "rlhfkit" in front["tags"]
    assert "datasets" not in front  # a local file is no hub dataset
    text = (sft / "README.md").read_text()
    assert "arxiv.org/abs/2203.02155" in text  # InstructGPT
    assert "| `learning_rate` | `0.0003` |" in text and "| `eval_fraction` | `0.25` |" in text
    assert "| `seed` |" not in text  # options at their default are left out
    assert "| `loss/val` |" in text and "| `loss/train` |" in text  # final metrics
    assert "- transformers: " in text and "- torch: " in text and "- rlhfkit: " in text

    prefs = write_jsonl(tmp_path / "prefs.jsonl", PAIRS)
    rm = train_reward_model(RewardConfig(model=str(sft), data=prefs, output_dir=str(tmp_path / "rm"), progress=False,
                                         per_device_batch_size=4, eval_fraction=0))
    front = read_front_matter(rm / "README.md")
    assert front["base_model"] == "org/tiny-base"  # through the SFT model's card
    assert front["pipeline_tag"] == "text-classification" and "reward-model" in front["tags"]
    assert "rlhfkit_reward_mean" in (rm / "README.md").read_text()  # the one line plain transformers needs


def test_dpo_card_names_the_loss_and_its_paper(base, tmp_path):
    prefs = write_jsonl(tmp_path / "prefs.jsonl", PAIRS)
    out = train_dpo(DPOConfig(model=base, data=prefs, loss="ipo", output_dir=str(tmp_path / "ipo"), progress=False,
                              per_device_batch_size=4, eval_fraction=0))
    front = read_front_matter(out / "README.md")
    assert "ipo" in front["tags"] and front["base_model"] == "org/tiny-base"
    text = (out / "README.md").read_text()
    assert "Method: **IPO**" in text and "arxiv.org/abs/2310.12036" in text and "| `loss` | `ipo` |" in text


def test_ppo_card_names_the_advantage_estimator(tmp_path):
    cfg = PPOConfig(model="org/sft-model", prompts="org/prompts", advantage_estimator="grpo", samples_per_prompt=4)
    front_text = model_card(tmp_path, cfg, "ppo")
    front = read_front_matter_text(front_text)
    assert front["base_model"] == "org/sft-model" and front["datasets"] == ["org/prompts"]
    assert "grpo" in front["tags"] and "arxiv.org/abs/2402.03300" in front_text


def read_front_matter_text(text):
    import yaml

    assert text.startswith("---\n")
    return yaml.safe_load(text[4:text.index("\n---", 4)])


class FakeHub:
    """huggingface_hub.HfApi's create_repo / upload_folder, recording what would be sent."""

    calls: list = []
    endpoint = "http://127.0.0.1:9"

    def create_repo(self, repo_id, private=None, exist_ok=False, **kw):
        FakeHub.calls.append(("create_repo", repo_id, private, exist_ok))

        class Repo:
            pass

        repo = Repo()
        repo.repo_id = repo_id if "/" in repo_id else f"me/{repo_id}"
        return repo

    def upload_folder(self, folder_path, repo_id, ignore_patterns=(), **kw):
        from pathlib import Path

        root = Path(folder_path)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        sent = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in ignore_patterns)]
        FakeHub.calls.append(("upload_folder", repo_id, sent))


def test_push_to_hub_uploads_the_model_and_its_card(base, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    FakeHub.calls = []
    _sft(base, tmp_path, push_to_hub=True, hub_model_id="me/tiny-sft", checkpoint_every=1, keep_checkpoints=1)
    (create, repo, private, exist_ok), (upload, repo_id, sent) = FakeHub.calls
    assert (create, repo, exist_ok) == ("create_repo", "me/tiny-sft", True) and repo_id == "me/tiny-sft"
    assert {"README.md", "model.safetensors", "config.json", "tokenizer.json", "config.yaml"} <= set(sent)
    assert not any(f.startswith("checkpoints") or f.startswith(".") for f in sent), sent
    assert IGNORED_ON_PUSH


def test_push_to_hub_failure_says_the_model_is_saved(base, tmp_path, monkeypatch):
    import huggingface_hub

    class Unreachable(FakeHub):
        def create_repo(self, *a, **kw):
            raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", Unreachable)
    with pytest.raises(ValueError, match=r"upload failed \(ConnectionError.*saved in .*sft.*hf upload"):
        _sft(base, tmp_path, push_to_hub=True)
    assert (tmp_path / "sft" / "model.safetensors").exists()


def test_push_to_hub_offline_is_refused_before_training(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE is set"):
        SFTConfig(push_to_hub=True)
    with pytest.raises(SystemExit) as info:
        main(["sft", "--model", "m", "--data", "d.jsonl", "--output_dir", str(tmp_path / "o"), "--push_to_hub"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HF_HUB_OFFLINE is set" in err[0] and not (tmp_path / "o").exists()
