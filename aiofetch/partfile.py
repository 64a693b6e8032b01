"""A body streaming to `NAME.part` beside its target, hashed as it goes, renamed to NAME
only when complete and verified (`os.replace`, atomic on POSIX)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Sequence
from typing import Any, cast

from .errors import LocalError
from .sources import PART_SUFFIX
from .storage import Dirs, describe, walk

# Bodies up to this size are written, hashed and renamed on the event loop itself: for
# 5,000 x 16 KiB that took a quarter off the run (3.2 s -> 2.4 s, medians of 6 rounds in
# alternating order; sys time halved): a thread hop per file cost more, in futex wake-ups
# and GIL hand-offs, than the ~50 us of syscalls it kept off the loop.
INLINE_BODY = 64 * 1024

# On a `.part` that a split download wrote past gaps: how many leading bytes are whole.
SPLIT_MARK = "user.aiofetch.prefix"

# The most buffers one writev takes (Linux: 1024); more fail with EINVAL.
try:
    IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
except (AttributeError, OSError, ValueError):
    IOV_MAX = 1024

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
        self._pfd = -1  # a second descriptor, without O_APPEND, for pieces at offsets
        self._marked = False  # may carry SPLIT_MARK (set here, or found on a resumed .part)
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
                self._dir_fd = walk(self._root_fd, self._parents, create=True)
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
        self.hash_through(self.size)

    def hash_through(self, end: int) -> None:
        """Bring the digests up to byte `end` by reading the `.part` back (the page cache
        has the bytes just written: a memory copy, ~0.1 s a GiB here, besides the hash)."""
        try:
            self._read_back(end)
        except OSError as exc:
            raise _local(f"cannot read {self.name}", exc) from exc

    def _read_back(self, end: int) -> None:
        fd = os.open(self._part, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
        buffer = bytearray(min(1 << 20, max(end - self._hashed, 0)))  # one, reused
        view = memoryview(buffer)
        try:
            offset = self._hashed
            while offset < end:
                got = os.preadv(fd, [view[:end - offset]], offset)
                if not got:
                    raise OSError(errno.EIO, "the .part file shrank while being read")
                for digest in self._hashes.values():
                    digest.update(view[:got])
                offset += got
                self._hashed = offset
        finally:
            os.close(fd)

    def write_at(self, offset: int, chunks: list[bytes]) -> None:
        """Write chunks at `offset` (pwritev: pieces of a split file land out of order,
        from several threads at once). Hashing is the caller's: see `hash_chunks`."""
        try:
            self._write_at(offset, chunks)
        except OSError as exc:
            raise _local(f"cannot write {self.name}", exc) from exc

    def _write_at(self, offset: int, chunks: list[bytes]) -> None:
        fd = self._pfd
        for start in range(0, len(chunks), IOV_MAX):
            some = chunks[start:start + IOV_MAX] if len(chunks) > IOV_MAX else chunks
            size = sum(map(len, some))
            written = os.pwritev(fd, some, offset)
            if written < size:  # short (disk nearly full, a signal): the rest, joined
                rest = memoryview(b"".join(some))[written:]
                while rest:
                    done = os.pwrite(fd, rest, offset + written)
                    rest, written = rest[done:], written + done
            offset += size

    def hash_chunks(self, chunks: list[bytes]) -> None:
        """The next bytes after the hashed prefix, from memory."""
        for digest in self._hashes.values():
            for chunk in chunks:
                digest.update(chunk)
        self._hashed += sum(map(len, chunks))

    @property
    def hashed(self) -> int:
        """How many leading bytes the digests cover."""
        return self._hashed

    def _unlink(self) -> None:
        if self._dir_fd < 0:
            try:
                self._dir_fd = (walk(self._root_fd, self._parents, create=False)
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
        if keep:
            self._marked = True  # an earlier split run's mark goes before the rename
        else:
            self._unmark()
        return self.size

    async def spread(self) -> None:
        """Get ready for pieces written at offsets (`write_at`, from worker threads)."""
        await self.settle()
        if self._pfd < 0:
            try:
                self._pfd = await self._run(self._open_positional)
            except OSError as exc:
                raise _local(f"cannot write {self.name}", exc) from exc

    def _open_positional(self) -> int:
        fd = os.open(self._part, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
        if not os.path.samestat(os.fstat(fd), os.fstat(self._fd)):
            os.close(fd)  # the name was swapped under us: refuse rather than write elsewhere
            raise OSError(errno.ESTALE, "the .part file was replaced")
        return fd

    def mark(self, prefix: int) -> bool:
        """Say on the `.part` itself (an extended attribute) that only its first `prefix`
        bytes are known to be whole: a split download writes past gaps, and a run
        without the state journal would otherwise resume from the end. False when the
        file system keeps no extended attributes."""
        try:
            os.setxattr(self._fd, SPLIT_MARK, str(prefix).encode())
        except OSError:
            return False
        self._marked = True
        return True

    def _unmark(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):  # ENODATA: no mark; ENOTSUP: none can be
                os.removexattr(self._fd, SPLIT_MARK)
        self._marked = False

    async def truncate(self, size: int) -> None:
        """Keep only the first `size` bytes (the provable prefix of a split .part)."""
        await self.settle()
        try:
            await self._run(os.ftruncate, self._fd, size)
        except OSError as exc:
            raise _local(f"cannot write {self.name}", exc) from exc
        self.size = size
        if self._hashed > size:
            self._reset_hash()
        self._unmark()

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
        self._unmark()

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
            if self._marked:
                self._unmark()
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
        if self._pfd >= 0:
            fd, self._pfd = self._pfd, -1
            os.close(fd)
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


def split_mark(root_fd: int, path: str) -> int | None:
    """The provable prefix a split download left marked on PATH.part, if any."""
    *parents, name = path.split("/")
    dir_fd = root_fd
    try:
        if parents:
            dir_fd = walk(root_fd, parents, create=False)
        fd = os.open(name + PART_SUFFIX, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC, dir_fd=dir_fd)
    except (OSError, LocalError):
        return None
    finally:
        if dir_fd != root_fd:
            os.close(dir_fd)
    try:
        value = os.getxattr(fd, SPLIT_MARK)
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(value) if value.isdigit() else 0


def _local(what: str, exc: OSError) -> LocalError:
    return LocalError(f"{what}: {describe(exc)}", errno=exc.errno)
