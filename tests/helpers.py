"""Helpers for tests that run with several fetch processes or a Dask cluster: what a
run chose, which processes a CLI run has, and a server that holds a request while a
test looks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from aiofetch.events import Event, FetchProcesses
from aiofetch.state import State


def swap_every_pair(now: list[str], after: list[str], names: list[str]) -> bool:
    """Whether every two of `names` run in opposite orders in `now` and `after`."""
    return all((now.index(a) < now.index(b)) != (after.index(a) < after.index(b))
               for a in names for b in names if a != b)


def used_processes(events: list[Event]) -> int:
    """The fetch processes a run chose (its one FetchProcesses event)."""
    [count] = [event.count for event in events if isinstance(event, FetchProcesses)]
    return count


def _processes() -> dict[int, tuple[int, str]]:
    """Every process on the machine: pid -> (parent pid, state letter)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        found[int(entry)] = (int(fields[1]), fields[0])
    return found


def command_line(pid: int) -> bytes:
    """`pid`'s command line as /proc has it (empty once it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as line:
            return line.read()
    except OSError:
        return b""


def parent_of(pid: int) -> int | None:
    """`pid`'s parent, while it lives."""
    found = _processes().get(pid)
    return None if found is None else found[0]


def fork_servers(pid: int) -> list[int]:
    """The CLI run `pid`'s own fork servers: its children with its very command line
    (forked off it by forks.prepare, never exec'd)."""
    table = _processes()
    mine = command_line(pid)
    return [child for child, (parent, state) in table.items()
            if parent == pid and state != "Z" and command_line(child) == mine]


def fetch_processes(pid: int) -> list[int]:
    """The live fetch processes of the CLI run `pid`: children of its fork server, that
    is its grandchildren."""
    table = _processes()
    children = {child for child, (parent, _) in table.items() if parent == pid}
    return sorted(child for child, (parent, state) in table.items()
                  if parent in children and state != "Z")


def spawned(pid: int) -> list[int]:
    """The live children of `pid` started by multiprocessing's spawn: a Dask nanny's
    worker process, or the worker processes of a CLI run's `local:N` cluster."""
    table = _processes()
    return sorted(child for child, (parent, state) in table.items()
                  if parent == pid and state != "Z" and b"spawn_main" in command_line(child))


async def all_gone(pids: list[int], timeout: float = 10) -> None:
    """Poll (bounded) until none of `pids` is alive (exited, or a zombie)."""
    deadline = time.monotonic() + timeout
    while True:
        table = _processes()
        alive = [pid for pid in pids if pid in table and table[pid][1] != "Z"]
        if not alive:
            return
        assert time.monotonic() < deadline, f"still running: {alive}"
        await asyncio.sleep(0.01)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Hold:
    """Middleware holding an app's first request until `release` is set, so that a test
    can look at the client while it is mid-run."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    def install(self, app: web.Application) -> web.Application:
        app.middlewares.append(self.middleware)
        return app

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.arrived.is_set():
            self.arrived.set()
            await asyncio.wait_for(self.release.wait(), 60)
        return await handler(request)


async def until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    """Poll `check` (every 10 ms) until it holds, or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def body_of(key: str) -> bytes:
    """What a test host serves at /KEY."""
    return f"body of {key}\n".encode() * 50


@dataclass
class Crowd:
    """A host that counts its requests in flight and records the most at once. Each
    request waits until `gather` are in flight (at most 0.2 s), then a little more, so
    that any request over the limit would be in flight together with them."""

    gather: int
    in_flight: int = 0
    most: int = 0
    served: int = 0
    _full: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{key}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= self.gather:
            self._full.set()
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._full.wait(), 0.2)
            await asyncio.sleep(0.01)  # a slow server: room for any extra request to arrive
            self.served += 1
            return web.Response(body=body_of(request.match_info["key"]))
        finally:
            self.in_flight -= 1
            if self.in_flight < self.gather:
                self._full.clear()


def journalled(dest: Path, path: str, url: str) -> bool:
    """The state journal in `dest` holds a .part record for `path` from `url`."""
    journal = dest / ".aiofetch.db"
    if not journal.exists():
        return False
    state = State.open(journal, readonly=True, live=True)
    try:
        return state.part_validators(path, url) is not None
    finally:
        state.close()
