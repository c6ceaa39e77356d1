"""Configuration: one dataclass per stage, a help text on every field, YAML files
plus command-line overrides, unknown keys rejected with a did-you-mean
(docs/configuration.md).

Fields are declared with `option(default, "help")`; nested dataclasses (the
pipeline's `sft`, `rm`, `ppo`) are addressed with dotted names on the command
line (`--ppo.kl_coef 0.05`) and as nested mappings in YAML. `--help` lists a
command's own options and one line per stage; `--help-all` lists every option.
Option names users bring from Hugging Face TrainingArguments and TRL are read as
rlhfkit's where they mean the same (ALIASES) and refused naming rlhfkit's option
where they do not (INSTEAD). A parent config lists in SETS_ITSELF the stage
options it sets itself; giving one is an error.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A bad configuration key or value; the message names the key and the file."""


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs) -> Any:  # noqa: A002
    """A dataclass field with a help text (shown by `--help`)."""
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def nested(cls: type, help: str = "") -> Any:  # noqa: A002
    return dataclasses.field(default_factory=cls, metadata={"help": help})


def did_you_mean(key: str, known: list[str]) -> str:
    """' (did you mean 'x'?)' for the known name closest to `key`, or ''."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ----------------------------------------------------------------------------- names users bring

# Hugging Face TrainingArguments / TRL names read as rlhfkit's where the meaning is the
# same: name -> rlhfkit names, the first one a config class has is used.
ALIASES: dict[str, tuple[str, ...]] = {
    "model_name_or_path": ("model",),
    "sft_model_path": ("model",),
    "reward_model_path": ("reward_model",),
    "dataset_name": ("data", "prompts"),
    "dataset_text_field": ("text_column",),
    "num_train_epochs": ("num_epochs",),
    "batch_size": ("per_device_batch_size",),  # the label commands' old name
    "output_dir": ("out",),  # label commands write files: --output_dir names the file (or a directory for it)
    "per_device_train_batch_size": ("per_device_batch_size",),
    "logging_steps": ("log_every",),
    "save_steps": ("checkpoint_every",),
    "eval_steps": ("eval_every",),
    "save_total_limit": ("keep_checkpoints",),
    "lr_scheduler_type": ("lr_scheduler",),
    "adam_epsilon": ("adam_eps",),
    "torch_dtype": ("dtype",),
    "use_peft": ("use_lora",),
    "num_ppo_epochs": ("ppo_epochs",),
    "num_mini_batches": ("num_minibatches",),
    "cliprange": ("clip_range",),
    "cliprange_value": ("clip_range_value",),
    "num_generations": ("samples_per_prompt", "n"),
    "max_completion_length": ("response_length", "max_new_tokens"),
    "epsilon_high": ("clip_range_high",),
    "loss_type": ("loss",),
    "precompute_ref_log_probs": ("precompute_ref_logprobs",),
    "desirable_weight": ("kto_desirable_weight",),
    "undesirable_weight": ("kto_undesirable_weight",),
}

# Names users bring whose meaning differs from any rlhfkit option: name -> (rlhfkit
# field, what to use instead) pairs; the first whose field the class has is shown.
_EVAL = (("eval_every", "--eval_every N (every N optimizer steps; 0: at the end)"),)
_SAVE = (("checkpoint_every", "--checkpoint_every N (optimizer steps) or --checkpoint_minutes M"),)
INSTEAD: dict[str, tuple[tuple[str, str], ...]] = {
    "max_steps": (("total_episodes", "--total_episodes (responses over the run; a PPO step takes "
                                     "rollout_batch_size of them)"),),
    "bf16": (("mixed_precision", "--mixed_precision bf16 (or --dtype bfloat16 for bfloat16 weights)"),),
    "fp16": (("mixed_precision", "--mixed_precision fp16 (or --dtype float16 for float16 weights)"),),
    "warmup_steps": (("warmup_ratio", "--warmup_ratio (a share of the optimizer steps)"),),
    "eval_strategy": _EVAL,
    "evaluation_strategy": _EVAL,
    "do_eval": _EVAL,
    "save_strategy": _SAVE,
    "logging_strategy": (("log_every", "--log_every N (optimizer steps)"),),
    "per_device_eval_batch_size": (("per_device_batch_size", "--per_device_batch_size (evaluation uses it too)"),),
}


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def alias_target(cls: type, name: str) -> str | None:
    """The rlhfkit option `name` stands for in `cls` (an ALIASES entry), or None."""
    names = _field_names(cls)
    if name in names:
        return None
    return next((t for t in ALIASES.get(name, ()) if t in names), None)


def instead_hint(cls: type, name: str) -> str | None:
    """What to use in `cls` for a name users bring that rlhfkit spells otherwise, or None."""
    names = _field_names(cls)
    if name in names:
        return None
    return next((text for field, text in INSTEAD.get(name, ()) if field in names), None)


def _leaf_class(cls: type, dotted: str) -> tuple[type, str] | None:
    """(config class, option name) that a dotted name addresses, or None."""
    *parents, leaf = dotted.split(".")
    for p in parents:
        tp = _type_hints(cls).get(p) if dataclasses.is_dataclass(cls) else None
        if not _is_dataclass_type(tp):
            return None
        cls = tp
    return cls, leaf


def _resolve_aliases(cls: type, data: dict, where: str, prefix: str) -> dict:
    """`data` with ALIASES names replaced by rlhfkit's; INSTEAD names are errors."""
    out: dict = {}
    given: dict = {}  # rlhfkit name -> the name it was given as
    for key, value in data.items():
        target = alias_target(cls, key) if isinstance(key, str) else None
        if target is None:
            hint = instead_hint(cls, key) if isinstance(key, str) else None
            if hint:
                raise ConfigError(f"{where}: {prefix}{key} is not an rlhfkit option; use {hint}")
            target = key
        if target in out:
            raise ConfigError(f"{where}: {prefix}{given[target]} and {prefix}{key} are the same option; give one")
        out[target], given[target] = value, key
    return out


