"""Paths inside DIR: safe walks, probes of targets and `.part` files, held directories.

Every path is walked one component at a time from DIR's file descriptor with O_NOFOLLOW,
so a symlink planted inside DIR is never followed out of it. A final name only ever
appears by `os.replace` of a complete, verified `.part` (an atomic rename on POSIX).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

from .errors import LocalError
from .sources import PART_SUFFIX

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_root(dest: Path) -> int:
    """Create DIR if missing and return a descriptor for it (the user's DIR may be a link)."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        return os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise LocalError(f"cannot use directory {str(dest)!r}: {exc.strerror}",
                         errno=exc.errno) from exc


def describe(exc: OSError) -> str:
    return exc.strerror or str(exc)


def walk(root_fd: int, parents: list[str], *, create: bool) -> int:
    """Open the directory `parents` below root without following links; -1 if missing."""
    fd = os.dup(root_fd)
    try:
        for index, name in enumerate(parents):
            if create:
                try:
                    os.mkdir(name, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if create:
                    raise
                os.close(fd)
                return -1
            except OSError as exc:
                where = "/".join(parents[: index + 1])
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise LocalError(f"{where!r} in the destination is not a directory "
                                     "(symlinks are not followed)") from exc
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _lstat(root_fd: int, path: str) -> os.stat_result | None:
    """lstat `path` below root without following any link on the way; None if absent."""
    *parents, name = path.split("/")
    if not parents:  # flat layout: no walk, no extra descriptors
        try:
            return os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        except OSError:
            return None
    try:
        fd = walk(root_fd, parents, create=False)
    except (OSError, LocalError):
        return None
    if fd < 0:
        return None
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None
    finally:
        os.close(fd)


class Listing:
    """What DIR held when the run first looked, read once per directory, for probes of
    names about to be planned.

    The names of each directory are listed when it is first met: for a name that is not
    there (every name, on a fresh download) a set lookup replaces a stat on the event
    loop (measured, two stats per item were a tenth of the time of 5,000 small files).
    The listings of the last directories met are kept, MAX_ENTRIES names in all (a
    directory with more is not listed), so memory stays flat however long the list:
    a 100,000-line tree rerun peaked at 59 MB keeping up to 100,000 names, 52 MB with 20,000.
    Names that are there are stat'ed from their directory's descriptor: the last
    DIR_FDS directories walked (with O_NOFOLLOW, as everywhere) stay open, so a tree of
    1,000 directories of 1,000 files costs one walk per directory, not three opens and
    closes per file.

    Only this run writes in DIR (it holds the lock), and it never plans a name twice,
    so what was seen before a name was planned stays true for that name: a listing
    (also one taken again after it was let go), a directory's descriptor, and a
    directory found missing alike.
    """

    MAX_ENTRIES = 20_000
    MAX_DIRS = 4_096
    DIR_FDS = 64

    def __init__(self, root_fd: int) -> None:
        self._root_fd = root_fd
        self._dirs: dict[str, frozenset[str] | None] = {}
        self._entries = 0
        self._fds: dict[str, int] = {}  # parent -> descriptor (-1: missing), oldest first

    def close(self) -> None:
        """Close the directories held open."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            if fd >= 0:
                os.close(fd)

    def may_exist(self, path: str) -> bool:
        """False only when `path` was certainly absent when its directory was listed."""
        parent, _, name = path.rpartition("/")
        names = self._dirs.get(parent, self)
        if names is self:
            names = self._dirs[parent] = self._list(parent)
            self._entries += len(names or ())
            while self._entries > self.MAX_ENTRIES or len(self._dirs) > self.MAX_DIRS:
                self._entries -= len(self._dirs.pop(next(iter(self._dirs))) or ())
        return names is None or name in names  # type: ignore[operator]

    def lstat(self, path: str) -> os.stat_result | None:
        """lstat `path` (None if absent), from its directory's held descriptor."""
        parent, _, name = path.rpartition("/")
        fd = self._dir_fd(parent) if parent else self._root_fd
        if fd < 0:
            return None
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None

    def _dir_fd(self, parent: str) -> int:
        """A descriptor for directory `parent` below DIR, or -1 when it is not one."""
        fds = self._fds
        fd = fds.pop(parent, None)
        if fd is None:
            above, _, name = parent.rpartition("/")
            base = self._dir_fd(above) if above else self._root_fd
            fd = -1
            if base >= 0:
                try:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=base)
                except OSError:
                    fd = -1  # missing, a symlink or not a directory: nothing of ours below
            if len(fds) >= self.DIR_FDS:
                evicted = fds.pop(next(iter(fds)))
                if evicted >= 0:
                    os.close(evicted)
        fds[parent] = fd  # most recently used last
        return fd

    def _list(self, parent: str) -> frozenset[str] | None:
        fd = self._dir_fd(parent) if parent else self._root_fd
        if fd < 0:
            return frozenset()  # no usable directory there: nothing of ours in it
        try:
            with os.scandir(fd) as entries:  # it reads a duplicate: ours stays open
                names = []
                for entry in entries:
                    names.append(entry.name)
                    if len(names) > self.MAX_ENTRIES:
                        return None  # too many to keep: its names are stat'ed
        except OSError:
            return None
        return frozenset(names)


