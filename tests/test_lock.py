"""One run per DIR: the flock, stale and planted lock files, and the CLI's exit 75."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from aiofetch.errors import LocalError, LockedError
from aiofetch.lock import DirLock

from .conftest import Serve
from .helpers import fetch_processes
from .test_cli import aiofetch, reap, start


def test_acquire_writes_our_pid_and_release_frees(tmp_path: Path) -> None:
    """acquire() holds the lock with our PID in the file; release() lets another take it."""
    path = tmp_path / ".aiofetch.lock"
    lock = DirLock(path)
    lock.acquire()
    try:
        assert path.read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()
    lock.release()  # a second release is harmless
    again = DirLock(path)
    again.acquire()
    again.release()
    assert path.exists()  # the file stays; only the flock comes and goes


def test_second_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    """A second DirLock on a held path raises LockedError with the holder's PID and DIR."""
    path = tmp_path / ".aiofetch.lock"
    first = DirLock(path)
    first.acquire()
    try:
        with pytest.raises(LockedError) as raised:
            DirLock(path).acquire()
        assert raised.value.pid == os.getpid()
        assert str(os.getpid()) in str(raised.value)
        assert str(tmp_path) in str(raised.value)
        assert path.read_text() == f"{os.getpid()}\n"  # the loser did not touch it
    finally:
        first.release()
    second = DirLock(path)
    second.acquire()
    second.release()


def test_stale_lock_file_does_not_block(tmp_path: Path) -> None:
    """A lock file left by a dead process (a PID, no flock) is taken over."""
    path = tmp_path / ".aiofetch.lock"
    path.write_text("4194303999\n")  # longer than ours: the old text must not linger
    lock = DirLock(path)
    lock.acquire()
    try:
        assert path.read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()


def test_garbage_in_lock_file_still_locks(tmp_path: Path) -> None:
    """A held lock whose file holds no PID is reported as held by another process."""
    path = tmp_path / ".aiofetch.lock"
    first = DirLock(path)
    first.acquire()
    try:
        path.write_text("not a pid")
        with pytest.raises(LockedError, match="another process") as raised:
            DirLock(path).acquire()
        assert raised.value.pid is None
    finally:
        first.release()


def test_symlink_at_lock_path_is_not_followed(tmp_path: Path) -> None:
    """A symlink planted at the lock path is refused (LocalError); its target is untouched."""
    target = tmp_path / "precious"
    target.write_text("keep me")
    path = tmp_path / ".aiofetch.lock"
    path.symlink_to(target)
    with pytest.raises(LocalError, match="cannot create lock file"):
        DirLock(path).acquire()
    assert target.read_text() == "keep me"
    dangling = tmp_path / "d" / ".aiofetch.lock"
    dangling.parent.mkdir()
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(LocalError):
        DirLock(dangling).acquire()
    assert not (tmp_path / "nowhere").exists()


class Stall:
    """An app whose /slow waits for `release`; /quick answers at once."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.quick = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/quick", self.fast)
        return app

    async def slow(self, request: web.Request) -> web.Response:
        self.arrived.set()
        await asyncio.wait_for(self.release.wait(), 60)
        return web.Response(body=b"slow body")

    async def fast(self, request: web.Request) -> web.Response:
        self.quick += 1
        return web.Response(body=b"quick body")


@pytest_asyncio.fixture
async def holder(serve: Serve, tmp_path: Path, processes: int
                 ) -> AsyncIterator[tuple[Stall, str, int]]:
    """A real aiofetch run on tmp_path/dir with `processes` fetch processes, stalled
    mid-request: (site, base URL, its PID)."""
    site = Stall()
    server = await serve(site.app())
    base = str(server.make_url("/")).rstrip("/")
    proc = await start(f"{base}/slow", "-d", str(tmp_path / "dir"),
                       "--processes", str(processes))
    try:
        await asyncio.wait_for(site.arrived.wait(), 30)
        assert len(fetch_processes(proc.pid)) == (processes if processes > 1 else 0)
        yield site, base, proc.pid
        site.release.set()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert (tmp_path / "dir" / "slow").read_bytes() == b"slow body"
    finally:
        site.release.set()
        await reap(proc)


async def test_second_run_on_a_locked_dir_exits_75(
    holder: tuple[Stall, str, int], tmp_path: Path, processes: int
) -> None:
    """While one run holds DIR, a second exits 75 at once, naming the first one's PID
    (its main process: fetch processes take no lock)."""
    site, base, pid = holder
    started = time.monotonic()
    ran = await aiofetch(f"{base}/quick", "-d", str(tmp_path / "dir"), "--json",
                         "--processes", str(processes))
    assert time.monotonic() - started < 20
    assert ran.code == 75
    assert str(pid) in ran.err and str(tmp_path / "dir") in ran.err
    assert "Traceback" not in ran.err and len(ran.err.strip().splitlines()) == 1
    assert ran.out == ""
    assert site.quick == 0
    assert not (tmp_path / "dir" / "quick").exists()


async def test_no_lock_lets_a_second_run_proceed(
    holder: tuple[Stall, str, int], tmp_path: Path, processes: int
) -> None:
    """--no-lock runs beside a run that holds the lock."""
    site, base, _ = holder
    ran = await aiofetch(f"{base}/quick", "-d", str(tmp_path / "dir"), "--no-lock",
                         "--processes", str(processes))
    assert ran.code == 0, ran.err
    assert site.quick == 1
    assert (tmp_path / "dir" / "quick").read_bytes() == b"quick body"


@pytest.mark.parametrize("processes", [1], ids=["1proc"])  # a plan fetches nothing
async def test_dry_run_takes_no_lock(holder: tuple[Stall, str, int], tmp_path: Path) -> None:
    """--dry-run plans while another run holds the lock, without any request."""
    site, base, _ = holder
    ran = await aiofetch(f"{base}/quick", "-d", str(tmp_path / "dir"), "--dry-run")
    assert ran.code == 0, ran.err
    assert f"{base}/quick" in ran.out and "quick" in ran.out
    assert site.quick == 0
