"""Every option a command lists does something: each trainer is run on a tiny model
with a config that records which options the training code reads (twice: defaults,
then with the options that switch other options on), and every other command's
options are looked for in the code of its package."""
import dataclasses
import inspect
import re
import sys
from pathlib import Path

import pytest
from conftest import write_jsonl

from rlhfkit.cli import _commands
from rlhfkit.testing import save_tiny_model

# functions that read every field to copy, record or check the config, not to use it
NOT_USE = {"asdict", "_asdict_inner", "astuple", "replace", "__repr__", "__eq__", "changed_options", "options_of",
           "fingerprint", "to_dict", "save_yaml", "check_options", "option_problem", "__post_init__",
           "check_sets_itself", "write_run_info", "deepcopy", "_deepcopy_dict", "_reconstruct"}


def recording(cls, reads: set):
    def getattribute(self, name):
        if not name.startswith("_") and sys._getframe(1).f_code.co_name not in NOT_USE:
            reads.add(name)
        return object.__getattribute__(self, name)

    return type(cls.__name__, (cls,), {"__getattribute__": getattribute})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from rlhfkit.models.loading import load_scalar_model, load_tokenizer, save_pretrained_dir

    root = tmp_path_factory.mktemp("consumed")
    model = save_tiny_model(root / "m")
    tokenizer = load_tokenizer(model)  # PPO's reward model: a one-label sequence classifier, as `rlhfkit rm` saves
    save_pretrained_dir(load_scalar_model(model, tokenizer), tokenizer, root / "rm")
    return {"root": root, "model": model, "reward_model": str(root / "rm"),
            "demos": write_jsonl(root / "d.jsonl", [{"prompt": "Say a.", "completion": "a."}] * 8),
            "prefs": write_jsonl(root / "p.jsonl", [{"prompt": "Say a.", "chosen": "a.", "rejected": "b."}] * 8),
            "prompts": write_jsonl(root / "q.jsonl", [{"prompt": "Say a."}] * 8),
            "principles": str(write_text(root / "principles.txt", "Be kind.\n")),
            "ref_prompts": write_jsonl(root / "r.jsonl", [{"prompt": "Say a.", "ref": "a."}] * 8)}


def write_text(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def _runs(f):
    from rlhfkit.trainers.dpo import DPOConfig, train_dpo
    from rlhfkit.trainers.ppo.config import PPOConfig
    from rlhfkit.trainers.ppo.trainer import train_ppo
    from rlhfkit.trainers.reward import RewardConfig, train_reward_model
    from rlhfkit.trainers.sft import SFTConfig, train_sft

    lora = dict(use_lora=True, save_adapter_only=True)
    small = dict(per_device_batch_size=4)
    ppo = dict(prompts=f["prompts"], reward_model=f["reward_model"], total_episodes=8, rollout_batch_size=4,
               response_length=3)
    return {  # command -> (config class, function, runs: the options of each run)
        "sft": (SFTConfig, train_sft, [dict(data=f["demos"], **small), dict(data=f["demos"], **small, **lora)]),
        "rm": (RewardConfig, train_reward_model, [dict(data=f["prefs"], **small),
                                                  dict(data=f["prefs"], reward_form="mean_logprob", use_lora=True, **small)]),
        "dpo": (DPOConfig, train_dpo, [dict(data=f["prefs"], **small), dict(data=f["prefs"], **small, **lora)]),
        "ppo": (PPOConfig, train_ppo, [dict(**ppo), dict(**ppo, adaptive_kl=True, overlong="penalty",
                                                         overlong_buffer=2, missing_eos_penalty=0.0,
                                                         ptx_data=f["demos"], ptx_coef=0.1, **lora),
                                           dict(ppo, prompts=f["ref_prompts"], reward_model="", ai_judge=f["model"],
                                                ai_judge_principles=f["principles"], ai_judge_reference="ref")]),
    }


# read by publish() only when set (an upload); tested in test_model_card.py
HUB = {"push_to_hub", "hub_model_id", "hub_private_repo"}


@pytest.mark.parametrize("command", ["sft", "rm", "dpo", "ppo"])
def test_every_trainer_option_is_read_by_training(command, files):
    cls, fn, runs = _runs(files)[command]
    reads: set = set()
    for i, options in enumerate(runs):
        fn(recording(cls, reads)(model=files["model"], output_dir=str(files["root"] / f"{command}{i}"),
                                 progress=False, **options))
    unread = [f.name for f in dataclasses.fields(cls) if f.name not in reads and f.name not in HUB]
    assert not unread, f"rlhfkit {command} lists options its training never reads: {unread}"


def test_every_command_option_appears_in_its_code():
    """Commands too slow to run here (the world run, sweeps, the labeling server): each
    option must at least be read somewhere in the package that runs the command."""
    for path, (_help, cls, fn) in _commands().items():
        package = Path(inspect.getfile(fn)).parent
        if package.parent.parent.name == "rlhfkit":  # a command in a sub-package (trainers/ppo/): its package's
            package = package.parent
        code = "\n".join(p.read_text(encoding="utf-8") for p in package.rglob("*.py"))
        for shared in ("trainers", "models"):  # what every stage's options go through
            code += "\n".join(p.read_text(encoding="utf-8") for p in (package.parent / shared).glob("*.py"))
        # names built at run time: getattr(cfg, f"{kind}_epochs") reads small_epochs and large_epochs
        built = [re.sub(r"\\\{[^}]*\\\}", r"\\w+", re.escape(t))
                 for t in re.findall(r"getattr\(\w+, f[\"']([^\"']*)[\"']", code)]
        for f in dataclasses.fields(cls):
            used = re.search(rf"\.{f.name}\b|getattr\([^)]*[\"']{f.name}[\"']", code) or \
                any(re.fullmatch(pattern, f.name) for pattern in built)
            assert used, f"rlhfkit {' '.join(path)} --{f.name} is read nowhere in {package}"


def test_ppo_lists_no_dataset_options(capsys):
    from rlhfkit.cli import main

    with pytest.raises(SystemExit):
        main(["ppo", "--help"])
    text = capsys.readouterr().out
    for gone in ("--num_epochs", "--per_device_batch_size", "--gradient_accumulation_steps", "--eval_every",
                 "--eval_fraction", "--group_by_length", "--max_steps"):
        assert f"{gone} " not in text, gone
    for kept in ("--per_device_train_batch_size", "--total_episodes", "--lora_target_modules", "--chat_template",
                 "--save_adapter_only", "--dataset_train_split"):
        assert kept in text, kept
    with pytest.raises(SystemExit) as info:
        main(["ppo", "--num_epochs", "2"])
    assert info.value.code == 2 and "--num_epochs" in capsys.readouterr().err
