"""Files inside DIR: probe targets and stream bodies to `.part` files renamed into place.

Every path is walked one component at a time from DIR's file descriptor with O_NOFOLLOW,
so a symlink planted inside DIR is never followed out of it. A final name only ever
appears by `os.replace` of a complete, verified `.part` (an atomic rename on POSIX).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from .errors import LocalError
from .sources import PART_SUFFIX

# Bodies up to this size are written, hashed and renamed on the event loop itself: for
# 5,000 x 16 KiB that took a quarter off the run (3.2 s -> 2.4 s, medians of 6 rounds in
# alternating order; sys time halved): a thread hop per file cost more, in futex wake-ups
# and GIL hand-offs, than the ~50 us of syscalls it kept off the loop.
INLINE_BODY = 64 * 1024

# The most buffers one writev takes (Linux: 1024); more fail with EINVAL.
try:
    IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
except (AttributeError, OSError, ValueError):
    IOV_MAX = 1024

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_root(dest: Path) -> int:
    """Create DIR if missing and return a descriptor for it (the user's DIR may be a link)."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        return os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise LocalError(f"cannot use directory {str(dest)!r}: {exc.strerror}",
                         errno=exc.errno) from exc


def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _walk(root_fd: int, parents: list[str], *, create: bool) -> int:
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
        fd = _walk(root_fd, parents, create=False)
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
                entry = [self._walk(parents), 0]
            entry[1] += 1
            self._held[key] = entry  # now the most recent
            self._evict()
            return entry[0]

    def _walk(self, parents: Sequence[str]) -> int:
        # From the deepest directory already held: a new leaf of a held tree is one level.
        for depth in range(len(parents) - 1, 0, -1):
            above = self._held.get("/".join(parents[:depth]))
            if above is not None:
                return _walk(above[0], list(parents[depth:]), create=True)
        return _walk(self._root_fd, list(parents), create=True)

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


