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
        raise LocalError(f"cannot use directory {str(dest)!r}: {exc.strerror}") from exc


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


def complete_size(root_fd: int, path: str) -> int | None:
    """Size of a complete file at `path`, or None (missing, a symlink, or not a file).

    Only aiofetch renames files into final names, and only when complete, so a regular
    file there is a complete one.
    """
    *parents, name = path.split("/")
    try:
        fd = _walk(root_fd, parents, create=False)
    except (OSError, LocalError):
        return None
    if fd < 0:
        return None
    try:
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None
    finally:
        os.close(fd)
    return info.st_size if stat.S_ISREG(info.st_mode) else None


class PartFile:
    """A body streaming to `NAME.part`, hashed as it goes, renamed to NAME on commit."""

    def __init__(self, root_fd: int, path: str) -> None:
        self.path = path
        *self._parents, self._name = path.split("/")
        self._part = self._name + PART_SUFFIX
        self._root_fd = root_fd
        self._dir_fd = -1
        self._file: AsyncBufferedIOBase | None = None
        self._hash = hashlib.sha256()
        self.size = 0

    def _opener(self, name: str, flags: int) -> int:
        """Runs on aiofiles' thread: walk to the parent, then open the `.part` there."""
        self._dir_fd = _walk(self._root_fd, self._parents, create=True)
        flags |= os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(name, flags, 0o666, dir_fd=self._dir_fd)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
        # A symlink at the `.part` name: the name is ours, so the link goes, never followed.
        os.unlink(name, dir_fd=self._dir_fd)
        return os.open(name, flags, 0o666, dir_fd=self._dir_fd)

    async def open(self) -> None:
        try:
            self._file = await aiofiles.open(self._part, "wb", opener=self._opener)
        except OSError as exc:
            await self._close_dir()
            raise LocalError(f"cannot create {self.path}{PART_SUFFIX}: {_describe(exc)}") from exc

    async def write(self, chunk: bytes) -> None:
        """Append and hash one chunk; both run off the event loop, side by side."""
        assert self._file is not None
        loop = asyncio.get_running_loop()
        try:
            await asyncio.gather(
                self._file.write(chunk), loop.run_in_executor(None, self._hash.update, chunk)
            )
        except OSError as exc:
            raise LocalError(f"cannot write {self.path}{PART_SUFFIX}: {_describe(exc)}") from exc
        self.size += len(chunk)

    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def commit(self) -> None:
        """Close the `.part` and rename it over the final name (a link there is replaced)."""
        try:
            await self._close_file()
            await self._run(
                os.replace, self._part, self._name,
                src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd,
            )
        except OSError as exc:
            await self.discard()
            raise LocalError(f"cannot finish {self.path}: {_describe(exc)}") from exc
        await self._close_dir()

    async def discard(self) -> None:
        """Close and delete the `.part`; nothing of this body is left behind."""
        try:
            await self._close_file()
        except OSError:
            pass  # the file is deleted next; a failed flush loses nothing we keep
        if self._dir_fd >= 0:
            try:
                await self._run(os.unlink, self._part, dir_fd=self._dir_fd)
            except FileNotFoundError:
                pass
        await self._close_dir()

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
            None, lambda: func(*args, **kwargs)
        )
