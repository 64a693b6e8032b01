"""A fetch process: one event loop, one session, its workers; planned items come in
from the main process and what happens goes back, both in batches (see wire.py).

Forked by forks.py after it has imported this module (and so aiohttp) once: the fetch
processes share those pages instead of importing their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from .config import Config
from .context import Context
from .errors import CannotWriteError
from .events import Event, TransferAdvanced, discard
from .journal import ForwardedWrites, PartRecords
from .loop import run
from .models import Result
from .retry import HostGate
from .routes import load_cookies
from .session import make_session
from .state import State, Validators
from .storage import Dirs, open_root
from .wire import frame, receive, restored
from .workers import Workers

with contextlib.suppress(ImportError):  # the loop loop.run picks: import it here, once,
    import uvloop  # noqa: F401  # in the fork server, not in each fetch process

# What the process has to say waits this long at most, so that many items' news go in
# one frame; a write to the journal or a question goes at once. Every frame wakes the
# main process: at 2 ms, the frames' writes took a sixth of a fetch process's time on
# 16 KiB files (py-spy).
FLUSH_AFTER = 0.01


class Outbox:
    """What this process tells the main process (or a Dask worker the run's owner), in
    order, a frame at a time. Progress bytes of one item between two frames go as one
    event."""

    def __init__(self, send: Callable[[list[tuple[Any, ...]]], Awaitable[None]], *,
                 after: float = 0.0) -> None:
        self._send = send  # one frame of entries (to the main process, or the owner)
        self._after = after or FLUSH_AFTER
        self._entries: list[tuple[Any, ...]] = []
        self._advanced: dict[int, int] = {}
        self._ready = asyncio.Event()
        self._urgent = False
        self.closed = False

    def add(self, entry: tuple[Any, ...], *, urgent: bool = False) -> None:
        if self._advanced:
            self._spill()
        self._entries.append(entry)
        self._urgent = self._urgent or urgent
        self._ready.set()

    def event(self, event: Event) -> None:
        if type(event) is TransferAdvanced:
            self._advanced[event.key] = self._advanced.get(event.key, 0) + event.nbytes
            self._ready.set()
            return
        self.add(("event", event))

    def _spill(self) -> None:
        self._entries.extend(("event", TransferAdvanced(key, nbytes))
                             for key, nbytes in self._advanced.items())
        self._advanced.clear()

    async def send_all(self) -> None:
        """Send what waits, batching for FLUSH_AFTER (or `after`), until cancelled."""
        while True:
            await self._ready.wait()
            if not self._urgent:
                await asyncio.sleep(self._after)
            await self.flush()

    async def flush(self) -> None:
        self._ready.clear()
        self._urgent = False
        if self._advanced:
            self._spill()
        if not self._entries or self.closed:
            return
        entries, self._entries = self._entries, []
        await self._send(entries)


class RemoteRecords(ForwardedWrites):
    """The state journal's `.part` records as a fetch process sees them: read from the
    live journal (read-only), written by the main process, its only writer."""

    def __init__(self, path: os.PathLike[str], outbox: Outbox) -> None:
        super().__init__(outbox)
        self._path = path
        self._state: State | None = None

    def _reader(self) -> State:
        if self._state is None:  # opened on first use: most runs resume nothing
            self._state = State.open(Path(self._path), readonly=True, live=True)
        return self._state

    def close(self) -> None:
        if self._state is not None:
            self._state.close()

    def part_owner(self, path: str) -> str | None:
        return self._reader().part_owner(path)

    def part_validators(self, path: str, url: str) -> Validators | None:
        return self._reader().part_validators(path, url)

    def part_ranges(self, path: str, url: str,
                    ) -> tuple[int, tuple[tuple[int, int], ...]] | None:
        return self._reader().part_ranges(path, url)


class Questions:
    """What a fetch process must ask the run's owner: a --content-disposition name (the
    claims are the owner's), and on a Dask worker, the records of `.part` files it did
    not expect. Each question is an outbox entry; its answer comes back by number."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._numbers = itertools.count()
        self._waiting: dict[int, asyncio.Future[Any]] = {}

    async def ask(self, kind: str, *args: Any) -> Any:
        number = next(self._numbers)
        answer = self._waiting[number] = asyncio.get_running_loop().create_future()
        self._outbox.add((kind, number, *args), urgent=True)
        try:
            return await answer
        finally:
            self._waiting.pop(number, None)

    async def name(self, url: str, name: str, line: str) -> str:
        path: str = await self.ask("claim", url, name, line)
        return path

    def answer(self, number: int, value: Any) -> None:
        waiting = self._waiting.get(number)
        if waiting is not None and not waiting.done():
            waiting.set_result(value)


def main(fd: int) -> None:
    """A fetch process's life, on the socket `fd` to the main process (which sends
    `("start", Config, events)` first). Ends the process."""
    try:
        run(_serve(socket.socket(fileno=fd)))
    finally:
        # No interpreter teardown (as the CLI): everything was flushed and closed.
        os._exit(0)


async def _serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    start = await receive(reader)
    if start is None:
        return  # the main process is gone already
    _, portable_config, events = start
    config = restored(portable_config)

    async def send(entries: list[tuple[Any, ...]]) -> None:
        writer.write(frame(("out", entries)))
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    outbox = Outbox(send)
    sender = asyncio.create_task(outbox.send_all())
    records = (RemoteRecords(config.state_path, outbox)
               if config.state_path is not None else None)
    questions = Questions(outbox)
    try:
        async with fetch_side(config, outbox, records, questions, events=events) as workers:
            tasks = workers.start()
            listener = asyncio.create_task(
                _listen(reader, workers, workers.context.gate, questions, outbox))
            try:
                await asyncio.gather(*tasks)
            finally:
                listener.cancel()
        await outbox.flush()
        if not outbox.closed:  # no goodbye after a failure: the main process sees EOF
            writer.write(frame(("bye",)))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
    finally:
        if records is not None:
            records.close()
        sender.cancel()
        writer.close()


@contextlib.asynccontextmanager
async def fetch_side(config: Config, outbox: Outbox, records: PartRecords | None,
                     questions: Questions, *, events: bool,
                     on_settled: Callable[[tuple[Any, ...]], None] | None = None,
                     ) -> AsyncIterator[Workers]:
    """The workers of a fetch process (or of a run on one Dask worker), with their
    session, DIR and limits, telling the owner everything through `outbox`; each
    settled item's "done" entry also goes to `on_settled`."""
    root_fd = open_root(config.dest)
    resources = contextlib.ExitStack()
    resources.callback(os.close, root_fd)
    with resources:
        cookies = load_cookies(config.cookies) if config.cookies is not None else None
        async with make_session(config) as session:
            dirs = Dirs(root_fd)
            resources.callback(dirs.close)
            context = Context.for_run(
                config, session, root_fd, questions.name, outbox.event if events else discard,
                records, cookies, dirs,
                on_pause=lambda host, seconds: outbox.add(("pause", host, seconds),
                                                          urgent=True))

            async def settled(key: int, result: Result, record: bool,
                              validators: Validators | None) -> None:
                entry = ("done", key, result, record, validators)
                outbox.add(entry)
                if on_settled is not None:
                    on_settled(entry)

            def halt(error: CannotWriteError) -> None:
                outbox.add(("halt", str(error)), urgent=True)

            yield Workers(context, settled, on_halt=halt,
                          on_begin=lambda key: outbox.add(("begin", key)), queue_size=0)


async def _listen(reader: asyncio.StreamReader, workers: Workers, gate: HostGate,
                  questions: Questions, outbox: Outbox) -> None:
    """Take the main process's messages; its end closing (killed, or gone at once on a
    second Ctrl-C) stops everything here too: nothing new starts, in-flight `.part`
    files are kept for the next run."""
    queue = workers.queue
    while (message := await receive(reader)) is not None:
        kind = message[0]
        if kind == "items":
            for item in message[1]:
                queue.put_nowait(item)
        elif kind == "pause":
            gate.hold(message[1], message[2])
        elif kind == "named":
            questions.answer(message[1], message[2])
        elif kind == "end":
            await workers.end()
        elif kind == "stop":
            workers.stop()
    outbox.closed = True  # nobody to tell
    workers.stop()
