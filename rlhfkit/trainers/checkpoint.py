"""Resumable checkpoints, and what a stage does before it trains.

`open_stage` starts every stage: it locks the output directory (a second run into
it fails at once, naming the other run's pid), removes checkpoint directories a
killed save left behind, and compares the newest checkpoint's fingerprint (the
options that change the result, and the size and SHA-256 of every data file) with
this run's. A rerun with other options or data refuses to resume and says what
changed; `--resume force` continues on purpose, with the new settings applied
(learning rate, schedule, weight decay: the checkpoint's optimizer keeps only its
moments).

A checkpoint is `<output_dir>/checkpoints/step-N`: safetensors per model,
`state.pt` (optimizer, scheduler, RNG, data position, row counts of the stage's
logs) and a manifest of their sizes and SHA-256 sums, plus `fingerprint.json`
(outside the manifest: `--resume force` rewrites it, atomically). A finished stage
writes the same fingerprint beside its final model (`<output_dir>/fingerprint.json`,
after the model's files): a rerun with the same settings does nothing, one with other
settings is refused like a checkpoint's, and `--resume force` trains again. It is written
into a temporary directory, every file fsync'd, and renamed into place; loading
verifies the manifest and falls back to the newest intact one. Temporary
directories and files a kill leaves are removed by the next open_stage.
`CheckpointManager.finish_stage` ends every stage: the final model saved, its card, the
fingerprint beside it.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhfkit.io import atomic_write_text, disk_full_message, dumps, fault_point, fsync_dir, nbytes, out_of_space
from rlhfkit.trainers.distributed import end_stage
from rlhfkit.trainers.errors import CheckpointError, DiskFullError
from rlhfkit.trainers.fingerprint import MODEL_OPTIONS, _sha256, fingerprint, fingerprint_changes
from rlhfkit.trainers.model_card import publish
from rlhfkit.trainers.run_info import write_run_info
from rlhfkit.trainers.runlock import acquire_lock, release_lock

RESUME_MODES = ("auto", "force")
# Written into the output directory after a stage's final model: the fingerprint of the
# settings that made it. A rerun compares against it as against a checkpoint's.
FINISHED = "fingerprint.json"


# ----------------------------------------------------------------------------- RNG state

def rng_state() -> dict[str, Any]:
    """RNG states in types torch.load(weights_only=True) accepts (no numpy pickles)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_python_rng(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])


def _as_python_rng(state):
    # torch.load(weights_only=True) returns lists where random.setstate needs tuples
    return (state[0], tuple(state[1]), state[2])


# ----------------------------------------------------------------------------- checkpoints

