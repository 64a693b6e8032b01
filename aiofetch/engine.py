"""The run: one ClientSession, a bounded queue fed lazily from the input, N workers.

    input -> feeder (plan: dedupe, name, skip) -> queue(2 x jobs) -> workers -> results
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import itertools
import os
import ssl
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Sequence,
)
from datetime import datetime, timezone
from typing import Any, TypeVar

import aiohttp

from .config import Config
from .context import Context
from .errors import (
    AiofetchError,
    CannotWriteError,
    ItemError,
    LocalError,
    TransferError,
    UsageError,
)
from .events import EventSink, InputDone, ItemSeen, ItemSettled, Retrying, discard
from .feed import ThreadFeed
from .lock import DirLock
from .models import Action, BadLine, Job, Planned, Result, Status, new_run_id
from .naming import Claims
from .planner import Planner
from .registry import RunClaimStore
from .retry import HostGate, with_retries
from .routes import Routes, load_cookies
from .slots import HostSlots
from .sources import parse_line
from .state import BATCH_SECONDS, State, Validators
from .storage import Dirs, open_root
from .throttle import Throttle
from .transfer import Download, Outcome

T = TypeVar("T")
Item = str | Job | BadLine
Items = Iterable[Item] | AsyncIterable[Item]

_DONE = object()


# aiohttp's read buffer per connection (it pauses the socket at twice this). Bodies are
# taken from it as the socket's buffers and batched up to Config.chunk_size for a write:
# 64 KiB instead of 256 KiB took 32 transfers of 1 MiB files from 64 to 57 MiB peak RSS,
# at the same speed on 1 MiB and 256 MiB files.
READ_BUFFER = 64 * 1024


def make_session(config: Config) -> aiohttp.ClientSession:
    """The run's one session: bounded connections, stall timeouts, bodies kept as sent."""
    # -j downloads at once, each over up to --split connections (pieces take only the
    # --per-host slots nobody waits for: see slots.py).
    connector = aiohttp.TCPConnector(
        limit=config.jobs * config.split.connections, limit_per_host=config.per_host,
        ssl=_tls(config)
    )
    read_size = READ_BUFFER
    if config.rate_limit:  # small reads keep a rate limit smooth
        read_size = min(read_size, Throttle(config.rate_limit).read_size)
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers={"User-Agent": config.user_agent, "Accept-Encoding": "identity"},
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        read_bufsize=read_size,
        # Proxies from the environment and ~/.netrc: once per host, by Routes.
    )


def _tls(config: Config) -> ssl.SSLContext | bool:
    """aiohttp's default context unless a CA bundle or client certificate is given."""
    if config.cert is None:
        if config.insecure:
            return False
        if config.ca_bundle is None:
            return True
    try:
        context = ssl.create_default_context(
            cafile=str(config.ca_bundle) if config.ca_bundle is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot use --ca-bundle {str(config.ca_bundle)!r}: {exc}") from exc
    if config.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.cert is not None:
        key = str(config.key) if config.key is not None else None
        try:
            # No passphrase prompt: a run under cron has no one to answer it.
            context.load_cert_chain(str(config.cert), key, password=_no_passphrase)
        except (OSError, ssl.SSLError, ValueError) as exc:
            named = f"--cert {str(config.cert)!r}" + (
                f" / --key {key!r}" if key is not None else "")
            raise UsageError(f"cannot use {named}: {_tls_reason(exc)}") from exc
    return context


def _no_passphrase() -> str:
    raise ValueError("the key is encrypted (aiofetch takes keys without a passphrase)")


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


# Items planned together (one state query): small enough that the results queue, which
# holds up to 32 such batches of settled items, stays a few MB.
BATCH = 128


async def _as_batches(items: Items, size: int = BATCH) -> AsyncIterator[list[Job | BadLine]]:
    """Normalise API input into batches, in order: strings become Jobs (`items:N`);
    blocking iterables are read on a thread so a slow pipe never stalls transfers, and
    each batch is what has arrived (a slow pipe's line comes alone, at once)."""
    batches: AsyncIterable[Sequence[Item]]
    feed: ThreadFeed[Item] | None = None
    if isinstance(items, str):
        raise TypeError("items must be an iterable of URLs, not one URL string")
    if isinstance(items, AsyncIterable):
        batches = _singles(items)
    elif isinstance(items, Sequence):
        batches = _slices(items, size)
    else:
        feed = ThreadFeed(iter(items))
        batches = feed.batches(size)
    try:
        number = 0
        async for batch in batches:
            jobs: list[Job | BadLine] = []
            for item in batch:
                number += 1
                if isinstance(item, str):
                    parsed = parse_line(item, f"items:{number}")
                    if parsed is None:
                        continue
                    item = parsed
                jobs.append(item)
            if jobs:
                yield jobs
    finally:
        if feed is not None:
            feed.close()


async def _singles(items: AsyncIterable[Item]) -> AsyncIterator[Sequence[Item]]:
    async for item in items:
        yield (item,)


async def _slices(items: Sequence[Item], size: int) -> AsyncIterator[Sequence[Item]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# Failing writes with these errors, several items in a row, mean DIR takes nothing.
_CANNOT_WRITE = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM})
_CANNOT_WRITE_STREAK = 3


