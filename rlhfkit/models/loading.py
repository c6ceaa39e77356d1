"""Load policies, references, reward and value models from any Hugging Face
checkpoint (local directory or hub id), with the hygiene RLHF needs: a pad token
distinct from EOS, dropout off, scalar heads initialised N(0, 1/sqrt(d+1)).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhfkit.models.tokenizer import prepare_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Keys under which a reward model stores its normalisation in config.json, so the
# directory stays a plain Hugging Face checkpoint (lm-human-preferences' gain/bias).
REWARD_MEAN_KEY = "rlhfkit_reward_mean"
REWARD_STD_KEY = "rlhfkit_reward_std"
# How a reward model scores (reward_form): "head", a scalar head on the last token of a
# sequence classifier; "mean_logprob", a causal LM's mean response log-likelihood
# times REWARD_SCALE_KEY (SimPO's implicit reward); or "logratio", the same minus a
# frozen reference model's mean log-likelihood of the same tokens (a DPO-style implicit
# reward), the reference saved in the subfolder REWARD_REFERENCE_KEY names. Stored in config.json.
REWARD_FORM_KEY = "rlhfkit_reward_form"
REWARD_SCALE_KEY = "rlhfkit_reward_scale"
REWARD_REFERENCE_KEY = "rlhfkit_reward_reference"
REWARD_FORMS = ("head", "mean_logprob", "logratio")
REFERENCE_SUBDIR = "reference"


@dataclass
class LoraOptions:
    """LoRA adapter settings (peft)."""

    r: int = 8  # adapter rank
    alpha: int = 16  # scaling numerator (scale = alpha / r)
    dropout: float = 0.0  # adapter dropout; 0 keeps log-probs deterministic for PPO
    # every linear layer but the output head, in any architecture (peft's "all-linear")
    target_modules: list[str] | str = "all-linear"


def lora_options(cfg) -> LoraOptions | None:
    """The adapter a trainer's options ask for (use_lora, lora_r, lora_alpha, lora_dropout,
    lora_target_modules), or None for full fine-tuning. The trainers' option defaults are
    LoraOptions' own."""
    if not cfg.use_lora:
        return None
    targets = list(getattr(cfg, "lora_target_modules", [LoraOptions.target_modules]))
    # peft reads "all-linear" only as a string, and a list as module names
    return LoraOptions(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=getattr(cfg, "lora_dropout", LoraOptions.dropout),
                       target_modules="all-linear" if targets == ["all-linear"] else targets)


