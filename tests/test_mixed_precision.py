"""--mixed_precision bf16 reaches every forward pass of every trainer.

Accelerate's prepare() wraps only the prepared module's forward in autocast; the
reward trainer's trunk-and-head scoring, PPO's sampling from the unwrapped policy and
its reference and reward forwards run outside it unless the trainer opens autocast
itself (before the fix, --mixed_precision bf16 left the reward model in fp32 with no
error). CPU autocast runs bf16 matmuls, so the dtype of every Linear output shows
which passes it reached.
"""
import pytest
import torch
from torch import nn

from rlhfkit.trainers.dpo import DPOConfig, train_dpo
from rlhfkit.trainers.ppo.config import PPOConfig
from rlhfkit.trainers.ppo.trainer import train_ppo
from rlhfkit.trainers.reward import RewardConfig, train_reward_model
from rlhfkit.trainers.sft import SFTConfig, train_sft
from rlhfkit.testing import save_tiny_model

from conftest import write_jsonl

WORDS = ["cat", "dog", "red", "fig", "owl", "pear", "gold", "lime"]


class LinearDtypes:
    """Counts the dtypes of all nn.Linear outputs while active, per grad mode."""

    def __enter__(self):
        self.seen: dict[tuple[str, bool], int] = {}

        def hook(module, args, output):
            if isinstance(module, nn.Linear) and isinstance(output, torch.Tensor):
                key = (str(output.dtype).removeprefix("torch."), torch.is_grad_enabled())
                self.seen[key] = self.seen.get(key, 0) + 1

        self.handle = nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()

    def dtypes(self) -> set[str]:
        return {dtype for dtype, _ in self.seen}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp")
    model = save_tiny_model(root / "model", hidden=32)
    prefs = write_jsonl(root / "prefs.jsonl", [{"prompt": f"Say {w}.", "chosen": f" {w} gold.", "rejected": f" {w}."}
                                               for w in WORDS * 2])
    sft = write_jsonl(root / "sft.jsonl", [{"prompt": f"Say {w}.", "completion": f" {w}."} for w in WORDS * 2])
    prompts = write_jsonl(root / "prompts.jsonl", [{"prompt": f"Say {w}."} for w in WORDS])
    return root, model, prefs, sft, prompts


def _stages(files, mixed_precision):
    root, model, prefs, sft, prompts = files
    common = dict(progress=False, num_epochs=1.0, per_device_batch_size=8, eval_fraction=0.25,
                  mixed_precision=mixed_precision)
    out = root / mixed_precision

    def rm():
        return train_reward_model(RewardConfig(model=model, data=prefs, output_dir=str(out / "rm"), **common))

    return {
        "sft": lambda: train_sft(SFTConfig(model=model, data=sft, output_dir=str(out / "sft"), **common)),
        "rm": rm,
        "dpo": lambda: train_dpo(DPOConfig(model=model, data=prefs, output_dir=str(out / "dpo"), **common)),
        # the reward model, scored by PPO, is the one trained above in the same precision
        "ppo": lambda: train_ppo(PPOConfig(model=model, reward_model=str(rm()), prompts=prompts,
                                           output_dir=str(out / "ppo"), total_episodes=16, rollout_batch_size=8,
                                           per_device_train_batch_size=8, generation_batch_size=8, response_length=4,
                                           progress=False, mixed_precision=mixed_precision)),
    }


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo", "ppo"])
def test_bf16_autocast_reaches_every_forward(files, stage):
    with LinearDtypes() as bf16:
        _stages(files, "bf16")[stage]()
    assert bf16.dtypes() == {"bfloat16"}, bf16.seen
    if stage in ("rm", "ppo"):  # both the scoring (no grad) and the training passes were seen
        assert {grad for _, grad in bf16.seen} == {True, False}, bf16.seen
    with LinearDtypes() as fp32:
        _stages(files, "no")[stage]()
    assert fp32.dtypes() == {"float32"}, fp32.seen
