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
import multiprocessing
import signal
import socket
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, Protocol

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
    process: BaseProcess
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    room: int  # items it may hold: its jobs, and as many again queued (plus a margin)
    outstanding: dict[int, Planned] = field(default_factory=dict)
    begun: set[int] = field(default_factory=set)
    alive: bool = True
    ended: bool = False  # told "end" or "stop": sends nothing more
    peak_rss_kib: int | None = None

    @property
    def free(self) -> int:
        return self.room - len(self.outstanding)

    def send(self, message: object) -> None:
        if self.alive:
            self.writer.write(frame(message))


def _fetch_process(sock: socket.socket, config: Config, events: bool) -> None:
    """A fetch process's start (fetcher.main, imported there: never in this process)."""
    from .fetcher import main

    main(sock, config, events)


def _spawn(config: Config, count: int, events: bool,
           ) -> list[tuple[BaseProcess, socket.socket, int]]:
    """Start `count` fetch processes from the fork server (booting it the first time:
    a blocking call, made on a thread)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["aiofetch.fetcher", "aiofetch.pool"])
    started: list[tuple[BaseProcess, socket.socket, int]] = []
    for index in range(count):
        mine = share(config, count, index)
        ours, theirs = socket.socketpair()
        process = context.Process(target=_fetch_process, args=(theirs, portable(mine), events),
                                  name=f"aiofetch-fetch-{index + 1}")
        try:
            process.start()
        finally:
            theirs.close()
        started.append((process, ours, 2 * mine.jobs + 16))
    return started


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

    async def run(self, prefix: Sequence[Keyed], ended: bool) -> None:
        """Fetch `prefix`, then what comes on the owner's queue, until all is settled."""
        self.input_done = ended
        try:
            started = await asyncio.to_thread(_spawn, self.owner.config, self.count,
                                              self.events)
        except (OSError, RuntimeError, ValueError) as exc:  # ValueError: no forkserver here
            raise ProcessError(f"cannot start fetch processes: {exc}") from exc
        for number, (process, sock, room) in enumerate(started, 1):
            reader, writer = await asyncio.open_connection(sock=sock)
            self.children.append(_Child(number, process, reader, writer, room))
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
            await asyncio.to_thread(self._reap)

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

    @property
    def peak_rss_kib(self) -> list[int | None]:
        """Each fetch process's peak RSS, as it reported at its end."""
        return [child.peak_rss_kib for child in self.children]

    async def _dispatch(self, pending: deque[Keyed]) -> None:
        jobs = self.owner.jobs
        while True:
            if not pending:
                if self.input_done:
                    self._end_if_done()
                    return
                first = await jobs.get()
                while first is not None:
                    pending.append(first)
                    if len(pending) >= BATCH or jobs.empty():
                        break
                    first = jobs.get_nowait()
                if first is None:
                    self.input_done = True
                    if not pending:
                        continue
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

    def _end_if_done(self) -> None:
        """Once the input is done and every item has settled, the processes may go."""
        if not self.input_done or any(child.outstanding for child in self.children):
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
                child.peak_rss_kib = message[1]
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
        why = await asyncio.to_thread(_exit_of, child.process)
        reason = f"fetch process {child.number} {why}"
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
        if not survivors and not self.stopping and not self.input_done_and_settled:
            self.owner.halt(ProcessError(f"stopping: {reason}, and no fetch process is left"))
        self._room.set()
        self._end_if_done()

    @property
    def input_done_and_settled(self) -> bool:
        return self.input_done and not any(child.outstanding for child in self.children)

    def _reap(self) -> None:
        for child in self.children:
            child.process.join(5)
            if child.process.exitcode is None:  # should not happen: it was told to go
                child.process.kill()
                child.process.join()


def _failed(planned: Planned, reason: str) -> Result:
    job = planned.job
    return Result(url=job.url, path=planned.path, status=Status.FAILED, line=job.line,
                  attempts=planned.attempts + 1, error=f"{reason} while fetching it")


def _exit_of(process: BaseProcess) -> str:
    """How a fetch process ended, in words: 'was killed by SIGKILL', 'exited with 1'."""
    process.join(5)
    code = process.exitcode
    if code is None:
        with contextlib.suppress(OSError):
            process.kill()
        process.join(5)
        return "stopped answering"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with {code}"
