"""Files inside DIR: probe targets and stream bodies to `.part` files renamed into place.

Every path is walked one component at a time from DIR's file descriptor with O_NOFOLLOW,
so a symlink planted inside DIR is never followed out of it. A final name only ever
appears by `os.replace` of a complete, verified `.part` (an atomic rename on POSIX).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import aiofiles
from aiofiles.threadpool.binary import AsyncBufferedIOBase

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


def complete_stat(root_fd: int, path: str) -> os.stat_result | None:
    """The stat of a complete file at `path`, or None (missing, a symlink, not a file).

    Only aiofetch renames files into final names, and only when complete, so a regular
    file there is a complete one.
    """
    info = _lstat(root_fd, path)
    return info if info is not None and stat.S_ISREG(info.st_mode) else None


def complete_size(root_fd: int, path: str) -> int | None:
    """Size of a complete file at `path`, or None."""
    info = complete_stat(root_fd, path)
    return None if info is None else info.st_size


def part_size(root_fd: int, path: str) -> int | None:
    """Size of the regular `PATH.part` left by an earlier attempt, or None."""
    info = _lstat(root_fd, path + PART_SUFFIX)
    return info.st_size if info is not None and stat.S_ISREG(info.st_mode) else None


class PartFile:
    """A body streaming to `NAME.part`, hashed as it goes, renamed to NAME on commit.

    One PartFile follows an item across its attempts: a retry reopens the same `.part`
    and, when the server resumes, appends to it; the digest of the bytes already there
    is computed once (read back only when they came from an earlier run).
    """

    def __init__(self, root_fd: int, path: str) -> None:
        self.path = path
        *self._parents, self._name = path.split("/")
        self._part = self._name + PART_SUFFIX
        self._root_fd = root_fd
        self._dir_fd = -1
        self._file: AsyncBufferedIOBase | None = None
        self._hashes: dict[str, Any] = {"sha256": hashlib.sha256()}
        self._hashed = 0  # how many leading bytes of the .part the hashes cover
        self.size = 0

    @property
    def name(self) -> str:
        return self.path + PART_SUFFIX

    def _opener(self, name: str, flags: int, *, keep: bool) -> int:
        """Runs on aiofiles' thread: walk to the parent, then open the `.part` there."""
        if self._dir_fd < 0:
            self._dir_fd = _walk(self._root_fd, self._parents, create=True)
        # O_NONBLOCK: a FIFO planted at the name fails at once instead of hanging.
        flags |= os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | (0 if keep else os.O_TRUNC)
        try:
            fd = os.open(name, flags, 0o666, dir_fd=self._dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO):
                raise
            fd = -1
        if fd >= 0 and not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            fd = -1
        if fd < 0:
            # Not a regular file (a planted link or FIFO): the name is ours, so it goes.
            os.unlink(name, dir_fd=self._dir_fd)
            fd = os.open(name, flags, 0o666, dir_fd=self._dir_fd)
        self.size = os.fstat(fd).st_size
        return fd

    async def open(self, *, keep: bool) -> int:
        """Open the `.part` for appending; `keep` its bytes or start empty. Returns its size."""
        await self.close()
        opener = functools.partial(self._opener, keep=keep)
        try:
            self._file = await aiofiles.open(self._part, "ab", opener=opener)
        except OSError as exc:
            await self._close_dir()
            raise _local(f"cannot create {self.name}", exc) from exc
        if self.size < self._hashed or not keep:
            self._reset_hash()
        return self.size

    def _reset_hash(self) -> None:
        self._hashes = {name: hashlib.new(name) for name in self._hashes}
        self._hashed = 0

    def want(self, algorithm: str) -> None:
        """Also compute `algorithm` (a hashlib name) over the whole body."""
        if algorithm not in self._hashes:
            self._hashes[algorithm] = hashlib.new(algorithm)
            self._reset_hash()  # every digest restarts: adopt_prefix reads the prefix once

    def _update(self, data: bytes) -> None:
        for digest in self._hashes.values():
            digest.update(data)

    async def restart(self) -> None:
        """Throw away the bytes so far: the body starts again from zero."""
        assert self._file is not None
        try:
            await self._file.truncate(0)
        except OSError as exc:
            raise _local(f"cannot write {self.name}", exc) from exc
        self.size = 0
        self._reset_hash()

    async def adopt_prefix(self) -> None:
        """The bytes already in the `.part` start the body: bring the digest up to them."""
        if self._hashed == self.size:
            return
        await self._run(self._hash_prefix)

    def _hash_prefix(self) -> None:
        fd = os.open(self._part, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
        try:
            offset = self._hashed
            while offset < self.size:
                block = os.pread(fd, min(1 << 20, self.size - offset), offset)
                if not block:
                    raise OSError(errno.EIO, "the .part file shrank while being read")
                self._update(block)
                offset += len(block)
            self._hashed = offset
        finally:
            os.close(fd)

    async def write(self, chunk: bytes) -> None:
        """Append and hash one chunk; both run off the event loop, side by side."""
        assert self._file is not None
        loop = asyncio.get_running_loop()
        try:
            await asyncio.gather(
                self._file.write(chunk), loop.run_in_executor(None, self._update, chunk)
            )
        except OSError as exc:
            raise _local(f"cannot write {self.name}", exc) from exc
        self.size += len(chunk)
        self._hashed += len(chunk)

    def sha256(self) -> str:
        return str(self._hashes["sha256"].hexdigest())

    def digest(self, algorithm: str) -> bytes | None:
        """The raw digest of the body so far, if `algorithm` was wanted."""
        found = self._hashes.get(algorithm)
        return None if found is None else bytes(found.digest())

    async def commit(self, mtime: float | None = None) -> None:
        """Close the `.part` and rename it over the final name (a link there is replaced);
        stamp it with `mtime` (the server's Last-Modified) when given."""
        try:
            await self._close_file()
            await self._run(self._install, mtime)
        except OSError as exc:
            await self.discard()
            raise _local(f"cannot finish {self.path}", exc) from exc
        await self._close_dir()

    async def close(self) -> None:
        """Close the file between attempts; a failed flush shows in the size check."""
        try:
            await self._close_file()
        except OSError:
            self.size = -1  # unknown: the next open() reads the size from the disk

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

    def _install(self, mtime: float | None) -> None:
        if mtime is not None:
            os.utime(self._part, (mtime, mtime), dir_fd=self._dir_fd, follow_symlinks=False)
        os.replace(self._part, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)

    def _unlink(self) -> None:
        if self._dir_fd < 0:
            try:
                self._dir_fd = _walk(self._root_fd, self._parents, create=False)
            except LocalError:
                return  # no directory of ours there: no .part either
        if self._dir_fd >= 0:
            os.unlink(self._part, dir_fd=self._dir_fd)

    async def _close_file(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            await file.close()

    async def _close_dir(self) -> None:
        if self._dir_fd >= 0:
            fd, self._dir_fd = self._dir_fd, -1
            os.close(fd)

    @staticmethod
    async def _run(func: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(func, *args, **kwargs)
        )


def _local(what: str, exc: OSError) -> LocalError:
    return LocalError(f"{what}: {_describe(exc)}", errno=exc.errno)