# ----------------------------------------------------------------------------- options a parent sets

def sets_itself(cls: type, stage: str) -> set[str]:
    """The options of nested `stage` that the parent config `cls` sets itself: its
    SETS_ITSELF mapping, stage name (or "*" for every stage) -> option names."""
    sets = getattr(cls, "SETS_ITSELF", None) or {}
    return set(sets.get("*", ())) | set(sets.get(stage, ()))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def check_sets_itself(cfg: Any) -> None:
    """Refuse a stage option the parent config sets itself (SETS_ITSELF) when it was
    given a value other than its default: the parent would drop it silently. Called
    from the parent config's __post_init__."""
    if not getattr(type(cfg), "SETS_ITSELF", None):
        return
    for f in dataclasses.fields(cfg):
        stage = getattr(cfg, f.name)
        if not dataclasses.is_dataclass(stage) or isinstance(stage, type):
            continue
        stage_fields = {g.name: g for g in dataclasses.fields(stage)}
        for name in sorted(sets_itself(type(cfg), f.name)):
            if name in stage_fields and getattr(stage, name) != _default(stage_fields[name]):
                raise ConfigError(f"{f.name}.{name} is set by this command itself (from its own options or an "
                                  "earlier stage), so it cannot be given; --help lists the command's own options")


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML or command-line value to the field's declared type."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in get_args(tp):
                return None
        for arg in args:
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: cannot read {value!r} as {tp}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            hint = did_you_mean(str(value), list(map(str, choices)))
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}{hint}")
        return value
    if origin in (list, tuple):
        (item_tp, *_rest) = get_args(tp) or (str,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, key) for v in value]
    if origin is dict or tp is dict:
        key_tp, value_tp = get_args(tp) or (str, Any)
        if isinstance(value, str):  # the command line: name=value,name=value
            pairs = [p for p in value.split(",") if p]
            if not all("=" in p for p in pairs):
                raise ConfigError(f"{key}: expected name=value pairs separated by commas, got {value!r}")
            value = dict(p.split("=", 1) for p in pairs)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(k, key_tp, key): _coerce(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[C], data: dict[str, Any], *, where: str = "config", prefix: str = "") -> C:
    """Build `cls` from a (possibly nested) mapping; unknown keys are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {prefix or cls.__name__}, got {type(data).__name__}")
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in _resolve_aliases(cls, data, where, prefix).items():
        full = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {full!r}{did_you_mean(key, list(fields))}")
        tp = hints[key]
        if _is_dataclass_type(tp):
            kwargs[key] = from_dict(tp, value or {}, where=where, prefix=f"{full}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{where}: {full}")
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(prefix + m for m in missing)}")
    try:
        cfg = cls(**kwargs)  # __post_init__ checks the values (check_options, check_sets_itself)
    except ConfigError as e:  # a value the class refused: say where it came from
        raise ConfigError(f"{where}: {prefix}{e}") from None
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.exists() and not p.is_file() and not p.is_dir():  # opening a named pipe would wait for a writer
        raise ConfigError(f"{path}: not a regular file (a named pipe or a device?); --config takes a YAML file")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; --config takes a YAML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                          "save the recipe as UTF-8") from None
    except OSError as e:  # permission denied, a named pipe, ...
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:  # one line: where and what, without the parser's multi-line context
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{path}: not valid YAML: {where}{what}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of option names to values")
    return data


def save_yaml(cfg: Any, path: str | Path) -> None:
    from rlhfkit.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _flat_fields(cls: type, prefix: str = "") -> list[tuple[str, Any, dataclasses.Field]]:
    """(dotted name, type, field) for every leaf option of a (nested) config class."""
    hints = _type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            out.extend(_flat_fields(tp, f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", tp, f))
    return out


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        data = data.setdefault(p, {})
    data[leaf] = value


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "{" + ",".join(map(str, get_args(tp))) + "}"
    if origin in (typing.Union, types.UnionType):
        return "|".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        return "LIST"
    return getattr(tp, "__name__", str(tp)).upper()


def _format_default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return repr(f.default_factory())
    return "required"


def _stage_classes(cls: type, prefix: str = "") -> list[tuple[str, type]]:
    """(dotted prefix, class) for `cls` and every nested config class under it."""
    out = [(prefix, cls)]
    hints = _type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            out.extend(_stage_classes(tp, f"{prefix}{f.name}."))
    return out


def _value_kwargs(tp: Any) -> dict:
    """argparse settings of an option: a bool may be given bare (`--packing` = true)."""
    return {"nargs": "?", "const": "true"} if tp is bool else {}


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--name` option per leaf field, documented with its help text and default.
    Stage options (nested fields) are listed by `--help-all` only; options a parent
    sets itself (SETS_ITSELF) and ALIASES names are accepted but not listed."""
    parser.usage = "%(prog)s [--config FILE] [--OPTION VALUE ...]"
    parser.add_argument("--config", metavar="FILE", help="YAML file of options; command-line options override it")
    parser.add_argument("--help-all", action=_HelpAll, help="show every option, stage options included, and exit")
    hints = _type_hints(cls)
    stages: dict[str, tuple[str, int]] = {}
    for top in dataclasses.fields(cls):
        if not _is_dataclass_type(hints[top.name]):
            continue
        group = parser.add_argument_group(f"--{top.name}.* ({top.metadata.get('help', '')})")
        hidden = sets_itself(cls, top.name)
        shown = 0
        for name, tp, f in _flat_fields(hints[top.name], f"{top.name}."):
            listed = name.rsplit(".", 1)[-1] not in hidden
            _add_option(group, name, tp, f, listed).stage = top.name
            shown += listed
        stages[top.name] = (top.metadata.get("help", ""), shown)
    for name, tp, f in _flat_fields(cls):
        if "." not in name:
            _add_option(parser, name, tp, f, True)
    for prefix, klass in _stage_classes(cls):
        klass_hints = _type_hints(klass)
        for alias in ALIASES:
            target = alias_target(klass, alias)
            if target is not None and not _is_dataclass_type(klass_hints[target]):
                parser.add_argument(f"--{prefix}{alias}", dest=f"{prefix}{alias}", default=argparse.SUPPRESS,
                                    help=argparse.SUPPRESS, **_value_kwargs(klass_hints[target]))
    if isinstance(parser, ConfigArgumentParser):
        parser.config_class, parser.stages = cls, stages