def check_model_path(path: str, *, tokenizer: bool = False) -> None:
    """A clear error for a model argument that cannot be a model: a missing local path, a
    file, or a directory without config.json (hub ids, `org/name`, pass through)."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_file() and not p.is_dir():  # not "no such directory": it is there
        raise ValueError(f"model {path}: is a named pipe or a device, not a Hugging Face model directory")
    if p.is_file():
        raise ValueError(f"model {path}: is a file; expected a Hugging Face model directory (config.json, "
                         "*.safetensors, tokenizer) or a hub id")
    if p.is_dir():
        wanted = ("config.json", "adapter_config.json") + (("tokenizer.json", "tokenizer_config.json") if tokenizer else ())
        if not any((p / name).is_file() for name in wanted):
            raise ValueError(f"model {path}: the directory has no config.json, so it is not a Hugging Face model "
                             "directory (a finished rlhfkit stage writes one; an interrupted one does not)")
        return
    local = path.startswith(("/", "./", "../", "~")) or path.endswith("/") or path.count("/") > 1 or "\\" in path
    if local or not path:
        raise ValueError(f"model {path!r}: no such directory")


def _loading(path: str, load, tokenizer: bool = False):
    """Call load() for the model or tokenizer at `path`, turning a failure to find or read
    it into a one-line ValueError naming the path and what is wrong: a missing or
    unreadable file (OSError, e.g. an uncached hub id offline), damaged weights
    (safetensors' own error), a JSON file that does not parse or holds the wrong thing,
    a config transformers refuses, weights whose shapes do not match the config. Any
    other exception is a bug and keeps its traceback."""
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError

    check_model_path(path, tokenizer=tokenizer)
    try:
        return load()
    except FileNotFoundError:  # names the missing file already
        raise
    except SafetensorError as e:
        raise ValueError(f"model {path}: {_weights_name(path)} is damaged or not a safetensors file "
                         f"({_first_line(e)}); copy or save the model again") from e
    except RuntimeError as e:
        if not any(s in str(e) for s in ("size mismatch", "ignore_mismatched_sizes", "automatic conversion")):
            raise
        raise ValueError(f"model {path}: its weights do not fit its config.json"
                         f"{_first_mismatch(path)}; the config and the weights come from different models") from e
    except StrictDataclassError as e:  # a config.json field of the wrong type
        raise ValueError(f"model {path}: config.json: {' '.join(str(e).split())}") from e
    except (OSError, ValueError, TypeError, AttributeError) as e:
        # transformers' words for a file it cannot use (OSError, ValueError), or a JSON file
        # holding the wrong thing (TypeError, AttributeError: only when a file is found at fault)
        problem = _bad_json(path)
        if problem is None and isinstance(e, (TypeError, AttributeError)):
            raise
        raise ValueError(f"model {path}: {problem or f'cannot load it ({_first_line(e)})'}") from e


def _bad_json(path: str) -> str | None:
    """What is wrong with the first JSON file of a local model directory that does not
    parse or is not an object (config.json, tokenizer.json, ...), or None."""
    p = Path(path)
    if not p.is_dir():
        return None
    for f in sorted(p.glob("*.json"), key=lambda f: (f.name != "config.json", f.name)):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            return f"{f.name} is not UTF-8 text (byte {e.start})"
        except (ValueError, RecursionError) as e:
            return f"{f.name} is not valid JSON ({_first_line(e)})"
        except OSError as e:
            return f"{f.name} cannot be read ({e.strerror or e})"
        if not isinstance(data, dict):
            return f"{f.name} holds a JSON {type(data).__name__}, not an object"
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def _weights_name(path: str) -> str:
    """The weight file(s) of a local model directory, for a message."""
    files = sorted(p.name for p in Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
    return files[0] if len(files) == 1 else "a weights file" if not files else f"one of {', '.join(files)}"


def _first_mismatch(path: str) -> str:
    """' (first: <name> is [a, b] in the weights, [c, d] by config.json)' for the first
    tensor whose shape differs from the model config.json describes (built without
    memory, on the meta device), or '' when that cannot be told."""
    try:
        from safetensors import safe_open

        config = AutoConfig.from_pretrained(path)
        with torch.device("meta"):
            expected = {k: list(v.shape) for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
        for f in sorted(Path(path).glob("*.safetensors")):
            with safe_open(str(f), "pt") as st:
                for key in st.keys():
                    got = list(st.get_slice(key).get_shape())
                    want = next((v for k, v in expected.items() if k == key or k.endswith("." + key)
                                 or key.endswith("." + k)), None)
                    if want is not None and want != got:
                        return f" (first: {key} is {got} in {f.name}, {want} by config.json)"
    except Exception:  # noqa: BLE001 - only a detail for the message; the error itself is raised anyway
        return ""
    return ""


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")


def _check_tokenizer_files(path: str) -> None:
    """A local model directory with no tokenizer file at all: say so (transformers would
    guess a slow tokenizer and ask to install sentencepiece)."""
    p = Path(path).expanduser()
    if p.is_dir() and not any((p / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"model {path}: no tokenizer files (tokenizer.json or tokenizer_config.json); copy them "
                         "from the model it was trained from, or save the tokenizer there with "
                         "tokenizer.save_pretrained")


def load_tokenizer(path: str, *, trust_remote_code: bool = False, chat_template: str | None = None):
    check_model_path(path, tokenizer=True)
    _check_tokenizer_files(path)
    tokenizer = _loading(path, lambda: AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code),
                         tokenizer=True)
    prepare_tokenizer(tokenizer, chat_template=chat_template)
    return tokenizer


def disable_dropout(model: nn.Module) -> None:
    """Dropout off in policy, reference, value and reward models (docs/ppo.md): with
    it on, PPO's first ratio is not 1 and the KL estimate is biased."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    for name in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop",
                 "attn_pdrop", "hidden_dropout_prob", "attention_probs_dropout_prob", "summary_first_dropout"):
        if config is not None and isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)