class PartFile:
    """A body streaming to `NAME.part`, hashed as it goes, renamed to NAME on commit.

    One PartFile follows an item across its attempts: a retry reopens the same `.part`
    and, when the server resumes, appends to it; the digest of the bytes already there
    is computed once (read back only when they came from an earlier run).

    Each chunk costs one thread hop that writes and hashes it, and that hop runs while
    the event loop receives the next chunk: at most one hop is in flight, so bytes stay
    in order. (One hop per chunk instead of aiofiles' one per call, plus the overlap,
    is what brings large files to the speed of the disk and the hash; see `make bench`.)
    Small bodies skip all that: `install` does open, write, hash, rename in one go, on
    the event loop up to INLINE_BODY and in one hop above it.
    """

    def __init__(self, root_fd: int, path: str, dirs: Dirs | None = None) -> None:
        self.path = path
        *self._parents, self._name = path.split("/")
        self._part = self._name + PART_SUFFIX
        self._root_fd = root_fd
        self._dirs = dirs
        self._dir_fd = -1
        self._dir_held = False  # _dir_fd came from `dirs`, to be given back there
        self._fd = -1
        self._pending: asyncio.Future[None] | None = None
        self._hashes: dict[str, Any] = {"sha256": hashlib.sha256()}
        self._hashed = 0  # how many leading bytes of the .part the hashes cover
        self.size = 0

    @property
    def name(self) -> str:
        return self.path + PART_SUFFIX

    # -- blocking calls: on a worker thread (small bodies: see INLINE_BODY) ---------

    def _open_sync(self, keep: bool) -> int:
        """Walk to the parent without following links, then open the `.part` there."""
        if self._dir_fd < 0:
            # Flat layout: DIR itself, no descriptor of our own to open and close.
            if not self._parents:
                self._dir_fd = self._root_fd
            elif self._dirs is not None:
                self._dir_fd = self._dirs.acquire(self._parents)
                self._dir_held = True
            else:
                self._dir_fd = _walk(self._root_fd, self._parents, create=True)
        # O_NONBLOCK: a FIFO planted at the name fails at once instead of hanging.
        flags = (os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
                 | os.O_NONBLOCK | (0 if keep else os.O_TRUNC))
        try:
            fd = os.open(self._part, flags, 0o666, dir_fd=self._dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO):
                raise
            fd = -1
        if fd >= 0 and not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            fd = -1
        if fd < 0:
            # Not a regular file (a planted link or FIFO): the name is ours, so it goes.
            os.unlink(self._part, dir_fd=self._dir_fd)
            fd = os.open(self._part, flags, 0o666, dir_fd=self._dir_fd)
        return fd

    @staticmethod
    def _absorb_bytes(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def _absorb(self, fd: int, data: bytes) -> None:
        self._absorb_bytes(fd, data)
        for digest in self._hashes.values():
            digest.update(data)

    def _absorb_all(self, fd: int, chunks: list[bytes]) -> None:
        """The chunks as they came off the socket: one writev per IOV_MAX of them, no
        joining copy (a server sending tiny chunks gives many buffers per batch)."""
        for start in range(0, len(chunks), IOV_MAX):
            some = chunks[start:start + IOV_MAX] if len(chunks) > IOV_MAX else chunks
            written = os.writev(fd, some)
            if written < sum(map(len, some)):  # short (disk nearly full, a signal): the rest
                self._absorb_bytes(fd, b"".join(some)[written:])
        for digest in self._hashes.values():
            for chunk in chunks:
                digest.update(chunk)

    def _install_sync(self, data: bytes, mtime: float | None,
                      expected: Sequence[tuple[str, bytes]]) -> int | None:
        """The whole small-body life in one hop; returns the index of the expected digest
        that did not match (then nothing is left), or None once the file is in place."""
        fd = self._open_sync(keep=False)
        try:
            self._absorb(fd, data)
            if mtime is not None:
                os.utime(fd, (mtime, mtime))  # by descriptor: no second path lookup
        except BaseException:
            os.close(fd)
            os.unlink(self._part, dir_fd=self._dir_fd)
            raise
        os.close(fd)
        self._hashed = self.size = len(data)
        failed = self.mismatch(expected)
        if failed is not None:
            os.unlink(self._part, dir_fd=self._dir_fd)
            return failed
        self._install(None)
        return None

    def _install(self, mtime: float | None) -> None:
        if mtime is not None:
            os.utime(self._part, (mtime, mtime), dir_fd=self._dir_fd, follow_symlinks=False)
        os.replace(self._part, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)

    def _hash_prefix(self) -> None:
        fd = os.open(self._part, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
        try:
            offset = self._hashed
            while offset < self.size:
                block = os.pread(fd, min(1 << 20, self.size - offset), offset)
                if not block:
                    raise OSError(errno.EIO, "the .part file shrank while being read")
                for digest in self._hashes.values():
                    digest.update(block)
                offset += len(block)
            self._hashed = offset
        finally:
            os.close(fd)

    def _unlink(self) -> None:
        if self._dir_fd < 0:
            try:
                self._dir_fd = (_walk(self._root_fd, self._parents, create=False)
                                if self._parents else self._root_fd)
            except LocalError:
                return  # no directory of ours there: no .part either
        if self._dir_fd >= 0:
            os.unlink(self._part, dir_fd=self._dir_fd)

    # -- on the event loop ---------------------------------------------------------

    async def open(self, *, keep: bool) -> int:
        """Open the `.part` for appending; `keep` its bytes or start empty. Returns its size."""
        await self.close()
        try:
            self._fd = await self._run(self._open_sync, keep)
            self.size = os.fstat(self._fd).st_size
        except OSError as exc:
            await self._close_dir()
            raise _local(f"cannot create {self.name}", exc) from exc
        if self.size < self._hashed or not keep:
            self._reset_hash()
        return self.size

    async def install(self, data: bytes, *, mtime: float | None,
                      expected: Sequence[tuple[str, bytes]]) -> int | None:
        """Write a whole small body to the `.part`, check it against `expected` digests
        ((hashlib name, digest) pairs) and rename it into place, all in one go.
        Returns the index of a digest that did not match (nothing is then left)."""
        self._reset_hash()
        for algorithm, _ in expected:
            self.want(algorithm)
        try:
            if len(data) <= INLINE_BODY:
                return self._install_sync(data, mtime, expected)
            return cast("int | None", await self._run(self._install_sync, data, mtime, expected))
        except OSError as exc:
            raise _local(f"cannot write {self.name}", exc) from exc
        finally:
            await self._close_dir()

    def _reset_hash(self) -> None:
        self._hashes = {name: hashlib.new(name) for name in self._hashes}
        self._hashed = 0

    def want(self, algorithm: str) -> None:
        """Also compute `algorithm` (a hashlib name) over the whole body."""
        if algorithm not in self._hashes:
            self._hashes[algorithm] = hashlib.new(algorithm)
            self._reset_hash()  # every digest restarts: adopt_prefix reads the prefix once

    def busy(self) -> bool:
        """Chunks handed to the worker thread are still being written."""
        return self._pending is not None and not self._pending.done()

    async def write(self, chunks: list[bytes]) -> None:
        """Hand chunks to the worker thread (written, then hashed) once the previous ones
        are done; a failure shows at the next call, or at `settle`."""
        assert self._fd >= 0
        await self.settle()
        self._pending = asyncio.get_running_loop().run_in_executor(
            None, self._absorb_all, self._fd, chunks)
        size = sum(map(len, chunks))
        self.size += size
        self._hashed += size

    async def settle(self) -> None:
        """Wait for the chunk in flight; its write error, if any, is raised here.

        A cancelled wait leaves the write in flight (a thread cannot be stopped) and
        still pending, so the next settle, before any other write or the close, waits
        for it: bytes stay in order and the descriptor stays open under it."""
        pending = self._pending
        if pending is None:
            return
        try:
            await asyncio.shield(pending)
        except OSError as exc:
            self._pending = None
            raise _local(f"cannot write {self.name}", exc) from exc
        self._pending = None

    async def restart(self) -> None:
        """Throw away the bytes so far: the body starts again from zero."""
        await self.settle()
        try:
            await self._run(os.ftruncate, self._fd, 0)
        except OSError as exc:
            raise _local(f"cannot write {self.name}", exc) from exc
        self.size = 0
        self._reset_hash()

    async def adopt_prefix(self) -> None:
        """The bytes already in the `.part` start the body: bring the digests up to them."""
        await self.settle()
        if self._hashed == self.size:
            return
        await self._run(self._hash_prefix)

    def sha256(self) -> str:
        return str(self._hashes["sha256"].hexdigest())

    def mismatch(self, expected: Sequence[tuple[str, bytes]]) -> int | None:
        """The index of the first (hashlib name, digest) in `expected` that the body so
        far does not hash to, or None when it matches them all."""
        for index, (algorithm, value) in enumerate(expected):
            if self.digest(algorithm) != value:
                return index
        return None

    def digest(self, algorithm: str) -> bytes | None:
        """The raw digest of the body so far, if `algorithm` was wanted."""
        found = self._hashes.get(algorithm)
        return None if found is None else bytes(found.digest())

    async def commit(self, mtime: float | None = None) -> None:
        """Close the `.part` and rename it over the final name (a link there is replaced);
        stamp it with `mtime` (the server's Last-Modified) when given."""
        try:
            await self.settle()
            await self._close_fd()
            await self._run(self._install, mtime)
        except (OSError, LocalError) as exc:
            await self.discard()
            if isinstance(exc, LocalError):
                raise
            raise _local(f"cannot finish {self.path}", exc) from exc
        await self._close_dir()

    async def close(self) -> None:
        """Close the file between attempts; the bytes stay. A failed last write shows in
        the size, which the next open() reads from the disk."""
        try:
            await self.settle()
        except LocalError:
            self.size = -1
        await self._close_fd()

    async def keep(self) -> None:
        """Close the `.part` and leave it for a later attempt or run to resume."""
        try:
            await self.close()
        finally:
            await self._close_dir()

    async def discard(self) -> None:
        """Close and delete the `.part`; nothing of this body is left behind."""
        await self.close()
        try:
            await self._run(self._unlink)
        except OSError:
            pass  # gone already, or its directory is: nothing of it is left to remove
        self.size = 0
        self._reset_hash()
        await self._close_dir()

    async def _close_fd(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    async def _close_dir(self) -> None:
        if self._dir_fd >= 0:
            fd, self._dir_fd = self._dir_fd, -1
            if self._dir_held and self._dirs is not None:
                self._dir_held = False
                self._dirs.release(self._parents)
            elif fd != self._root_fd:
                os.close(fd)

    @staticmethod
    async def _run(func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, func, *args)


def _local(what: str, exc: OSError) -> LocalError:
    return LocalError(f"{what}: {_describe(exc)}", errno=exc.errno)
