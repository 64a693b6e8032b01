"""The main process's side of several fetch processes: start them, deal planned items
out in batches to whichever has room, take back their news in batches, and carry what
one process says that concerns all (a Retry-After pause) to the others.

A fetch process that dies (SIGKILL, the OOM killer) does not hang the run: its items
that had started are tried once more elsewhere (the lost attempt counts), the others
go elsewhere as they are; when none is left, the run stops with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import forks
from .config import Config
from .errors import AiofetchError, CannotWriteError, ProcessError
from .events import EventSink
from .models import Planned, Result, Status
from .processes import share
from .state import Validators
from .wire import frame, portable, receive

if TYPE_CHECKING:
    from .workers import Keyed

# Items in one frame at most.
BATCH = 64
# Items a fetch process holds beyond twice its --jobs: enough for the time its results
# take to come back (fetcher.FLUSH_AFTER) at a few thousand small files a second.
ROOM = 64


class Owner(Protocol):
    """What the pool needs of the run it fetches for (engine._Run)."""

    config: Config
    sink: EventSink
    jobs: asyncio.Queue[Keyed | None]

    async def finished(self, key: int, result: Result, record: bool,
                       validators: Validators | None) -> None: ...

    def journal(self, method: str, args: tuple[Any, ...]) -> None: ...

    def claim(self, url: str, name: str, line: str) -> str: ...

    def halt(self, error: AiofetchError) -> None: ...


@dataclass(eq=False)
class _Child:
    number: int  # from 1, as messages name it
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    room: int  # items it may hold: its jobs, as many again queued, and ROOM more
    outstanding: dict[int, Planned] = field(default_factory=dict)
    begun: set[int] = field(default_factory=set)
    alive: bool = True
    ended: bool = False  # told "end" or "stop": sends nothing more

    @property
    def free(self) -> int:
        return self.room - len(self.outstanding)

    def send(self, message: object) -> None:
        if self.alive:
            self.writer.write(frame(message))


class _Forks:
    """The fork server of a run and what it says of its fetch processes' ends: a fork
    server prepared by the CLI (forks.prepare), or a fresh `python -m aiofetch.forks`."""

    def __init__(self, lines: asyncio.StreamReader, wait: Callable[[], Awaitable[object]],
                 kill: Callable[[], None]) -> None:
        self._lines = lines
        self.wait = wait  # until the fork server has ended
        self.kill = kill
        self.statuses: dict[int, int] = {}  # index -> wait status
        self._news = asyncio.Event()

    async def listen(self) -> None:
        async for line in self._lines:
            with contextlib.suppress(ValueError):
                index, status = map(int, line.split())
                self.statuses[index] = status
                self._news.set()

    async def status(self, index: int, timeout: float = 5.0) -> int | None:
        """How fetch process `index` ended (a wait status), once the fork server knows."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._heard(index), timeout)
        return self.statuses.get(index)

    async def _heard(self, index: int) -> None:
        while index not in self.statuses:
            self._news.clear()
            await self._news.wait()


async def _spawn(count: int) -> tuple[_Forks, list[socket.socket]]:
    """Start `count` fetch processes, each on a socket pair; our ends are returned."""
    pairs = [socket.socketpair() for _ in range(count)]
    theirs = [pair[1].fileno() for pair in pairs]
    try:
        prepared = forks.take_prepared()
        if prepared is not None:
            prepared.fork(theirs)
            lines, writer = await asyncio.open_connection(sock=prepared.sock)

            async def wait_prepared() -> None:
                writer.close()  # the fork server goes once its fetch processes have
                await asyncio.to_thread(os.waitpid, prepared.pid, 0)

            def kill_prepared() -> None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(prepared.pid, signal.SIGKILL)

            made = _Forks(lines, wait_prepared, kill_prepared)
        else:
            made = await _fresh_fork_server(theirs)
    finally:
        for _, their in pairs:
            their.close()
    return made, [ours for ours, _ in pairs]