def _add_option(parser, name: str, tp: Any, f: dataclasses.Field, listed: bool) -> argparse.Action:
    help_text = f"{f.metadata.get('help', '')} (default: {_format_default(f)})".replace("%", "%%")  # argparse %-formats
    flags = [f"--{name}"] + (["--out"] if name == "output_dir" else [])
    return parser.add_argument(*flags, dest=name, metavar=_type_name(tp), default=argparse.SUPPRESS,
                               help=help_text if listed else argparse.SUPPRESS, **_value_kwargs(tp))


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """Merge the YAML file named by --config with explicit command-line options."""
    data: dict[str, Any] = {}
    where = "command line"
    config_path = getattr(args, "config", None)
    if config_path:
        data = load_yaml(config_path)
        where = str(config_path)
    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "command", "func")}
    for dotted, value in overrides.items():
        _set_dotted(data, dotted, value)
    return from_dict(cls, data, where=where)


def parse_config(cls: type[C], argv: list[str] | None = None, prog: str | None = None) -> C:
    """`cls` from a command line: the same options, help and checks as `rlhfkit <command>`."""
    parser = ConfigArgumentParser(prog=prog, description=(cls.__doc__ or "").strip().split("\n")[0])
    add_config_arguments(parser, cls)
    return config_from_args(cls, parser.parse_args(argv))