class _Run:
    """The tasks of one run and what they share."""

    def __init__(self, config: Config, sink: EventSink, context: Context) -> None:
        self.config = config
        self.sink = sink
        self.context = context
        self.id = new_run_id()
        self.planner = Planner(config, context.root_fd, context.claims, context.state)
        self.gate = context.gate
        self.jobs: asyncio.Queue[Planned | None] = asyncio.Queue(maxsize=2 * config.jobs)
        # Results, or lists of them (settle_many): bounded in entries, so a few MB at most.
        self.results: asyncio.Queue[object] = asyncio.Queue(maxsize=min(4 * config.jobs, 32))
        self.keys = itertools.count()
        self.in_flight: set[asyncio.Task[Result]] = set()
        self.feeder: asyncio.Task[None] | None = None
        self.stopping = False
        self.halted: AiofetchError | None = None
        self._write_failures = 0

    def stop(self) -> None:
        """No new work; in-flight items end as `interrupted`, keeping their `.part`."""
        if self.stopping:
            return
        self.stopping = True
        if self.feeder is not None:
            self.feeder.cancel()
        while not self.jobs.empty():  # queued, never started: they get no report line
            self.jobs.get_nowait()
        for _ in range(self.config.jobs):
            self.jobs.put_nowait(None)
        current = asyncio.current_task()  # stop() may come from an item's own task
        for task in self.in_flight:
            if task is not current:
                task.cancel()

    def _stamp(self, key: int | None, result: Result, now: datetime) -> Result:
        if result.run is None:
            result = dataclasses.replace(result, run=self.id, time=now)
        self.sink(ItemSettled(key, result))
        return result

    async def settle(self, key: int | None, result: Result) -> None:
        await self.results.put(self._stamp(key, result, datetime.now(timezone.utc)))

    async def settle_many(self, results: list[Result], now: datetime) -> None:
        """Items of one batch settled without a transfer (skips, duplicates, bad lines),
        at `now`, in one queue hand-over: a rerun settles nearly every item so."""
        await self.results.put([self._stamp(None, result, now) for result in results])

    def skipped(self, planned: Planned, now: datetime) -> Result:
        """The result of an item the planner found done, stamped as it is made (a copy
        to stamp it, dataclasses.replace, cost 2.7 us an item)."""
        job = planned.job
        result = Result(url=job.url, path=planned.path, status=Status.SKIPPED, line=job.line,
                        bytes=planned.size, sha256=planned.sha256, run=self.id, time=now)
        if not planned.journalled:  # unchanged records are not rewritten
            self.record(result)
        return result

    async def feed(self, items: Items) -> None:
        try:
            await self._feed(items)
            for _ in range(self.config.jobs):
                await self.jobs.put(None)
        except asyncio.CancelledError:
            if not self.stopping:  # stop() sends the workers home itself
                raise

    async def _feed(self, items: Items) -> None:
        count = 0
        try:
            async for batch in _as_batches(items):
                # Other shards' items are None.
                plans = [plan for plan in self.planner.plan_many(batch) if plan is not None]
                if not plans:
                    continue
                count += len(plans)
                self.sink(ItemSeen(count))
                settled: list[Result] = []
                now = datetime.now(timezone.utc)
                for planned in plans:
                    if isinstance(planned, Result):
                        settled.append(planned)
                    elif planned.action is Action.SKIP:
                        settled.append(self.skipped(planned, now))
                    else:
                        if settled and self.jobs.full():  # settled items do not wait
                            await self.settle_many(settled, now)
                            settled = []
                        await self.jobs.put(planned)
                if settled:
                    await self.settle_many(settled, now)
        finally:
            self.sink(InputDone(count))

    def record(self, result: Result, validators: Validators | None = None) -> None:
        """Journal how an item settled (its file, its validators); batched by the state."""
        state = self.context.state
        if state is None or result.path is None:
            return
        state.record(result.url, result.path, result.status.value,
                     http_status=result.http_status, size=result.bytes, sha256=result.sha256,
                     validators=validators, complete=result.status is Status.OK)

    async def work(self) -> None:
        while (planned := await self.jobs.get()) is not None and not self.stopping:
            key = next(self.keys)
            task = asyncio.create_task(self.fetch(planned, key))
            self.in_flight.add(task)
            try:
                result = await task
            except asyncio.CancelledError:
                if not (self.stopping and task.cancelled()):
                    raise
                continue  # stopped before it began: never started, no report line
            finally:
                self.in_flight.discard(task)
            await self.settle(key, result)

    async def fetch(self, planned: Planned, key: int) -> Result:
        """Run one item to its end: attempts, retries, and what is left on disk."""
        job = planned.job
        download = Download(self.context, planned, key)
        started = time.monotonic()

        def result(status: Status, **fields: Any) -> Result:
            fields.setdefault("http_status", download.http_status)
            return Result(url=job.url, path=download.path, status=status, line=job.line,
                          attempts=download.attempts,
                          elapsed_s=round(time.monotonic() - started, 3), **fields)

        def on_retry(attempt: int, delay: float, error: ItemError) -> None:
            self.sink(Retrying(key, job.url, job.line, attempt, delay, str(error)))

        try:
            outcome = await self._attempts(download, on_retry)
        except ItemError as exc:
            await download.settle_part(keep=exc.transient)
            self._count_write_failure(exc)
            error = str(exc)
            if download.attempts > 1:
                error += f" after {download.attempts} attempts"
            failed = result(Status.FAILED, error=error,
                            http_status=exc.http_status or download.http_status)
            self.record(failed)
            return failed
        except asyncio.CancelledError:
            await download.settle_part(keep=True)
            if not self.stopping:
                raise
            interrupted = result(Status.INTERRUPTED, error="interrupted")
            self.record(interrupted)
            return interrupted
        self._write_failures = 0
        done = result(outcome.status, http_status=outcome.http_status, bytes=outcome.bytes,
                      sha256=outcome.sha256, connections=download.connections,
                      source=download.source)
        if not (outcome.status is Status.NOT_MODIFIED and planned.journalled
                and outcome.validators == Validators(planned.etag, planned.modified)):
            self.record(done, outcome.validators)  # a 304 that changes nothing is not
        return done

    async def _attempts(self, download: Download,
                        on_retry: Callable[[int, float, ItemError], None]) -> Outcome:
        """The item's attempts and the waits between them, within --max-time if set."""
        policy = self.config.retry
        attempts = self._sources(download, on_retry)
        if policy.max_time is None:
            return await attempts
        try:
            return await asyncio.wait_for(attempts, policy.max_time)
        except asyncio.TimeoutError as exc:  # attempts convert their own timeouts
            # Like a stall: the bytes so far are kept for a resume, but the time is spent.
            error = TransferError(f"took longer than --max-time {policy.max_time:g}s",
                                  http_status=download.http_status)
            error.path = download.path
            raise error from exc

    async def _sources(self, download: Download,
                       on_retry: Callable[[int, float, ItemError], None]) -> Outcome:
        """The item's URL with its retries, then each mirror with its own, in turn; the
        error of an item that failed everywhere names each URL's."""
        failures: list[str] = []
        while True:
            before = download.attempts

            def spent(before: int = before) -> int:
                return download.attempts - before

            try:
                return await with_retries(download.attempt, self.config.retry,
                                          host=download.host, gate=self.gate,
                                          on_retry=on_retry,
                                          spent=spent)
            except ItemError as exc:
                if isinstance(exc, LocalError) or len(download.urls) == 1:
                    raise  # DIR's trouble: another URL would not help
                failures.append(f"{download.asked}: {exc}")
                if not download.next_mirror():
                    error = type(exc)(f"all {len(failures)} URLs failed: "
                                      + "; ".join(failures), http_status=exc.http_status)
                    error.path = exc.path
                    raise error from exc

    def _count_write_failure(self, exc: ItemError) -> None:
        if not (isinstance(exc, LocalError) and exc.errno in _CANNOT_WRITE):
            return
        self._write_failures += 1
        if self._write_failures >= _CANNOT_WRITE_STREAK and self.halted is None:
            self.halted = CannotWriteError(
                f"stopping: {self._write_failures} items in a row could not be written "
                f"({exc})")
            self.stop()

    async def finish(self, tasks: list[asyncio.Task[None]]) -> None:
        try:
            await asyncio.gather(*tasks)
        except BaseException as exc:
            await self.results.put(exc)
        else:
            await self.results.put(_DONE)


