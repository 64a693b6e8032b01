"""The run: one ClientSession, a bounded queue fed lazily from the input, N workers.

    input -> feeder (plan: dedupe, name, skip) -> queue(2 x jobs) -> workers -> results
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Sequence

import aiohttp

from .config import Config
from .errors import ItemError
from .events import EventSink, InputDone, ItemSeen, ItemSettled, discard
from .feed import ThreadFeed
from .models import Action, BadLine, Job, Planned, Result, Status
from .naming import Claims
from .planner import Planner
from .registry import SqliteClaimStore
from .sources import parse_line
from .storage import open_root
from .transfer import Context, attempt

Item = str | Job | BadLine
Items = Iterable[Item] | AsyncIterable[Item]

_DONE = object()


def make_session(config: Config) -> aiohttp.ClientSession:
    """The run's one session: bounded connections, stall timeouts, bodies kept as sent."""
    connector = aiohttp.TCPConnector(limit=config.jobs, limit_per_host=config.per_host)
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        read_bufsize=config.chunk_size,
    )


async def _as_jobs(items: Items) -> AsyncIterator[Job | BadLine]:
    """Normalise API input: strings become Jobs (`items:N`); blocking iterables are
    read on a thread so a slow pipe never stalls transfers."""
    source: AsyncIterable[Item]
    feed: ThreadFeed[Item] | None = None
    if isinstance(items, str):
        raise TypeError("items must be an iterable of URLs, not one URL string")
    if isinstance(items, AsyncIterable):
        source = items
    elif isinstance(items, Sequence):
        source = _aiter_plain(items)
    else:
        feed = ThreadFeed(iter(items))
        source = feed
    try:
        number = 0
        async for item in source:
            number += 1
            if isinstance(item, str):
                parsed = parse_line(item, f"items:{number}")
                if parsed is None:
                    continue
                item = parsed
            yield item
    finally:
        if feed is not None:
            feed.close()


async def _aiter_plain(items: Iterable[Item]) -> AsyncIterator[Item]:
    for item in items:
        yield item


class _Run:
    def __init__(self, config: Config, sink: EventSink, root_fd: int,
                 session: aiohttp.ClientSession, claims: Claims) -> None:
        self.config = config
        self.sink = sink
        self.planner = Planner(config, root_fd, claims)
        self.context = Context(config, session, root_fd, claims, sink)
        self.jobs: asyncio.Queue[Planned | None] = asyncio.Queue(maxsize=2 * config.jobs)
        self.results: asyncio.Queue[object] = asyncio.Queue(maxsize=4 * config.jobs)
        self.keys = itertools.count()

    async def settle(self, key: int | None, result: Result) -> None:
        self.sink(ItemSettled(key, result))
        await self.results.put(result)

    async def feed(self, items: Items) -> None:
        count = 0
        try:
            async for item in _as_jobs(items):
                count += 1
                self.sink(ItemSeen(count))
                planned = self.planner.plan(item)
                if isinstance(planned, Result):
                    await self.settle(None, planned)
                elif planned.action is Action.SKIP:
                    job = planned.job
                    await self.settle(None, Result(url=job.url, path=planned.path,
                                                   status=Status.SKIPPED, line=job.line,
                                                   bytes=planned.size))
                else:
                    await self.jobs.put(planned)
        finally:
            self.sink(InputDone(count))
        # Only after a clean end: a cancelled feeder must not wait on a full queue.
        for _ in range(self.config.jobs):
            await self.jobs.put(None)

    async def work(self) -> None:
        while (planned := await self.jobs.get()) is not None:
            key = next(self.keys)
            await self.settle(key, await self.fetch(planned, key))

    async def fetch(self, planned: Planned, key: int) -> Result:
        """Run an item to its end. Retries (issue 3) wrap `attempt` here."""
        job = planned.job
        started = time.monotonic()
        try:
            outcome = await attempt(self.context, planned, key)
        except ItemError as exc:
            return Result(url=job.url, path=exc.path, status=Status.FAILED, line=job.line,
                          http_status=exc.http_status, attempts=1,
                          elapsed_s=round(time.monotonic() - started, 3), error=str(exc))
        return Result(url=job.url, path=outcome.path, status=outcome.status, line=job.line,
                      http_status=outcome.http_status, bytes=outcome.bytes,
                      sha256=outcome.sha256, attempts=1,
                      elapsed_s=round(time.monotonic() - started, 3))

    async def finish(self, tasks: list[asyncio.Task[None]]) -> None:
        try:
            await asyncio.gather(*tasks)
        except BaseException as exc:
            await self.results.put(exc)
        else:
            await self.results.put(_DONE)


async def download(
    items: Items, config: Config | None = None, *, sink: EventSink = discard
) -> AsyncGenerator[Result, None]:
    """Fetch every item and yield a Result for each as it settles (not in input order).

    `items` are URLs, Jobs or BadLines, from a plain or async iterable; a blocking
    iterable such as a file is read on a thread, lazily. Items fail one by one; the run
    itself raises only for what stops everything (DIR unusable, input unreadable).
    """
    config = config or Config()
    root_fd = open_root(config.dest)
    store = SqliteClaimStore()
    tasks: list[asyncio.Task[None]] = []
    try:
        async with make_session(config) as session:
            run = _Run(config, sink, root_fd, session, Claims(store))
            tasks.append(asyncio.create_task(run.feed(items)))
            tasks.extend(asyncio.create_task(run.work()) for _ in range(config.jobs))
            finisher = asyncio.create_task(run.finish(list(tasks)))
            tasks.append(finisher)
            while (result := await run.results.get()) is not _DONE:
                if isinstance(result, BaseException):
                    raise result
                assert isinstance(result, Result)
                yield result
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        store.close()
        os.close(root_fd)


def download_all(
    items: Items, config: Config | None = None, *, sink: EventSink = discard
) -> list[Result]:
    """Blocking wrapper: run `download` on a new event loop and return every Result."""

    async def collect() -> list[Result]:
        return [result async for result in download(items, config, sink=sink)]

    return asyncio.run(collect())