def _sync_special_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is None:
            continue
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.eos_token_id = tokenizer.eos_token_id


def _apply_common(model: PreTrainedModel, tokenizer, *, dropout: bool, gradient_checkpointing: bool,
                  lora: LoraOptions | None, task_type: str) -> PreTrainedModel:
    _sync_special_tokens(model, tokenizer)
    if not dropout:
        disable_dropout(model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        modules_to_save = ["score"] if task_type == "SEQ_CLS" else None
        model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=lora.target_modules, task_type=task_type,
                                                 modules_to_save=modules_to_save))
    return model


def adapter_base(path: str) -> str | None:
    """The base model of a directory that holds only a PEFT adapter (what
    --save_adapter_only writes: adapter_config.json, no config.json), else None."""
    p = Path(path).expanduser()
    if not (p / "adapter_config.json").is_file() or (p / "config.json").is_file():
        return None
    base = json.loads((p / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"model {path}: adapter_config.json names no base_model_name_or_path")
    return base


def _merged_adapter(path: str, base: str, dtype: str, trust_remote_code: bool) -> PreTrainedModel:
    """The causal LM `base` with the adapter saved in `path` merged into its weights."""
    from peft import PeftModel

    model = load_causal_lm(base, None, dtype=dtype, trust_remote_code=trust_remote_code)
    return PeftModel.from_pretrained(model, path).merge_and_unload()


def load_causal_lm(path: str, tokenizer, *, dtype: str = "float32", dropout: bool = False,
                   gradient_checkpointing: bool = False, lora: LoraOptions | None = None,
                   trust_remote_code: bool = False) -> PreTrainedModel:
    """A policy or reference model from any AutoModelForCausalLM checkpoint; a directory
    holding only an adapter is read as its base model with the adapter merged."""
    base = adapter_base(path)
    if base is not None:
        model = _merged_adapter(path, base, dtype, trust_remote_code)
    else:
        model = _loading(path, lambda: AutoModelForCausalLM.from_pretrained(
            path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, use_safetensors=_prefer_safetensors(path)))
    if tokenizer is None:  # the bare weights (an adapter's base, merged by the caller)
        return model
    return _apply_common(model, tokenizer, dropout=dropout, gradient_checkpointing=gradient_checkpointing,
                         lora=lora, task_type="CAUSAL_LM")


def _prefer_safetensors(path: str) -> bool | None:
    """Weights only through safetensors for local directories (no pickle)."""
    p = Path(path)
    if p.is_dir():
        if not any(p.glob("*.safetensors")):
            raise FileNotFoundError(f"{path}: no *.safetensors weights; rlhfkit loads local weights only "
                                    "through safetensors (convert with model.save_pretrained)")
        return True
    return None


def init_scalar_head(linear: nn.Linear) -> None:
    """N(0, 1/sqrt(d+1)) as lm-human-preferences initialises its reward head."""
    d = linear.weight.shape[-1]
    with torch.no_grad():
        linear.weight.normal_(0.0, 1.0 / math.sqrt(d + 1))
        if linear.bias is not None:
            linear.bias.zero_()


def scalar_head(model: nn.Module) -> nn.Linear:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name in ("score", "classifier", "v_head"):
        head = getattr(base, name, None)
        if isinstance(head, nn.Linear):
            return head
        if head is not None and isinstance(getattr(head, "modules_to_save", None), nn.ModuleDict):
            return head.modules_to_save["default"]
        if head is not None and isinstance(getattr(head, "original_module", None), nn.Linear):
            return head.original_module
    raise ValueError(f"{type(base).__name__} has no scalar head (score/classifier)")


def load_scalar_model(path: str, tokenizer, *, new_head: str = "normal", dtype: str = "float32",
                      gradient_checkpointing: bool = False, lora: LoraOptions | None = None,
                      trust_remote_code: bool = False) -> PreTrainedModel:
    """A reward or value model: AutoModelForSequenceClassification with one label.

    From a causal-LM checkpoint the trunk is kept and a new scalar head is
    initialised (`new_head`): "normal" = N(0, 1/sqrt(d+1)) for reward models,
    "zero" for a value head (lm-human-preferences). A checkpoint that already is a
    one-label sequence classifier (a trained reward model) keeps its head: a value
    model initialised from the reward model starts from its scores (N+ details).
    """
    adapter_of = adapter_base(path)  # an adapter-only SFT directory: its base, the adapter merged into the trunk
    source = adapter_of or path
    config = _loading(source, lambda: AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code))
    already_scalar = is_sequence_classifier(config) and adapter_of is None
    config.num_labels = 1
    config.pad_token_id = tokenizer.pad_token_id
    model = _loading(source, lambda: AutoModelForSequenceClassification.from_pretrained(
        source, config=config, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
        use_safetensors=_prefer_safetensors(source)))
    if adapter_of is not None:
        trunk = _merged_adapter(path, adapter_of, dtype, trust_remote_code).base_model.state_dict()
        model.base_model.load_state_dict(trunk)
    if not already_scalar:
        head = scalar_head(model)
        if new_head == "zero":
            with torch.no_grad():
                head.weight.zero_()
        else:
            init_scalar_head(head)
    return _apply_common(model, tokenizer, dropout=False, gradient_checkpointing=gradient_checkpointing,
                         lora=lora, task_type="SEQ_CLS")


