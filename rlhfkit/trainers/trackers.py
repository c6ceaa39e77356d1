"""`--report_to`: the experiment trackers Accelerate drives, checked when the config is
built. Accelerate itself skips a tracker whose package is missing with one debug line
and an unknown name with its raw error; here an unknown name is an error with a
did-you-mean, and a missing package is an error naming what to install, so a run never
trains for an hour and logs nowhere."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from rlhfkit.config import did_you_mean

# tracker name (Accelerate's) -> (pip package, modules any one of which makes it available)
TRACKERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tensorboard": ("tensorboard", ("tensorboard", "tensorboardX")),
    "wandb": ("wandb", ("wandb",)),
    "trackio": ("trackio", ("trackio",)),
    "mlflow": ("mlflow", ("mlflow",)),
    "comet_ml": ("comet-ml", ("comet_ml",)),
    "aim": ("aim", ("aim",)),
    "clearml": ("clearml", ("clearml",)),
    "dvclive": ("dvclive", ("dvclive",)),
    "swanlab": ("swanlab", ("swanlab",)),
}
# other spellings users bring (TRL's docs say "comet")
TRACKER_ALIASES = {"comet": "comet_ml", "tensorboardx": "tensorboard", "mlflow_tracking": "mlflow"}
# TrainingArguments' values that mean "every installed tracker" and "none"
ALL, NONE = "all", "none"


def installed(name: str) -> bool:
    return any(importlib.util.find_spec(module) is not None for module in TRACKERS[name][1])


def resolve_trackers(names: list[str]) -> list[str]:
    """Accelerate's names for `names`, in order, without repeats: aliases resolved,
    'none' dropped, 'all' expanded to every installed tracker."""
    out: list[str] = []
    for name in names:
        name = TRACKER_ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
        if name == NONE:
            continue
        for one in ([t for t in TRACKERS if installed(t)] if name == ALL else [name]):
            if one not in out:
                out.append(one)
    return out


def tracker_problem(names: list[str]) -> str | None:
    """What is wrong with a --report_to list (an unknown name, a package not installed), or None."""
    known = sorted(TRACKERS) + [ALL, NONE]
    for name in names:
        key = TRACKER_ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
        if key not in known:
            return f"report_to: unknown tracker {name!r}{did_you_mean(key, known)}; choose from {', '.join(known)}"
    if NONE in [str(n).strip().lower() for n in names] and len(names) > 1:
        return f"report_to: 'none' together with other trackers ({', '.join(map(str, names))})"
    for name in resolve_trackers(names):
        if not installed(name):
            package = TRACKERS[name][0]
            return f"report_to {name} needs the {package} package, which is not installed: pip install {package}"
    return None


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def prepare_environment(names: list[str], log=print) -> None:
    """Settings a tracker needs to run unattended: W&B without a login asks for an API key
    on the terminal (and waits); it logs offline instead (`wandb sync` uploads later)."""
    if "wandb" in names and not os.environ.get("WANDB_MODE") and not _wandb_logged_in():
        os.environ["WANDB_MODE"] = "offline"
        log("report_to wandb: no W&B login found, logging offline into ./wandb (upload with `wandb sync`)")


def check_started(accelerator, names: list[str]) -> None:
    """Every tracker asked for is running (Accelerate drops one it cannot start without an error)."""
    if not accelerator.is_main_process:
        return
    running = {getattr(t, "name", "") for t in accelerator.trackers}
    missing = [n for n in names if n not in running]
    if missing:
        raise ValueError(f"report_to: {', '.join(missing)} did not start (Accelerate skipped it); "
                         f"check that {', '.join(TRACKERS[n][0] for n in missing)} imports in this environment")