class CheckpointManager:
    """Atomic, verified, rotated checkpoints under `<output_dir>/checkpoints/step-N`,
    with the cadence (every N steps and every M seconds), the fingerprint check, and
    the stage's logs cut back to the checkpoint's rows on resume."""

    def __init__(self, output_dir: str | Path, keep: int = 2, is_main: bool = True, *,
                 fingerprint: dict | None = None, resume: str = "auto", every_steps: int = 0,
                 every_seconds: float = 0.0, stage: str = "", log=print):
        self.root = Path(output_dir) / "checkpoints"
        self.keep = max(1, keep)
        self.is_main = is_main
        self.fingerprint = fingerprint
        self.resume_mode = resume
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.stage, self.log = stage, log
        self.logs: list = []  # logs whose row counts go into each checkpoint (metrics.jsonl, samples.jsonl)
        self.forced: list[str] = []  # the changes a --resume force accepted
        self.finished: Path | None = None  # set when the output directory already holds this run's finished model
        self.replacing_finished = False  # --resume force over a finished model made with other settings
        self.lock: Path | None = None
        self._last_save = time.monotonic()
        self._resume_from: Path | None = None
        self._checked = False

    # -- cadence

    def due(self, done: int, total: int, accelerator=None) -> bool:
        """Save after step `done`? Every every_steps steps, or when every_seconds have passed
        since the last save (decided on the main process for all); never after the last."""
        if done >= total:
            return False
        by_steps = bool(self.every_steps) and done % self.every_steps == 0
        by_time = bool(self.every_seconds) and time.monotonic() - self._last_save >= self.every_seconds
        decision = by_steps or by_time
        if accelerator is not None and accelerator.num_processes > 1 and self.every_seconds:
            from accelerate.utils import broadcast_object_list

            decision = broadcast_object_list([decision])[0]
        return decision

    # -- writing

    def save(self, step: int, tensors: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]) -> Path | None:
        """tensors: name -> state dict (saved as safetensors); state: everything else
        (optimizer, scheduler, RNG, data position), saved with torch.save and
        loaded back with weights_only=True."""
        self._last_save = time.monotonic()
        if not self.is_main:
            return None
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f".tmp-step-{step:08d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            for name, sd in tensors.items():
                save_file({k: v.detach().cpu().clone() for k, v in sd.items()}, str(tmp / f"{name}.safetensors"))
            fault_point("checkpoint.save")
            with open(tmp / "state.pt", "wb") as f:  # through a Python file: a full disk keeps its OSError
                torch.save(state, f)                  # (as __context__ of torch's "unexpected pos" RuntimeError)
            files = sorted(tmp.iterdir())
            for p in files:
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
            manifest = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}
            atomic_write_text(tmp / "manifest.json", json.dumps({"step": step, "files": manifest}, indent=1))
            if self.fingerprint is not None:  # outside the manifest: --resume force rewrites it in place
                atomic_write_text(tmp / "fingerprint.json", dumps(self.fingerprint, log=None, indent=1))
            fsync_dir(tmp)
            if final.exists():
                self._remove(final)
            os.replace(tmp, final)
            fsync_dir(self.root)
        except Exception as e:  # torch and safetensors report a full disk as RuntimeError / SafetensorError
            shutil.rmtree(tmp, ignore_errors=True)
            if out_of_space(e):
                needed = nbytes(tensors) + nbytes(state)
                raise DiskFullError(f"could not write checkpoint {final}: " + disk_full_message(
                    self.root, needed, "free some space or lower --keep_checkpoints, and rerun the command to resume "
                    "from the last checkpoint")) from None
            if isinstance(e, OSError):
                raise CheckpointError(f"could not write checkpoint {final}: {e}") from e
            raise
        self._rotate()
        return final

    def _remove(self, path: Path) -> None:
        """Rename out of the step-* namespace first, so a kill mid-delete leaves an orphan
        that the next start removes, never a damaged step directory."""
        doomed = self.root / f".tmp-delete-{path.name}-{os.getpid()}"
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def _rotate(self) -> None:
        done = sorted(self.root.glob("step-*"))
        for old in done[: -self.keep]:
            self._remove(old)

    def clean_orphans(self) -> list[Path]:
        """Remove what killed saves and deletions left (`.tmp-*` directories); call while
        holding the run's lock."""
        if not self.is_main:
            return []
        # .tmp-step-* / .tmp-delete-* checkpoint directories, the temporary files of atomic
        # rewrites (rlhfkit.io: .<name>.tmp-<pid>) and of model saves (.<dir>.tmp-save-<pid>)
        out = self.root.parent
        orphans = sorted(self.root.glob(".tmp-*")) + sorted(out.glob(".*.tmp-*")) + sorted(out.glob("*/.*.tmp-*"))
        for p in orphans:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        if orphans:
            self.log(f"{self.stage or 'checkpoints'}: removed what an interrupted run left unfinished: "
                     f"{', '.join(p.name for p in orphans)}")
        return orphans

    # -- reading

    def verify(self, path: Path) -> str | None:
        """None when intact, else what is wrong."""
        manifest_path = path / "manifest.json"
        if not manifest_path.exists():
            return "no manifest.json (interrupted save?)"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return "manifest.json is not valid JSON"
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict) or "state.pt" not in files:
            return "manifest.json does not list the checkpoint's files"
        for name, meta in files.items():
            if not isinstance(meta, dict) or not isinstance(meta.get("bytes"), int) \
                    or not isinstance(meta.get("sha256"), str) or "/" in name or name.startswith("."):
                return f"manifest.json entry {name!r} is malformed"
            f = path / name
            if not f.is_file():
                return f"{name} is missing"
            if f.stat().st_size != meta["bytes"]:
                return f"{name} has {f.stat().st_size} bytes, manifest says {meta['bytes']}"
            if _sha256(f) != meta["sha256"]:
                return f"{name} checksum mismatch"
        return None

    def intact(self, log=print) -> list[Path]:
        """Intact checkpoints, newest first; each damaged one is reported and skipped."""
        if not self.root.exists():
            return []
        good, damaged = [], 0
        for path in sorted(self.root.glob("step-*"), reverse=True):
            problem = self.verify(path)
            if problem is None:
                good.append(path)
            else:
                damaged += 1
                log(f"warning: checkpoint {path} is damaged ({problem}); skipped")
        if damaged and not good:
            log("warning: no intact checkpoint left: starting from step 0")
        return good

    def latest(self, log=print) -> Path | None:
        good = self.intact(log)
        return good[0] if good else None

    def check_finished(self) -> bool:
        """Compare a finished model's settings (FINISHED) with this run's, as a checkpoint's
        are compared: the same settings mean the stage is done (True: nothing to train);
        other settings are refused, naming them, unless resume='force', which trains again
        and replaces the model. False when there is no finished model to compare."""
        out = self.root.parent
        if self.fingerprint is None or not (out / FINISHED).exists():
            return False
        if not (out / "config.json").is_file() or not any(out.glob("model*.safetensors")):
            # the model it describes is gone (deleted, or moved away): train, or resume, again
            self.log(f"warning: {out / FINISHED} is there but the model is not; the stage runs again")
            return False
        stored = _read_json(out / FINISHED)
        if not isinstance(stored, dict):
            self.log(f"warning: {out / FINISHED} is unreadable; the finished model's settings cannot be compared")
            return False
        changes = fingerprint_changes(stored, self.fingerprint)
        if not changes:
            self.finished = out
            self.log(f"{self.stage or 'stage'}: {out} already holds the model these settings train; nothing to do "
                     "(use a new --output_dir to train again)")
            return True
        if self.resume_mode != "force":
            raise CheckpointError(
                f"{self.stage or 'stage'}: {out} holds a finished model made with other settings: "
                f"{'; '.join(changes)}. Rerun with its settings (nothing to do), use a new --output_dir, "
                "or add --resume force to train again with the new settings and replace it")
        self.replacing_finished = True
        self.log(f"{self.stage}: training again over the finished model in {out} with changed settings "
                 f"(--resume force): {'; '.join(changes)}")
        return False

    def skip(self, accelerator) -> Path:
        """End a stage that found its finished model (`finished`) without training: trackers
        finished, the directory released; returns the directory."""
        end_stage(accelerator)
        self.close()
        return self.root.parent

    def finish_stage(self, accelerator, cfg, save_model) -> Path:
        """The end of every stage, open_stage's counterpart: once every process is there, the
        main process saves the final model (save_model(output directory)) and its model card;
        the trackers finish, keeping the process group for a pipeline's next stage; the
        settings that made the model are recorded beside it, then the directory is released."""
        out = self.root.parent
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_model(out)
            publish(out, cfg, self.stage, log=accelerator.print)
        end_stage(accelerator)
        if self.is_main and self.fingerprint is not None:
            atomic_write_text(out / FINISHED, dumps(self.fingerprint, log=None, indent=1))
        self.close()
        return out

    def check_resume(self) -> Path | None:
        """Find the checkpoint to resume from and compare its fingerprint with this run's:
        refuse (CheckpointError) when they differ, unless resume='force'."""
        self._checked = True
        self._resume_from = path = self.latest(log=self.log)
        if path is None or self.fingerprint is None:
            return path
        stored = _read_json(path / "fingerprint.json")
        if stored is None and (path / "fingerprint.json").exists():
            self.log(f"warning: {path / 'fingerprint.json'} is unreadable; the checkpoint's settings cannot be compared")
        changes = fingerprint_changes(stored, self.fingerprint) if stored is not None else []
        if changes and self.resume_mode != "force":
            raise CheckpointError(
                f"{self.stage or 'stage'}: {path} was made with other settings: {'; '.join(changes)}. "
                "Rerun with the checkpoint's settings to resume it, use a new --output_dir to start over, "
                "or add --resume force to continue from it with the new settings")
        if changes:
            self.forced = changes
            self.log(f"{self.stage}: resuming {path} with changed settings (--resume force): {'; '.join(changes)}")
        return path

    def save_training(self, step: int, accelerator, models: dict[str, torch.nn.Module], optimizer, scheduler,
                      **extra: Any) -> Path | None:
        """Models (safetensors), optimizer, scheduler, RNG states, the row counts of the
        tracked logs, and `extra` state."""
        return self.save(step, {name: accelerator.get_state_dict(m) for name, m in models.items()},
                         {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "rng": _process_rng_states(accelerator), "logs": {log.name: log.rows for log in self.logs},
                          **extra})

    def resume_training(self, accelerator, models: dict[str, torch.nn.Module], optimizer, scheduler,
                        stage: str = "", logs=()) -> tuple[int, dict[str, Any]]:
        """Restore the newest intact checkpoint into models, optimizer, scheduler and the
        RNGs, and cut `logs` (tracked from now on) back to its rows; returns (its step,
        its state for extra fields), or (0, {}) when none (the logs are emptied)."""
        self.logs = list(logs)
        path = self._resume_from if self._checked else self.latest(log=accelerator.print)
        if path is None:
            for log in self.logs:
                log.truncate(0)
            return 0, {}
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        fresh_base = list(getattr(scheduler, "base_lrs", []))
        tensors, state = self.load(path)
        for name, model in models.items():
            accelerator.unwrap_model(model).load_state_dict(tensors[name], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if self.forced:
            _apply_new_hyperparameters(optimizer, scheduler, fresh, fresh_base)
            accelerator.wait_for_everyone()  # every process has compared fingerprints before this one changes
            if self.is_main:  # from now on this run's settings are the checkpoint's: a plain rerun resumes
                atomic_write_text(path / "fingerprint.json", dumps(self.fingerprint, log=None, indent=1))
        rng = state["rng"]  # a list, one per process, from a multi-process run
        set_rng_state(rng[accelerator.process_index % len(rng)] if isinstance(rng, list) else rng)
        step = int(state["step"])
        for log in self.logs:
            if "logs" in state:
                log.truncate(int(state["logs"].get(log.name, 0)))
            else:  # a checkpoint from before row counts: drop rows logged after its step
                log.filter(lambda line: _row_step(line) <= step)
        accelerator.print(f"resumed {stage or self.stage} from {path} (step {step})")
        return step, state

    @staticmethod
    def load(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
        from safetensors.torch import load_file

        fault_point("checkpoint.load")
        tensors = {p.stem: load_file(str(p)) for p in path.glob("*.safetensors")}
        state = torch.load(path / "state.pt", weights_only=True)
        return tensors, state

    def close(self) -> None:
        release_lock(self.lock)
        self.lock = None


def _apply_new_hyperparameters(optimizer, scheduler, fresh_groups: list[dict], fresh_base: list[float]) -> None:
    """After loading a checkpoint under --resume force: the optimizer keeps its moments
    and step counts, but takes this run's hyperparameters (lr, weight decay, eps, ...)
    and the schedule restarts from this run's base rates at the checkpoint's step."""
    for group, new in zip(optimizer.param_groups, fresh_groups):
        group.update(new)
    if fresh_base:
        scheduler.base_lrs = fresh_base
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if lambdas:
        for group, base, fn in zip(optimizer.param_groups, scheduler.base_lrs, lambdas):
            group["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def _process_rng_states(accelerator):
    """This process's RNG states; under several processes, every process's (each samples its own)."""
    if accelerator.num_processes == 1:
        return rng_state()
    from accelerate.utils import gather_object

    return gather_object([rng_state()])


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 1 << 62  # a torn last line from a crash: dropped


# ----------------------------------------------------------------------------- stage start

def open_stage(cfg, stage: str, accelerator) -> CheckpointManager:
    """The start of every stage, before any data is read: lock the output directory,
    remove unfinished checkpoint directories, check that a finished model there, else
    the newest checkpoint, was made with these options and data (else refuse, unless
    --resume force), then record the resolved config and run info. Returns the stage's
    CheckpointManager; its `finished` is set when the directory already holds the model
    these settings train, and the trainer then returns it without training."""
    from rlhfkit.models.loading import check_model_path

    for name in MODEL_OPTIONS:  # before anything is written: a wrong path fails at once, naming its option
        value = getattr(cfg, name, None)
        if isinstance(value, str) and value:
            try:
                check_model_path(value)
            except ValueError as e:
                raise ValueError(f"--{name}: {e}") from None
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--output_dir {out} is a file, not a directory")
    is_main = accelerator.is_main_process
    manager = CheckpointManager(out, cfg.keep_checkpoints, is_main, fingerprint=fingerprint(cfg),
                                resume=getattr(cfg, "resume", "auto"), every_steps=cfg.checkpoint_every,
                                every_seconds=60.0 * getattr(cfg, "checkpoint_minutes", 0.0), stage=stage,
                                log=accelerator.print)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        manager.lock = acquire_lock(out)
        manager.clean_orphans()
    accelerator.wait_for_everyone()
    if manager.check_finished():  # the trainer returns at once; config.yaml and run_info.json stay the finished run's
        return manager
    manager.check_resume()
    accelerator.wait_for_everyone()  # every process has read the finished model's settings
    if is_main and manager.replacing_finished:  # a kill while retraining must not leave it looking finished
        (out / FINISHED).unlink(missing_ok=True)
    if is_main:  # one writer: processes writing the same files at once could tear them
        write_run_info(out, cfg)
    return manager