def is_sequence_classifier(config) -> bool:
    """Whether a checkpoint's config names a sequence-classification architecture."""
    return any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))


def model_config(model_or_config):
    """The transformers config of a model, through DDP and PEFT wrappers (a config passes through)."""
    model = getattr(model_or_config, "module", model_or_config)  # DDP
    model = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    return getattr(model, "config", model)


def reward_form(model_or_config) -> tuple[str, float]:
    """(form, scale) of a reward model: ("head", 1.0) unless its config says otherwise."""
    config = model_config(model_or_config)
    form = getattr(config, REWARD_FORM_KEY, None) or "head"
    if form not in REWARD_FORMS:
        raise ValueError(f"{REWARD_FORM_KEY}={form!r} in the model's config.json: expected one of {REWARD_FORMS}")
    return form, float(getattr(config, REWARD_SCALE_KEY, 1.0) or 1.0)


class LogRatioRewardModel(nn.Module):
    """A reward_form=logratio reward model: the trained causal LM (`policy`) and the
    frozen reference it is measured against (the model it started from). Its `config`
    is the policy's, so reward_form, the stored normalisation and the scale read as
    for any reward model; `reference` never trains and stays in eval mode."""

    def __init__(self, policy: nn.Module, reference: nn.Module):
        super().__init__()
        self.policy = policy
        self.reference = reference.eval().requires_grad_(False)

    @property
    def config(self):
        return model_config(self.policy)

    def train(self, mode: bool = True):
        super().train(mode)
        self.reference.eval()
        return self


def reference_path(path: str | Path, config) -> str:
    """Where a logratio reward model at `path` keeps its reference (a subfolder)."""
    sub = getattr(config, REWARD_REFERENCE_KEY, None) or REFERENCE_SUBDIR
    return str(Path(path) / sub)


def load_reward_model(path: str, tokenizer, *, dtype: str = "float32",
                      trust_remote_code: bool = False) -> nn.Module:
    """A trained reward model of any form, as its config.json names it: a one-label
    sequence classifier ("head"), a causal LM that scores by mean log-likelihood
    ("mean_logprob"), or that causal LM with its frozen reference ("logratio")."""
    config = _loading(path, lambda: AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code))
    if not is_sequence_classifier(config) and reward_form(config)[0] == "head":  # scores from a fresh random head
        names = ", ".join(config.architectures or []) or "no architectures listed"
        raise ValueError(f"reward model {path}: has no trained score head (config.json: {names}); train one "
                         f"with `rlhfkit rm --model {path} --data comparisons.jsonl`, or score with "
                         "--reward_functions instead")
    common = dict(dtype=dtype, trust_remote_code=trust_remote_code)
    loaders = {
        "head": lambda: load_scalar_model(path, tokenizer, **common),
        "mean_logprob": lambda: load_causal_lm(path, tokenizer, **common),
        "logratio": lambda: LogRatioRewardModel(load_causal_lm(path, tokenizer, **common),
                                                load_causal_lm(reference_path(path, config), tokenizer, **common)),
    }
    return loaders[reward_form(config)[0]]()