class _HelpAll(argparse.Action):
    """`--help-all`: the help with every stage option listed."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):  # noqa: A002
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser._print_message(parser.format_help(all_options=True), sys.stdout)
        parser.exit()


def _underscored(arg: str) -> str:
    """`--learning-rate=1` -> `--learning_rate=1` (HfArgumentParser accepts both spellings)."""
    if not arg.startswith("--") or arg == "--help-all":
        return arg
    name, eq, value = arg.partition("=")
    return "--" + name[2:].replace("-", "_") + eq + value


class ConfigArgumentParser(argparse.ArgumentParser):
    """argparse with a did-you-mean for misspelt options (and no silent prefix matching:
    `--learning_rat` is an error, not `--learning_rate`), a short `--help` (stage options
    behind `--help-all`) and `--dashed-names` read as `--underscored_names`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        # `--learning_rate -1e-4` is a value, not an option: argparse's own pattern knows
        # only -1 and -.5, so an exponent or inf read as a missing value (the range check
        # then names the option)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$",
                                                   re.IGNORECASE)
        self.config_class: type | None = None  # set by add_config_arguments
        self.stages: dict[str, tuple[str, int]] = {}  # stage -> (help, options listed)

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args([_underscored(a) for a in args], namespace)

    def format_help(self, all_options: bool = False) -> str:
        hidden = [] if all_options else [a for a in self._actions if getattr(a, "stage", None)]
        saved = [a.help for a in hidden]
        for action in hidden:
            action.help = argparse.SUPPRESS
        try:
            text = super().format_help()
        finally:
            for action, help_text in zip(hidden, saved):
                action.help = help_text
        if self.stages and not all_options:
            width = max(len(name) for name in self.stages) + 8
            lines = [f"  {'--' + name + '.*':<{width}}{help_text} ({n} options)"
                     for name, (help_text, n) in self.stages.items()]
            text += "\nstage options (--help-all lists them):\n" + "\n".join(lines) + "\n"
        return text

    def error(self, message: str) -> typing.NoReturn:
        if "unrecognized arguments" in message:
            known = [s for a in self._actions for s in a.option_strings]
            wrong = [w for w in message.split(":", 1)[1].split() if w.startswith("--")]
            hints = [self._hint(w.split("=")[0], known) for w in wrong]
            if hints:
                message = f"unknown option(s): {', '.join(hints)}"
        super().error(message)

    def _hint(self, flag: str, known: list[str]) -> str:
        """`--max_steps: use --num_epochs (...)` for a name rlhfkit spells otherwise, else
        a did-you-mean on the known options."""
        leaf = _leaf_class(self.config_class, flag[2:]) if self.config_class else None
        instead = instead_hint(*leaf) if leaf else None
        if instead:
            stage = flag[2:].rpartition(".")[0]
            return f"{flag} (not an rlhfkit option; use {instead.replace('--', f'--{stage}.' if stage else '--')})"
        return f"{flag}{did_you_mean(flag, known)}"


def check_divisible(name: str, value: int, divisor_name: str, divisor: int) -> int:
    """value // divisor, refusing a remainder: derived batch sizes must be exact."""
    if divisor <= 0:
        raise ConfigError(f"{divisor_name} must be positive, got {divisor}")
    if value % divisor:
        raise ConfigError(f"{name} ({value}) must be divisible by {divisor_name} ({divisor})")
    return value // divisor


# ----------------------------------------------------------------------------- option ranges

_BOUNDS = {  # rule -> (test, what the value must be)
    "> 0": (lambda v: v > 0, "positive"),
    ">= 0": (lambda v: v >= 0, ">= 0"),
    ">= 1": (lambda v: v >= 1, ">= 1"),
    ">= 2": (lambda v: v >= 2, ">= 2"),
    "[0, 1]": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "[0, 1)": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "(0, 1]": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "[0, 0.5)": (lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
    "finite": (lambda v: True, "a finite number"),
}


def option_problem(name: str, value: Any, rule: Any) -> str | None:
    """What is wrong with `value` for option `name` under `rule`, or None. A rule is one
    of the _BOUNDS strings (numbers must also be finite; a list is checked item by item),
    a tuple of allowed values, or a function value -> message | None."""
    if callable(rule):
        return rule(value)
    if isinstance(rule, (tuple, frozenset, set)):
        if value in rule:
            return None
        choices = sorted(map(str, rule)) if not isinstance(rule, tuple) else list(map(str, rule))
        return f"{name} must be one of {', '.join(choices)}, got {value!r}{did_you_mean(str(value), choices)}"
    if isinstance(value, (list, tuple)):
        return next((p for p in (option_problem(name, v, rule) for v in value) if p), None)
    test, what = _BOUNDS[rule]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not test(value):
        return f"{name} must be {what}, got {value!r}"
    return None


def check_options(cfg: Any) -> None:
    """Check cfg's options against the RULES of its class and of every base class
    (a subclass's rule for a name replaces its base's); raises ConfigError naming the
    first bad option. Called from the stage configs' __post_init__."""
    rules: dict[str, Any] = {}
    for klass in reversed(type(cfg).__mro__):
        rules.update(vars(klass).get("RULES", {}))
    for name, rule in rules.items():
        if hasattr(cfg, name):
            problem = option_problem(name, getattr(cfg, name), rule)
            if problem:
                raise ConfigError(problem)
