"""One run per output directory: an flock'd `.lock` file holding the owner's pid."""
from __future__ import annotations

import atexit
import os
from pathlib import Path

from rlhfkit.trainers.errors import CheckpointError


_HELD: dict[str, int] = {}  # resolved lock path -> file descriptor, for locks this process holds


def acquire_lock(directory: str | Path) -> Path | None:
    """Lock `<directory>/.lock` for this process (flock: released by the kernel when the
    process dies, so a killed run's lock is taken over at once). The file holds the
    owner's pid, which a second run names when it refuses to start. Re-entrant within
    a process. Returns the lock path (None where flock is unavailable)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    path = Path(directory) / ".lock"
    key = str(path.resolve())
    if key in _HELD:
        return path
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise CheckpointError(f"{directory} is in use by another run (pid {owner}); wait for it to finish or "
                                  "stop it, or choose another --output_dir") from None
        try:  # the file may have been removed by the owner that just released it: lock the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        _HELD[key] = fd
        return path
    raise CheckpointError(f"could not lock {path}")


def release_lock(path: Path | None) -> None:
    if path is None:
        return
    fd = _HELD.pop(str(path.resolve()), None)
    if fd is None:
        return
    path.unlink(missing_ok=True)  # while still locked, so nobody locks the removed file for long
    os.close(fd)


@atexit.register
def _release_all() -> None:
    for key in list(_HELD):
        release_lock(Path(key))