def save_reward_model(model: nn.Module, tokenizer, path: str | Path, merge_lora: bool = True) -> None:
    """A reward model as a plain Hugging Face directory; a logratio model's reference
    goes into its subfolder, so the directory is all a user needs to score with it."""
    if isinstance(model, LogRatioRewardModel):
        save_pretrained_dir(model.policy, tokenizer, path, merge_lora=merge_lora)
        save_pretrained_dir(model.reference, tokenizer, reference_path(path, model.config))
        return
    save_pretrained_dir(model, tokenizer, path, merge_lora=merge_lora)


def reward_normalisation(model: nn.Module) -> tuple[float, float]:
    """(mean, std) stored with a reward model; (0, 1) when none was stored."""
    config = model_config(model)
    return float(getattr(config, REWARD_MEAN_KEY, 0.0) or 0.0), float(getattr(config, REWARD_STD_KEY, 1.0) or 1.0)


@torch.no_grad()
def fold_reward_normalisation(model: nn.Module) -> bool:
    """Fold the (mean, std) stored with a head-form reward model into its scalar head,
    so that plain transformers (AutoModelForSequenceClassification) reads the scores
    rlhfkit uses: w <- w / std, b <- (b - mean) / std, then the stored std is 1 and the
    stored mean 0. rlhfkit reads the folded model exactly as before ((raw - mean) / std).

    A head without a bias (every decoder-only classifier in transformers: Llama,
    GPT-2, Qwen, ...) cannot hold the mean: the std is folded, the mean kept as mean
    / std in config.json, and plain transformers' scores are rlhfkit's plus that
    constant (same order, same differences). Returns whether the whole normalisation
    now sits in the head; a mean_logprob reward model has no head and is left as it is."""
    if reward_form(model)[0] != "head":
        return False
    config = model_config(model)
    mean, std = reward_normalisation(model)
    head = scalar_head(model)
    head.weight.div_(std)
    if head.bias is not None:
        head.bias.sub_(mean).div_(std)
        mean = 0.0
    setattr(config, REWARD_MEAN_KEY, mean / std)
    setattr(config, REWARD_STD_KEY, 1.0)
    return mean == 0.0


def count_parameters(model: nn.Module) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def save_pretrained_dir(model: nn.Module, tokenizer, path: str | Path, *, merge_lora: bool = True) -> None:
    """A plain Hugging Face directory (safetensors, config, tokenizer + chat template).
    Written into a temporary directory beside the files, each file fsync'd and renamed
    into place, so a kill never leaves a torn weight file (an earlier file stays whole).
    A full disk, however torch, safetensors or the OS word it, is a DiskFullError naming
    the directory and the bytes needed, with the temporary directory removed."""
    import os
    import shutil

    from rlhfkit.io import disk_full_message, fsync_dir, nbytes, out_of_space
    from rlhfkit.trainers.errors import DiskFullError

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if merge_lora and hasattr(model, "merge_and_unload"):
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    tmp = path / f".{path.name}.tmp-save-{os.getpid()}"  # removed at the next start if a kill leaves it
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        files = sorted((f for f in tmp.rglob("*") if f.is_file()),
                       key=lambda f: (f.suffix not in (".safetensors", ".bin"), str(f)))
        # safetensors writes the weights through a private temporary file (mode 0600); give them
        # the mode open() gave config.json, so the directory reads the same for everyone
        mode = (tmp / "config.json").stat().st_mode & 0o777 if (tmp / "config.json").exists() else None
        for f in files:
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
            if mode is not None:
                os.chmod(f, mode)
        for f in files:  # configs last: a directory whose config is new has its new weights
            target = path / f.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, target)
        fsync_dir(path)
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a full disk
        if not out_of_space(e):
            raise
        raise DiskFullError(f"could not save the model: {disk_full_message(path, nbytes(model.state_dict()))}") \
            from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
