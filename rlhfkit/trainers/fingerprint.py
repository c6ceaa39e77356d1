"""What a stage was started with: the options that change its result and digests of
the files it reads (data: size and SHA-256; model directories: config.json's hash and
the weights' sizes). Each checkpoint stores it; a rerun compares (rlhfkit.trainers.checkpoint)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

# Options that do not change what a stage computes: a rerun that differs only in these
# resumes (and a finished pipeline stage counts as the same run).
NOT_RESULT_OPTIONS = frozenset({"output_dir", "progress", "num_threads", "log_every", "report_to", "checkpoint_every",
                                "checkpoint_minutes", "keep_checkpoints", "resume", "eval_every",
                                "num_samples_logged", "push_to_hub", "hub_model_id", "hub_private_repo"})
# Options naming data files (hashed: size and SHA-256) and models (config.json hashed, weight sizes).
DATA_OPTIONS = ("data", "eval_data", "prompts", "ptx_data", "normalize_on")
MODEL_OPTIONS = ("model", "ref_model", "reward_model", "value_model", "ai_judge")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def options_of(cfg) -> dict[str, Any]:
    """A config's options as plain JSON values."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str)) if dataclasses.is_dataclass(cfg) else {}


def _file_digest(value: str, model: bool = False) -> dict[str, Any] | None:
    p = Path(value)
    if p.is_file():
        return {"path": value, "bytes": p.stat().st_size, "sha256": _sha256(p)}
    if not p.is_dir():
        return None  # a hub id or a name the loader resolves: the option's value stands for it
    if model:  # a model directory's own weights (their sizes: they are large) and config (its hash)
        files = sorted(f for f in p.iterdir() if f.is_file() and (f.suffix in (".safetensors", ".bin")
                                                                    or f.name == "config.json"))
    else:  # a saved dataset: every file
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
    h = hashlib.sha256()
    size = 0
    for f in files:
        rel = str(f.relative_to(p))
        digest = str(f.stat().st_size) if model and f.name != "config.json" else _sha256(f)
        h.update(f"{rel}\0{digest}\0".encode())
        size += f.stat().st_size
    return {"path": value, "bytes": size, "sha256": h.hexdigest()}


def fingerprint(cfg) -> dict[str, Any]:
    """The options that change a stage's result and digests of the files it reads."""
    options = {k: v for k, v in options_of(cfg).items() if k not in NOT_RESULT_OPTIONS}
    files: dict[str, Any] = {}
    for name in DATA_OPTIONS + MODEL_OPTIONS:
        value = getattr(cfg, name, None)
        if isinstance(value, str) and value:
            digest = _file_digest(value, model=name in MODEL_OPTIONS)
            if digest is not None:
                files[name] = digest
    for spec in getattr(cfg, "reward_functions", None) or []:
        module = str(spec).rsplit(":", 1)[0]
        if module.endswith(".py") and Path(module).is_file():
            files[f"reward_functions {spec}"] = _file_digest(module)
    return {"options": options, "files": files}


def fingerprint_changes(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'name old -> new' for each changed option; 'name file changed (...)' for each file."""
    changes = []
    old_opts, new_opts = stored.get("options") or {}, current.get("options") or {}
    for k, v in new_opts.items():
        if k in old_opts and old_opts[k] != v:
            changes.append(f"{k} {old_opts[k]!r} -> {v!r}")
    old_files, new_files = stored.get("files") or {}, current.get("files") or {}
    for k in sorted(set(old_files) | set(new_files)):
        a, b = old_files.get(k), new_files.get(k)
        if a == b or (a and b and a.get("sha256") == b.get("sha256")):
            continue
        if a is None or b is None:
            changes.append(f"{k} {'appeared' if a is None else 'is gone'} ({(a or b).get('path')})")
        elif a.get("bytes") != b.get("bytes"):
            changes.append(f"{k} file {b.get('path')} changed ({a.get('bytes')} -> {b.get('bytes')} bytes)")
        else:
            changes.append(f"{k} file {b.get('path')} changed (same size, other content)")
    return changes
