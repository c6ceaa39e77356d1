"""Files the project writes, written so that a crash (kill -9, power loss, a full
disk) never leaves a half-written one: every rewrite goes to a temporary file in
the same directory, is fsync'd and renamed over the old one; appended logs
(metrics.jsonl, samples.jsonl) keep a row count that checkpoints record, so a
resumed run cuts them back to exactly the rows of the checkpoint.

JSON is strict everywhere (RFC 8259): a NaN or infinity is written as null and
the reason is logged, since Python's default bare `NaN` breaks other readers.

Fault injection for the kill tests: RLHFKIT_FAULT=<point>[:<n>] makes the
process SIGKILL itself the n-th time (default 1st) it passes `fault_point(<point>)`.
"""
from __future__ import annotations

import errno
import json
import math
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------- a full disk

# "No space left on device", "File too large" (a file-size limit: RLIMIT_FSIZE, a
# filesystem's largest file), "Disk quota exceeded"
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
# the same errors as torch's and safetensors' writers word them (a RuntimeError and a
# SafetensorError that carry no errno)
_NO_SPACE_TEXT = ("no space left on device", "file too large", "disk quota exceeded", "storagefull",
                  "filetoolarge", "os error 28", "os error 27", "os error 122")


def out_of_space(e: BaseException | None) -> bool:
    """Whether `e`, or an exception it was raised from, says the disk (or a size limit) is full."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
            return True
        if any(t in str(e).lower() for t in _NO_SPACE_TEXT):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def nbytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) state dict: what saving it will write, near enough."""
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):
        return obj.element_size() * obj.numel()
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    return 0


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} bytes"


def disk_full_message(directory: str | Path, needed: int, advice: str = "free some space and rerun the command") -> str:
    """One line for a save that ran out of space: where, how much it needs, how much is free."""
    import shutil

    try:
        free = f"{_size(shutil.disk_usage(directory).free)} free there"
    except OSError:
        free = "free space unknown"
    return f"disk full: writing {directory} needs about {_size(needed)} ({needed} bytes; {free}); {advice}"


# ----------------------------------------------------------------------------- fault injection

FAULT_ENV = "RLHFKIT_FAULT"
_fault_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process here when RLHFKIT_FAULT names this point (tests only)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    if _fault_hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- atomic writes

def fsync_dir(path: str | Path) -> None:
    """Make a rename inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes, fault: str = "") -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a
    torn one: temporary file, fsync, rename, fsync of the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if fault:
                fault_point(fault)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str, fault: str = "") -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fault)


def output_file(path: str | Path, default_name: str) -> Path:
    """The file a command's --out (or --output_dir) option names: a directory (one that
    exists, a path ending in '/', or a name without a suffix) gets `default_name` inside it."""
    text = str(path)
    p = Path(path)
    if p.is_dir() or text.endswith(("/", "\\")) or not p.suffix:
        return p / default_name
    return p


def write_jsonl(path: str | Path, rows: Iterable[dict], *, ensure_ascii: bool = True) -> Path:
    """One JSON object a line, written atomically: a resumed run or a reader never sees half
    a file. ensure_ascii=False keeps non-ASCII text as UTF-8 (people's labels) instead of
    \\u escapes; the default keeps the bytes of files whose digests checkpoints record."""
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=ensure_ascii) + "\n" for row in rows))
    return Path(path)


def read_line_list(path: str | Path) -> list[str]:
    """A text file's entries, one a line, stripped; blank lines and lines starting with #
    are skipped (a constitution's format)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSON-lines file written by write_jsonl (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------- strict JSON

def strict(obj: Any, where: str = "", replaced: list[str] | None = None) -> Any:
    """`obj` with every non-finite float replaced by None; the dotted keys replaced are
    appended to `replaced`."""
    if isinstance(obj, float) and not math.isfinite(obj):
        if replaced is not None:
            replaced.append(f"{where or 'value'} ({obj})")
        return None
    if isinstance(obj, dict):
        return {k: strict(v, f"{where}.{k}" if where else str(k), replaced) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v, f"{where}[{i}]", replaced) for i, v in enumerate(obj)]
    return obj


def dumps(obj: Any, *, what: str = "", log: Callable[[str], None] | None = print, **kwargs) -> str:
    """json.dumps that never writes NaN or Infinity: they become null, and `log` says
    which keys and why (`what` names the file or row)."""
    replaced: list[str] = []
    text = json.dumps(strict(obj, "", replaced), allow_nan=False, **kwargs)
    if replaced and log is not None:
        log(f"{what or 'JSON'}: non-finite {', '.join(replaced)} written as null (strict JSON has no NaN or Infinity)")
    return text


def write_json(path: str | Path, obj: Any, *, log: Callable[[str], None] | None = print, **kwargs) -> None:
    """Strict JSON, written atomically."""
    atomic_write_text(path, dumps(obj, what=str(path), log=log, **kwargs))


# ----------------------------------------------------------------------------- append-only logs

class JsonlFile:
    """An append-only JSON-lines log whose complete rows are counted, so a checkpoint can
    record how many rows belong to it and a resume can cut the file back to exactly them
    (no row twice, none lost). Only the main process should write."""

    def __init__(self, path: str | Path, log: Callable[[str], None] | None = print):
        self.path = Path(path)
        self.log = log
        self.rows = count_rows(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def append(self, row: dict[str, Any]) -> None:
        line = dumps(row, what=f"{self.path.name} step {row.get('step', '?')}", log=self.log)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        self.rows += 1

    def truncate(self, rows: int) -> None:
        """Keep the first `rows` complete rows (a torn last line is dropped), atomically."""
        if not self.path.exists():
            self.rows = 0
            return
        lines = self.path.read_bytes().split(b"\n")[:-1]  # the part after the last newline is torn or empty
        if len(lines) < rows:
            if self.log:
                self.log(f"warning: {self.path} has {len(lines)} rows, the checkpoint recorded {rows}")
            rows = len(lines)
        kept = b"".join(line + b"\n" for line in lines[:rows])
        if kept != self.path.read_bytes():
            atomic_write_bytes(self.path, kept, fault="resume.rewrite")
        self.rows = rows

    def filter(self, keep: Callable[[str], bool]) -> None:
        """Keep the complete rows for which keep(line) is true, atomically."""
        if not self.path.exists():
            return
        lines = [ln for ln in self.path.read_text(encoding="utf-8").split("\n")[:-1] if ln.strip() and keep(ln)]
        atomic_write_text(self.path, "".join(ln + "\n" for ln in lines), fault="resume.rewrite")
        self.rows = len(lines)


def count_rows(path: Path) -> int:
    """Complete (newline-terminated) rows of a JSON-lines file; 0 when it does not exist."""
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0
