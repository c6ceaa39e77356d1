"""The model card (README.md) in every directory a trainer saves, and `--push_to_hub`.

The card's YAML front matter is what the Hugging Face Hub reads (base_model,
datasets, tags, library_name, pipeline_tag); the body says how the model was made:
the method with its paper, the options that differ from the defaults, the final
metrics and the framework versions. base_model and datasets are hub ids only: a
model trained from a local directory inherits the base_model its card names (so an
SFT -> RM -> PPO chain from a hub model names that model at every step).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from rlhfkit.io import atomic_write_text

# (name, paper, arXiv id or URL) of each method, by stage and the option that picks it
INSTRUCTGPT = ("InstructGPT", "Ouyang et al. 2022, Training language models to follow instructions with human "
               "feedback", "2203.02155")
SFT = ("SFT", *INSTRUCTGPT[1:])
REWARD_MODEL = ("Bradley-Terry reward model", *INSTRUCTGPT[1:])
PPO = ("PPO", "Schulman et al. 2017, Proximal Policy Optimization Algorithms", "1707.06347")
DPO_METHODS = {
    "sigmoid": ("DPO", "Rafailov et al. 2023, Direct Preference Optimization: Your Language Model is Secretly a "
                "Reward Model", "2305.18290"),
    "cdpo": ("conservative DPO", "Mitchell 2023, A note on DPO with noisy preferences & relationship to IPO",
             "https://ericmitchell.ai/cdpo.pdf"),
    "robust": ("robust DPO", "Chowdhury et al. 2024, Provably Robust DPO: Aligning Language Models with Noisy "
               "Feedback", "2403.00409"),
    "ipo": ("IPO", "Azar et al. 2023, A General Theoretical Paradigm to Understand Learning from Human "
            "Preferences", "2310.12036"),
    "hinge": ("SLiC-HF (hinge)", "Zhao et al. 2023, SLiC-HF: Sequence Likelihood Calibration with Human "
              "Feedback", "2305.10425"),
    "simpo": ("SimPO", "Meng et al. 2024, SimPO: Simple Preference Optimization with a Reference-Free Reward",
              "2405.14734"),
    "orpo": ("ORPO", "Hong et al. 2024, ORPO: Monolithic Preference Optimization without Reference Model",
             "2403.07691"),
    "kto": ("KTO", "Ethayarajh et al. 2024, KTO: Model Alignment as Prospect Theoretic Optimization", "2402.01306"),
}
ADVANTAGE_METHODS = {
    "rloo": ("RLOO", "Ahmadian et al. 2024, Back to Basics: Revisiting REINFORCE Style Optimization for Learning "
             "from Human Feedback in LLMs", "2402.14740"),
    "grpo": ("GRPO", "Shao et al. 2024, DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open "
             "Language Models", "2402.03300"),
    "dr_grpo": ("Dr. GRPO", "Liu et al. 2025, Understanding R1-Zero-Like Training: A Critical Perspective",
                "2503.20783"),
}
STAGES = {  # stage -> (what it is, tags, pipeline_tag)
    "sft": ("supervised fine-tuning on demonstrations", ["sft"], "text-generation"),
    "rm": ("a Bradley-Terry reward model trained on comparisons", ["reward-model"], "text-classification"),
    "ppo": ("reinforcement learning from a reward", ["ppo", "rlhf"], "text-generation"),
    "dpo": ("preference optimisation without a reward model", ["dpo"], "text-generation"),
}
IGNORED_ON_PUSH = ["checkpoints/*", "checkpoints/**", ".*", "**/.*", "*.lock"]


def methods(stage: str, cfg) -> list[tuple[str, str, str]]:
    """The methods (name, paper, arXiv id) a stage's options select, the main one first."""
    if stage == "dpo":
        return [DPO_METHODS[cfg.loss]]
    if stage == "ppo":
        estimator = getattr(cfg, "advantage_estimator", "gae")
        return [ADVANTAGE_METHODS[estimator], INSTRUCTGPT] if estimator in ADVANTAGE_METHODS else [PPO, INSTRUCTGPT]
    if stage == "rm":
        simpo = getattr(cfg, "reward_form", "head") == "mean_logprob"  # SimPO's implicit reward as the score
        return [REWARD_MODEL, DPO_METHODS["simpo"]] if simpo else [REWARD_MODEL]
    return [SFT]