async def download(
    items: Items,
    config: Config | None = None,
    *,
    sink: EventSink = discard,
    stop: asyncio.Event | None = None,
) -> AsyncGenerator[Result, None]:
    """Fetch every item and yield a Result for each as it settles (not in input order).

    `items` are URLs, Jobs or BadLines, from a plain or async iterable; a blocking
    iterable such as a file is read on a thread, lazily. Items fail one by one; the run
    itself raises only for what stops everything (DIR unusable or locked, input
    unreadable, state unusable, writes failing item after item).

    Setting `stop` (say, from a signal handler) ends the run early: nothing new starts,
    items in flight settle as `interrupted` with their `.part` kept, then the
    generator ends.
    """
    config = config or Config()
    cookies = load_cookies(config.cookies) if config.cookies is not None else None
    root_fd = open_root(config.dest)
    resources = contextlib.ExitStack()
    tasks: list[asyncio.Task[None]] = []
    try:
        if config.lock:
            lock = DirLock(config.lock_path)
            lock.acquire()
            resources.callback(lock.release)
        state = None
        if config.state_path is not None:
            state = State.open(config.state_path)
            resources.callback(state.close)
        store = RunClaimStore()
        resources.callback(store.close)
        claims = Claims(store)
        throttle = Throttle(config.rate_limit) if config.rate_limit else None
        async with make_session(config) as session:
            dirs = Dirs(root_fd)
            resources.callback(dirs.close)
            context = Context(config, session, root_fd, claims, sink, state, throttle,
                              Routes(config.proxy, cookies), dirs,
                              slots=HostSlots(config.per_host),
                              gate=HostGate(spacing=config.politeness.wait,
                                            jitter=config.politeness.random_wait))
            run = _Run(config, sink, context)
            resources.callback(run.planner.close)
            run.feeder = asyncio.create_task(run.feed(items))
            tasks.append(run.feeder)
            tasks.extend(asyncio.create_task(run.work()) for _ in range(config.jobs))
            tasks.append(asyncio.create_task(run.finish(list(tasks))))
            if stop is not None:
                tasks.append(asyncio.create_task(_watch(stop, run)))
            if state is not None:
                tasks.append(asyncio.create_task(_journal(state)))
            while (result := await run.results.get()) is not _DONE:
                if isinstance(result, list):
                    for each in result:
                        yield each
                    continue
                if isinstance(result, BaseException):
                    raise result
                assert isinstance(result, Result)
                yield result
            if run.halted is not None:
                raise run.halted
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        resources.close()
        os.close(root_fd)


async def _watch(stop: asyncio.Event, run: _Run) -> None:
    await stop.wait()
    run.stop()


async def _journal(state: State) -> None:
    """Flush results that have waited a batch period, even when no new result comes."""
    while True:
        await asyncio.sleep(BATCH_SECONDS)
        state.flush_if_due()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a new event loop: uvloop's where it is installed
    (it takes a fifth off the time of many small files), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def download_all(
    items: Items, config: Config | None = None, *, sink: EventSink = discard
) -> list[Result]:
    """Blocking wrapper: run `download` on a new event loop and return every Result."""

    async def collect() -> list[Result]:
        return [result async for result in download(items, config, sink=sink)]

    return run(collect())
