"""The options every training stage shares (TrainConfig), checked at construction."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import ClassVar

from rlhfkit.config import ConfigError, check_options, option
from rlhfkit.models.loading import LoraOptions
from rlhfkit.trainers.checkpoint import RESUME_MODES
from rlhfkit.trainers.model_card import hub_problem
from rlhfkit.trainers.optim import SCHEDULERS
from rlhfkit.trainers.trackers import tracker_problem

DTYPE_NAMES = ("float32", "bfloat16", "float16")  # rlhfkit.models.loading.DTYPES


# More optimizer steps than any run could take (a million steps a second for eleven
# days): a plan this long is a mistake in num_epochs (total_episodes for PPO), refused
# before anything loads.
MAX_STEPS = 10 ** 12

@dataclass
class TrainConfig:
    """Options every training stage shares."""

    output_dir: str = option("runs/out", "directory for the trained model, metrics.jsonl and checkpoints")
    seed: int = option(0, "random seed (data order, initialisation, sampling)")
    learning_rate: float = option(1e-4, "peak learning rate (AdamW)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    adam_eps: float = option(1e-8, "AdamW epsilon")
    warmup_ratio: float = option(0.0, "fraction of optimizer steps spent warming up linearly")
    max_grad_norm: float = option(1.0, "gradient clipping threshold (<= 0 disables)")
    max_length: int = option(512, "longest tokenised sequence; longer records are an error (or skipped with on_error=skip)")
    dataset_train_split: str = option("", "split to train on when the data is a DatasetDict (a saved datasets "
                                      "directory, a hub id, or a JSON object of splits); empty: train")
    chat_template: str = option("", "Jinja chat template to use instead of the tokenizer's (for message data)")
    use_lora: bool = option(False, "train a LoRA adapter instead of all weights (merged into the saved model "
                            "unless save_adapter_only)")
    lora_r: int = option(LoraOptions.r, "LoRA rank")
    lora_alpha: int = option(LoraOptions.alpha, "LoRA alpha (scale alpha / r)")
    lora_dropout: float = option(LoraOptions.dropout, "LoRA dropout (0 keeps log-probs deterministic: PPO's first "
                                 "ratio is then exactly 1)")
    lora_target_modules: list[str] = option([LoraOptions.target_modules], "modules that get an adapter: names or "
                                            "name suffixes (q_proj,v_proj), or all-linear (every linear layer but "
                                            "the output head)")
    save_adapter_only: bool = option(False, "with use_lora: save the PEFT adapter (adapter_config.json, "
                                     "adapter_model.safetensors) instead of merging it into the model")
    log_every: int = option(10, "write metrics every N optimizer steps")
    checkpoint_every: int = option(0, "save a resumable checkpoint every N optimizer steps (0: by time only)")
    checkpoint_minutes: float = option(5.0, "also save a resumable checkpoint when this many minutes have passed "
                                       "since the last one (0: by steps only), so a kill loses at most that much")
    resume: str = option("auto", "auto: resume from the newest checkpoint when it was made with the same options "
                         "and data, else refuse and name what changed; force: resume from it anyway, with this "
                         "run's options applied (learning rate, schedule, ...)")
    keep_checkpoints: int = option(2, "how many recent checkpoints to keep on disk")
    dtype: str = option("float32", "model weights dtype: float32, bfloat16 or float16")
    mixed_precision: str = option("no", "Accelerate mixed precision: no, bf16 or fp16")
    gradient_checkpointing: bool = option(False, "recompute activations in backward to save memory")
    report_to: list[str] = option([], "experiment trackers (Accelerate's), e.g. tensorboard,wandb: tensorboard, "
                                  "wandb, trackio, mlflow, comet_ml, aim, clearml, dvclive, swanlab, all "
                                  "(every installed one) or none; each must be installed")
    on_error: str = option("raise", "bad data records: raise (default) or skip and report counts")
    trust_remote_code: bool = option(False, "allow model code from the checkpoint (off: safer)")
    progress: bool = option(True, "show a progress bar")
    num_threads: int = option(0, "torch CPU threads (0: torch's default)")
    max_nonfinite_steps: int = option(3, "skip a step whose loss or gradient is not finite; stop after this many in a row")
    push_to_hub: bool = option(False, "upload the saved model (with its model card, config and metrics; not the "
                               "checkpoints) to the Hugging Face Hub when training ends (log in first: hf auth login)")
    hub_model_id: str = option("", "Hub repository for --push_to_hub, user/name or name (default: the output "
                               "directory's name under your user)")
    hub_private_repo: bool = option(False, "create the Hub repository private")

    # Checked at construction (rlhfkit.config.check_options); subclasses add theirs.
    RULES: ClassVar[dict] = {
        "learning_rate": "> 0", "weight_decay": ">= 0", "adam_eps": "> 0", "warmup_ratio": "[0, 1]",
        "max_grad_norm": "finite", "per_device_batch_size": ">= 1", "gradient_accumulation_steps": ">= 1",
        "num_epochs": "> 0", "max_length": ">= 2", "eval_fraction": "[0, 1)", "eval_every": ">= 0",
        "log_every": ">= 1", "checkpoint_every": ">= 0", "checkpoint_minutes": ">= 0", "keep_checkpoints": ">= 1",
        "dtype": DTYPE_NAMES, "mixed_precision": ("no", "bf16", "fp16", "fp8"), "on_error": ("raise", "skip"),
        "num_threads": ">= 0", "max_nonfinite_steps": ">= 1", "resume": RESUME_MODES, "max_steps": ">= 0",
        "lora_dropout": "[0, 1)", "lora_target_modules": lambda v: None if v else "lora_target_modules: name at "
        "least one module (or all-linear)",
        "lr_scheduler": lambda v: _scheduler_problem(v), "report_to": lambda v: tracker_problem(v), "lora_r": ">= 1", "lora_alpha": "> 0",
    }

    def __post_init__(self) -> None:
        check_options(self)
        problem = hub_problem(self)  # offline: refused now, not after training
        if problem:
            raise ConfigError(problem)
        if self.save_adapter_only and not self.use_lora:
            raise ConfigError("save_adapter_only needs use_lora (there is no adapter to save)")


@dataclass
class DatasetTrainConfig(TrainConfig):
    """The options of stages that make passes over a dataset (SFT, reward model, DPO);
    PPO counts episodes instead (total_episodes, rollout_batch_size)."""

    per_device_batch_size: int = option(8, "examples per forward pass on each process")
    gradient_accumulation_steps: int = option(1, "forward passes accumulated per optimizer step")
    num_epochs: float = option(1.0, "passes over the training data (fractions allowed)")
    max_steps: int = option(0, "optimizer steps to train for, instead of num_epochs (0: num_epochs decides); the "
                            "data is passed over as often as needed")
    group_by_length: bool = option(False, "batch examples of similar length together (sorted within windows of "
                                   "50 batches of a random order, batches then shuffled): less padding, same data")
    eval_fraction: float = option(0.05, "share of records held out for validation when neither eval_data nor "
                                  "dataset_test_split is given")
    dataset_test_split: str = option("", "split of the data to validate on when it is a DatasetDict (e.g. test); "
                                     "empty: eval_data, else eval_fraction of the training split")
    eval_every: int = option(0, "evaluate every N optimizer steps (0: at the end of training only)")


def _scheduler_problem(name: str) -> str | None:
    if name in SCHEDULERS:
        return None
    from transformers import SchedulerType

    known = "a transformers schedule rlhfkit does not implement" if name in {t.value for t in SchedulerType} \
        else "not a learning-rate schedule"
    close = difflib.get_close_matches(str(name), SCHEDULERS, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"lr_scheduler {name!r} is {known}; choose one of {', '.join(SCHEDULERS)}{hint}"