def changed_options(cfg) -> dict[str, Any]:
    """The options whose value is not the class default (what someone would need to rerun it)."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        value = getattr(cfg, f.name)
        if value != default and f.name != "output_dir":
            out[f.name] = value
    return out


def final_metrics(metrics_path: Path) -> dict[str, float]:
    """The last value of each metric in metrics.jsonl (training rows, then the final evaluation)."""
    out: dict[str, float] = {}
    try:
        lines = metrics_path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        for key, value in row.items():
            if key not in ("step", "final", "stage") and not key.startswith("timing/") \
                    and isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = value
    return out


def _is_hub_id(value: str) -> bool:
    """`org/name` or `name` that is not a local path."""
    if not value or Path(value).expanduser().exists() or value.startswith(("/", ".", "~")):
        return False
    return value.count("/") <= 1 and "\\" not in value and not value.endswith((".jsonl", ".json", ".parquet", ".csv"))


def read_front_matter(path: Path) -> dict[str, Any]:
    """The YAML front matter of a README.md, or {}."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 4)
    try:
        data = yaml.safe_load(text[4:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _origin(value: str, key: str) -> list[str]:
    """Hub ids behind a model or data option: itself when a hub id, else what its card names."""
    if _is_hub_id(value):
        return [value]
    found = read_front_matter(Path(value) / "README.md").get(key) if value and Path(value).is_dir() else None
    return [found] if isinstance(found, str) else list(found or [])


def _versions() -> dict[str, str]:
    import accelerate
    import torch
    import transformers

    import rlhfkit

    out = {"rlhfkit": rlhfkit.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
           "accelerate": accelerate.__version__}
    for name in ("peft", "datasets", "tokenizers"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            pass
    out["python"] = sys.version.split()[0]
    return out


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def model_card(out: Path, cfg, stage: str) -> str:
    """The README.md text for the model `stage` saved in `out`."""
    what, tags, pipeline_tag = STAGES[stage]
    chosen = methods(stage, cfg)
    base = _origin(getattr(cfg, "model", ""), "base_model")
    data_options = [getattr(cfg, name, "") for name in ("data", "prompts") if getattr(cfg, name, "")]
    datasets = sorted({d for value in data_options for d in _origin(value, "datasets")})
    front = {"library_name": "rlhfkit", "model_name": out.resolve().name, "pipeline_tag": pipeline_tag,
             "tags": ["rlhfkit", *tags, *[m[0].lower().replace(" ", "-").replace(".", "") for m in chosen[:1]
                                                if stage in ("ppo", "dpo")]]}
    if base:
        front["base_model"] = base[0]
    if datasets:
        front["datasets"] = datasets
    front["tags"] = list(dict.fromkeys(front["tags"]))
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {front['model_name']}", ""]
    source = f"[{base[0]}](https://huggingface.co/{base[0]})" if base else f"`{getattr(cfg, 'model', '')}`"
    data = ", ".join(f"`{d}`" for d in data_options) or "its data"
    lines += [f"This model is {what}, fine-tuned from {source} on {data} with "
              f"rlhfkit (`rlhfkit {stage}`), method: {chosen[0][0]}.", ""]
    lines += ["## Quick start", "", "```python", *_quick_start(stage, out), "```", ""]
    lines += ["## Training procedure", "", f"Method: **{chosen[0][0]}**, {_cite(chosen[0])}."]
    for extra in chosen[1:]:
        lines.append(f"Recipe: {extra[0]}, {_cite(extra)}.")
    changed = changed_options(cfg)
    lines += ["", "Options that differ from the defaults (`config.yaml` beside this card has them all):", ""]
    lines += ["| option | value |", "|---|---|"] + [f"| `{k}` | `{_format(v)}` |" for k, v in changed.items()]
    metrics = final_metrics(out / "metrics.jsonl")
    if metrics:
        lines += ["", "## Final metrics", "", "(`metrics.jsonl` has every logged step; docs/metrics.md says what "
                  "each key means)", "", "| metric | value |", "|---|---|"]
        lines += [f"| `{k}` | {_format(v)} |" for k, v in metrics.items()]
    lines += ["", "## Framework versions", ""] + [f"- {k}: {v}" for k, v in _versions().items()]
    lines += ["", "## Citations", ""] + [f"- {_cite(m)}" for m in chosen]
    return "\n".join(lines) + "\n"


def _cite(method: tuple[str, str, str]) -> str:
    _name, paper, ref = method
    link = ref if ref.startswith("http") else f"https://arxiv.org/abs/{ref}"
    return f"{paper} ({link})"


def _quick_start(stage: str, out: Path) -> list[str]:
    if stage == "rm":
        return ["import torch",
                "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
                "",
                f'model = AutoModelForSequenceClassification.from_pretrained("{out.name}")',
                f'tokenizer = AutoTokenizer.from_pretrained("{out.name}")',
                'batch = tokenizer(["prompt and response"], return_tensors="pt")',
                "with torch.no_grad():",
                "    # minus the stored mean: a head without a bias cannot hold it (mean 0 / std 1 scores)",
                "    score = model(**batch).logits[:, 0] - getattr(model.config, 'rlhfkit_reward_mean', 0.0)"]
    return ["from transformers import pipeline", "",
            f'generator = pipeline("text-generation", model="{out.name}")',
            'print(generator([{"role": "user", "content": "Say hello."}], max_new_tokens=64)[0]["generated_text"])']


def write_model_card(out: str | Path, cfg, stage: str) -> Path:
    """README.md in `out` (atomically written)."""
    out = Path(out)
    path = out / "README.md"
    atomic_write_text(path, model_card(out, cfg, stage))
    return path


# ----------------------------------------------------------------------------- the Hub

def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_problem(cfg) -> str | None:
    """Why --push_to_hub cannot work here, before training starts, or None."""
    if not getattr(cfg, "push_to_hub", False):
        return None
    if _offline():
        return "push_to_hub: HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it, or drop --push_to_hub " \
               "and upload the output directory later (hf upload REPO OUTPUT_DIR)"
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        return "push_to_hub needs the huggingface_hub package: pip install huggingface_hub"
    return None


def push_to_hub(out: str | Path, cfg) -> str:
    """Upload `out` (model, tokenizer, card, config.yaml, metrics; not the resumable
    checkpoints) to the Hub repository `hub_model_id` (default: the directory's name
    under the token's user); returns the repository's URL."""
    from huggingface_hub import HfApi

    out = Path(out)
    problem = hub_problem(cfg)
    if problem:
        raise ValueError(problem)
    repo_id = cfg.hub_model_id or out.resolve().name
    api = HfApi()
    try:
        repo = api.create_repo(repo_id, private=cfg.hub_private_repo or None, exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=repo.repo_id, ignore_patterns=IGNORED_ON_PUSH,
                          commit_message=f"rlhfkit: upload {out.name}")
    except Exception as e:  # network, auth, permissions: the model is saved; say how to upload it later
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ValueError(f"push_to_hub {repo_id}: the upload failed ({type(e).__name__}: {first}); the model is "
                         f"saved in {out}: upload it later with `hf upload {repo_id} {out}`") from e
    return f"{api.endpoint}/{repo.repo_id}"


def publish(out: str | Path, cfg, stage: str, log=print) -> None:
    """What every trainer does after saving its model: the model card, then the upload."""
    write_model_card(out, cfg, stage)
    if getattr(cfg, "push_to_hub", False):
        url = push_to_hub(out, cfg)
        log(f"{stage}: pushed {out} to {url}")
