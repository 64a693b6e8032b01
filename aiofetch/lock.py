"""One run per DIR: an advisory flock on DIR/.aiofetch.lock, holding the owner's PID.

The kernel drops a flock when its process dies, however it dies, so a lock left by a
killed run never blocks the next one. The file itself stays (removing it would race).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import LocalError, LockedError


class DirLock:
    """Held from `acquire` until `release` (or the process's end)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def acquire(self) -> None:
        """Take the lock at once or raise LockedError naming the holder's PID."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise LocalError(f"cannot create lock file {str(self.path)!r}: {exc.strerror}",
                             errno=exc.errno) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise LockedError(f"{self.path.parent} is in use by {who} "
                              f"(lock {self.path}); try again later or use another --dir",
                              pid=holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    words = os.pread(fd, 32, 0).decode("ascii", "replace").split()
    # The PID is the first line; a --dask run adds its probe line below it.
    return int(words[0]) if words and words[0].isdigit() else None