async def _fresh_fork_server(fds: list[int]) -> _Forks:
    # The package's directory first, so the new interpreter imports this very aiofetch.
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiofetch.forks", *map(str, fds), pass_fds=fds,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, env=env)
    assert process.stdout is not None

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()

    return _Forks(process.stdout, process.wait, kill)


class Pool:
    """`count` fetch processes working for one run."""

    def __init__(self, owner: Owner, count: int, *, events: bool) -> None:
        self.owner = owner
        self.count = count
        self.events = events
        self.children: list[_Child] = []
        self.stopping = False
        self.input_done = False
        self._room = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self.forks: _Forks | None = None
        self.starting: asyncio.Task[None] | None = None  # start(), once asked for

    async def start(self) -> None:
        """Start the fork server and the fetch processes, and give each its options."""
        config = self.owner.config
        try:
            self.forks, sockets = await _spawn(self.count)
        except OSError as exc:
            raise ProcessError(f"cannot start fetch processes: {exc}") from exc
        for index, sock in enumerate(sockets):
            mine = share(config, self.count, index)
            reader, writer = await asyncio.open_connection(sock=sock)
            child = _Child(index + 1, reader, writer, room=2 * mine.jobs + ROOM)
            child.send(("start", portable(mine), self.events))
            self.children.append(child)

    async def run(self, prefix: Sequence[Keyed], ended: bool) -> None:
        """Once started (`starting`), fetch `prefix`, then what comes on the owner's
        queue (unless the input has `ended`), until all is settled."""
        assert self.starting is not None
        await self.starting
        assert self.forks is not None
        self.input_done = ended
        watcher = asyncio.create_task(self.forks.listen())
        listeners = [asyncio.create_task(self._listen(child)) for child in self.children]
        tasks = list(listeners)
        if self.stopping:  # stopped while the processes started
            self._stop_children()
        else:
            self._dispatcher = asyncio.create_task(self._dispatch(deque(prefix)))
            tasks.append(self._dispatcher)
        try:
            await asyncio.gather(*listeners)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for child in self.children:
                child.writer.close()
            await self._reap(watcher)

    def stop(self) -> None:
        """Interrupted: nothing new starts; in-flight items in every process end as
        `interrupted` with their `.part` kept. Queued items get no report line."""
        if self.stopping:
            return
        self.stopping = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            self._stop_children()

    def _stop_children(self) -> None:
        for child in self.children:
            if not child.ended:
                child.ended = True
                child.send(("stop",))

    async def _more(self, pending: deque[Keyed]) -> bool:
        """Wait until `pending` holds items to deal out (True), or the input has ended
        and all is dealt out (False, once what ends the dealing is done)."""
        while not pending:
            if self.input_done:
                self._end_if_done()
                return False
            self.input_done = await gather_batch(self.owner.jobs, pending)
        return True

    async def _dispatch(self, pending: deque[Keyed]) -> None:
        while await self._more(pending):
            child = await self._roomiest()
            if child is None:
                return  # every process died: _lost has failed what was left
            # What is pending is shared among the processes with room: a short list all
            # given to the first one would run at its share of --jobs and --per-host.
            sharing = sum(1 for other in self.children if other.alive and other.free > 0)
            take = min(max(child.free, 1), -(-len(pending) // max(sharing, 1)), BATCH)
            self._give(child, [pending.popleft() for _ in range(take)])

    async def _roomiest(self) -> _Child | None:
        """The live process with the most room, once one has any."""
        while True:
            alive = [child for child in self.children if child.alive]
            if not alive:
                return None
            best = max(alive, key=lambda child: child.free)
            if best.free > 0:
                return best
            self._room.clear()
            await self._room.wait()

    def _give(self, child: _Child, batch: list[Keyed]) -> None:
        for key, planned in batch:
            child.outstanding[key] = planned
        child.send(("items", batch))

    @property
    def settled(self) -> bool:
        """The input is done and every item dealt out has settled."""
        return self.input_done and not any(child.outstanding for child in self.children)

    def _end_if_done(self) -> None:
        """Once everything has settled, the processes may go."""
        if not self.settled:
            return
        for child in self.children:
            if not child.ended:
                child.ended = True
                child.send(("end",))

    async def _listen(self, child: _Child) -> None:
        while (message := await receive(child.reader)) is not None:
            if message[0] == "out":
                for entry in message[1]:
                    await self._take(child, entry)
            elif message[0] == "bye":
                break
        else:
            await self._lost(child)
        child.alive = False
        self._room.set()

    async def _take(self, child: _Child, entry: tuple[Any, ...]) -> None:
        kind = entry[0]
        owner = self.owner
        if kind == "event":
            owner.sink(entry[1])
        elif kind == "done":
            _, key, result, record, validators = entry
            child.outstanding.pop(key, None)
            child.begun.discard(key)
            self._room.set()
            await owner.finished(key, result, record, validators)
            self._end_if_done()
        elif kind == "begin":
            child.begun.add(entry[1])
        elif kind == "journal":
            owner.journal(entry[1], entry[2])
        elif kind == "pause":
            for other in self.children:
                if other is not child:
                    other.send(entry)
        elif kind == "claim":
            _, number, url, name, line = entry
            child.send(("named", number, owner.claim(url, name, line)))
        elif kind == "halt":
            owner.halt(CannotWriteError(entry[1]))

    async def _lost(self, child: _Child) -> None:
        """`child` is gone without its goodbye: what it held goes elsewhere or fails."""
        child.alive = False
        assert self.forks is not None
        status = await self.forks.status(child.number - 1)
        reason = f"fetch process {child.number} {_ended(status)}"
        lost, child.outstanding = child.outstanding, {}
        survivors = [other for other in self.children if other.alive and not other.ended]
        again: list[Keyed] = []
        for key, planned in lost.items():
            started = key in child.begun
            if survivors and not self.stopping and not (started and planned.attempts):
                if started:
                    planned = dataclasses.replace(planned, attempts=planned.attempts + 1)
                again.append((key, planned))
            elif started or not self.stopping:
                await self.owner.finished(key, _failed(planned, reason), True, None)
        child.begun.clear()
        for index, item in enumerate(again):
            self._give(survivors[index % len(survivors)], [item])
        if not survivors and not self.stopping and not self.settled:
            self.owner.halt(ProcessError(f"stopping: {reason}, and no fetch process is left"))
        self._room.set()
        self._end_if_done()

    async def _reap(self, watcher: asyncio.Task[None]) -> None:
        """Wait for the fork server, which ends when its fetch processes have; one that
        does not end when told (it should not happen) is killed."""
        assert self.forks is not None
        try:
            await asyncio.wait_for(self.forks.wait(), 10)
        except asyncio.TimeoutError:
            self.forks.kill()
            await self.forks.wait()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


async def gather_batch(jobs: asyncio.Queue[Keyed | None], pending: deque[Keyed],
                       most: int = BATCH) -> bool:
    """Move what the owner's queue holds into `pending`: at least one item (waiting for
    it), until it holds `most`. Returns True once the queue's end (None) has come."""
    item = await jobs.get()
    while item is not None:
        pending.append(item)
        if len(pending) >= most or jobs.empty():
            return False
        item = jobs.get_nowait()
    return True


def _failed(planned: Planned, reason: str) -> Result:
    job = planned.job
    return Result(url=job.url, path=planned.path, status=Status.FAILED, line=job.line,
                  attempts=planned.attempts + 1, error=f"{reason} while fetching it")


def _ended(status: int | None) -> str:
    """How a fetch process ended, in words: 'was killed by SIGKILL', 'exited with 1'."""
    if status is None:
        return "stopped answering"
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with {code}"
