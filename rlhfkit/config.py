"""Configuration: one dataclass per stage, a help text on every field, YAML files
plus command-line overrides, unknown keys rejected with a did-you-mean.

Fields are declared with `option(default, "help")`; nested dataclasses (the
pipeline's `sft`, `rm`, `ppo`) are addressed with dotted names on the command
line (`--ppo.kl_coef 0.05`) and as nested mappings in YAML.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
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


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}{_did_you_mean(str(value), list(map(str, choices)))}")
        return value
    if origin in (list, tuple):
        (item_tp, *_rest) = get_args(tp) or (str,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, key) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
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
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {full!r}{_did_you_mean(key, list(fields))}")
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
        return cls(**kwargs)
    except ConfigError as e:  # a value check_options refused: say where it came from
        raise ConfigError(f"{where}: {prefix}{e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
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


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--name` option per leaf field, documented with its help text and default."""
    parser.add_argument("--config", metavar="FILE", help="YAML file of options; command-line options override it")
    for name, tp, f in _flat_fields(cls):
        help_text = f"{f.metadata.get('help', '')} (default: {_format_default(f)})".replace("%", "%%")  # argparse %-formats help
        flags = [f"--{name}"] + (["--out"] if name == "output_dir" else [])
        parser.add_argument(*flags, dest=name, metavar=_type_name(tp), default=argparse.SUPPRESS, help=help_text)


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
    parser = ConfigArgumentParser(prog=prog, description=(cls.__doc__ or "").strip().split("\n")[0])
    add_config_arguments(parser, cls)
    return config_from_args(cls, parser.parse_args(argv))


class ConfigArgumentParser(argparse.ArgumentParser):
    """argparse with a did-you-mean for misspelt options (and no silent prefix matching:
    `--learning_rat` is an error, not `--learning_rate`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        if "unrecognized arguments" in message:
            known = [s for a in self._actions for s in a.option_strings]
            wrong = [w for w in message.split(":", 1)[1].split() if w.startswith("--")]
            hints = [f"{w}{_did_you_mean(w.split('=')[0], known)}" for w in wrong]
            if hints:
                message = f"unknown option(s): {', '.join(hints)}"
        super().error(message)


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
        return f"{name} must be one of {', '.join(choices)}, got {value!r}{_did_you_mean(str(value), choices)}"
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