def complete_stat(root_fd: int, path: str,
                  listing: Listing | None = None) -> os.stat_result | None:
    """The stat of a complete file at `path`, or None (missing, a symlink, not a file).

    Only aiofetch renames files into final names, and only when complete, so a regular
    file there is a complete one.
    """
    if listing is None:
        info = _lstat(root_fd, path)
    elif not listing.may_exist(path):
        return None
    else:
        info = listing.lstat(path)
    return info if info is not None and stat.S_ISREG(info.st_mode) else None


def complete_size(root_fd: int, path: str) -> int | None:
    """Size of a complete file at `path`, or None."""
    info = complete_stat(root_fd, path)
    return None if info is None else info.st_size


def part_size(root_fd: int, path: str, listing: Listing | None = None) -> int | None:
    """Size of the regular `PATH.part` left by an earlier attempt, or None."""
    part = path + PART_SUFFIX
    if listing is None:
        info = _lstat(root_fd, part)
    elif not listing.may_exist(part):
        return None
    else:
        info = listing.lstat(part)
    return info.st_size if info is not None and stat.S_ISREG(info.st_mode) else None


class Dirs:
    """DIR's directories for the `.part` files of a run: walked once (O_NOFOLLOW, created
    as needed) and held open, the last DIR_FDS unused ones, so many files in a few
    directories cost a walk per directory, not a walk (a mkdir and an open per level)
    per file: 3,000 tree-layout files took 35,482 system calls instead of 68,578
    (strace -c; openat 12,436 -> 3,445, close 15,432 -> 3,444, mkdirat 9,000 -> 9).
    Shared by the event loop and the worker threads, hence the lock; a
    descriptor in use is never closed under its user.

    As with every walk, a directory held open stays the one inside DIR that was walked
    to, even if its name is later swapped for a link: nothing is written outside DIR.
    """

    DIR_FDS = 64

    def __init__(self, root_fd: int) -> None:
        self._root_fd = root_fd
        self._lock = threading.Lock()
        self._held: dict[str, list[int]] = {}  # parents -> [fd, users], least recent first

    def acquire(self, parents: Sequence[str]) -> int:
        """A descriptor for directory `parents` below DIR (created if missing); raises as
        a walk does. Give it back with `release(parents)`."""
        key = "/".join(parents)
        with self._lock:
            entry = self._held.pop(key, None)
            if entry is None:
                entry = [self.walk(parents), 0]
            entry[1] += 1
            self._held[key] = entry  # now the most recent
            self._evict()
            return entry[0]

    def walk(self, parents: Sequence[str]) -> int:
        # From the deepest directory already held: a new leaf of a held tree is one level.
        for depth in range(len(parents) - 1, 0, -1):
            above = self._held.get("/".join(parents[:depth]))
            if above is not None:
                return walk(above[0], list(parents[depth:]), create=True)
        return walk(self._root_fd, list(parents), create=True)

    def release(self, parents: Sequence[str]) -> None:
        with self._lock:
            entry = self._held.get("/".join(parents))
            if entry is not None:
                entry[1] -= 1
                self._evict()

    def _evict(self) -> None:
        while len(self._held) > self.DIR_FDS:
            unused = next((key for key, (_, users) in self._held.items() if users <= 0), None)
            if unused is None:
                return  # all in use: held beyond the bound until they are given back
            os.close(self._held.pop(unused)[0])

    def close(self) -> None:
        """Close every directory held (the run is over)."""
        with self._lock:
            held, self._held = self._held, {}
        for fd, _ in held.values():
            os.close(fd)
