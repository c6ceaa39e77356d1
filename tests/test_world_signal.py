"""The learning signal world version 2 exists to carry (docs/world.md): the
demonstrators write the asked format on half the constrained prompts, so SFT
follows constraints about half the time, and RL against the world's reward
raises that share. A micro version of the run's SFT -> PPO path on the shipped
base-small, on the two families a small SFT policy answers right quickly
(greet, name: with the content right, the format decides the gold score)."""
import json
from pathlib import Path

import pytest

from rlhfkit.trainers.ppo.config import PPOConfig
from rlhfkit.trainers.ppo.trainer import train_ppo
from rlhfkit.trainers.sft import SFTConfig, train_sft
from rlhfkit.world.demonstrators import make_demonstrations
from rlhfkit.experiment.evaluate import summarise
from rlhfkit.world.splits import make_split
from rlhfkit.experiment.data import chat
from rlhfkit.experiment.sampling import sample_responses
from rlhfkit.experiment.stages import gold

ROOT = Path(__file__).resolve().parents[1]
BASE_SMALL = ROOT / "rlhfkit" / "world" / "checkpoints" / "base-small"
FAMILIES = ("greet", "name")


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _follows_constrained(model_dir: str, tasks) -> float:
    from rlhfkit.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, tokenizer).eval()
    samples = sample_responses(model, tokenizer, [chat(t.instruction) for t in tasks], temperature=1.0,
                               max_new_tokens=32, batch_size=128, seed=7)
    return summarise(tasks, samples)["follows_constrained"]


@pytest.mark.skipif(not BASE_SMALL.is_dir(), reason="the shipped base-small is missing")
@pytest.mark.slow  # SFT, a reward model and PPO in the world: a minute
def test_rl_raises_follows_on_constrained_prompts_over_sft(tmp_path):
    demos = make_demonstrations(1024, 0, tasks=make_split("sft", 1024, 0, families=FAMILIES))
    data = _write(tmp_path / "demos.jsonl", [{"prompt": chat(d["prompt"]), "completion": d["completion"]} for d in demos])
    sft = str(train_sft(SFTConfig(model=str(BASE_SMALL), data=data, output_dir=str(tmp_path / "sft"), num_epochs=3,
                                  learning_rate=2e-3, per_device_batch_size=32, max_length=128, seed=0,
                                  progress=False)))
    prompts = _write(tmp_path / "prompts.jsonl",
                     [{"prompt": chat(t.instruction), "instruction": t.instruction}
                      for t in make_split("ppo", 256, 0, families=FAMILIES)])
    # the gold judge as the only reward (3 x gold: about unit std on SFT samples, as the RM's scale)
    ppo = str(train_ppo(PPOConfig(model=sft, reward_model="", value_model=sft, prompts=prompts,
                                  output_dir=str(tmp_path / "ppo"), reward_weights={"gold": 3.0}, total_episodes=1536,
                                  rollout_batch_size=64, num_minibatches=1, ppo_epochs=2,
                                  per_device_train_batch_size=64, response_length=32, learning_rate=3e-4,
                                  critic_learning_rate=1e-3, kl_coef=0.02, seed=0, progress=False),
                        reward_fns=(gold,)))
    held_out = [t for t in make_split("eval", 400, 0, families=FAMILIES) if t.constraint][:160]
    sft_rate, ppo_rate = _follows_constrained(sft, held_out), _follows_constrained(ppo, held_out)
    print(f"follows on constrained prompts: SFT {sft_rate:.3f}, PPO {ppo_rate:.3f}")
    assert sft_rate < 0.7, sft_rate  # at most the demonstrators' half, give or take
    assert ppo_rate > sft_rate + 0.1, (sft_rate, ppo_rate)
