"""The run: the input read lazily and planned, the fetching, the results.

    input -> feeder (plan: dedupe, name, skip) -> queue(2 x jobs) -> fetchers -> results

The fetchers are N worker coroutines around one session in this process, or fetch
processes that each run such a pool (pool.py); this process alone plans, names, writes
the state journal and settles results.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.cookiejar
import itertools
import os
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Sequence,
)
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from .config import Config
from .errors import AiofetchError, StateError
from .events import (
    EventSink,
    FetchProcesses,
    InputDone,
    ItemSeen,
    ItemSettled,
    discard,
    wants_transfers,
)
from .feed import ThreadFeed
from .forks import is_prepared
from .lock import DirLock
from .models import Action, BadLine, Job, Planned, Result, Status, new_run_id
from .naming import Claims
from .planner import Planner
from .pool import Pool
from .processes import (
    AUTO_WINDOW,
    auto_min_items,
    auto_processes,
    most_processes,
    usable_cores,
)
from .registry import RunClaimStore
from .routes import load_cookies
from .sources import parse_line
from .state import BATCH_SECONDS, State, Validators
from .storage import Dirs, open_root

if TYPE_CHECKING:
    from .cluster import Cluster
    from .task import PartRecord
    from .workers import Keyed, Workers

Cookies = http.cookiejar.CookieJar
T = TypeVar("T")
Item = str | Job | BadLine
Items = Iterable[Item] | AsyncIterable[Item]

_DONE = object()


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


class _Run:
    """The main process's side of one run: input, planning, the journal, results; the
    fetching itself is done here (one process) or by a Pool of fetch processes."""

    def __init__(self, config: Config, sink: EventSink, *, root_fd: int, claims: Claims,
                 state: State | None, cookies: Cookies | None) -> None:
        self.config = config
        self.sink = sink
        self.root_fd = root_fd
        self.state = state
        self.cookies = cookies
        self.id = new_run_id()
        self.planner = Planner(config, root_fd, claims, state)
        # Planned items waiting for a worker or a fetch process: enough for fetch
        # processes to get theirs in batches.
        self.jobs: asyncio.Queue[Keyed | None] = asyncio.Queue(maxsize=max(2 * config.jobs, 256))
        # Results, or lists of them (settle_many): bounded in entries, so a few MB at most.
        self.results: asyncio.Queue[object] = asyncio.Queue(maxsize=min(4 * config.jobs, 32))
        self.keys = itertools.count()
        self.feeder: asyncio.Task[None] | None = None
        # This process's workers, the pool, or the cluster: what stop() tells.
        self.fetchers: list[Workers | Pool | Cluster] = []
        self.stopping = False
        self.halted: AiofetchError | None = None

    def stop(self) -> None:
        """No new work; in-flight items end as `interrupted`, keeping their `.part`."""
        if self.stopping:
            return
        self.stopping = True
        if self.feeder is not None:
            self.feeder.cancel()
        while not self.jobs.empty():  # queued, never started: they get no report line
            self.jobs.get_nowait()
        self.jobs.put_nowait(None)
        for fetchers in self.fetchers:
            fetchers.stop()

    def halt(self, error: AiofetchError) -> None:
        """Something stops the whole run (DIR takes no writes, no fetch process left)."""
        if self.halted is None:
            self.halted = error
        self.stop()

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

    async def finished(self, key: int, result: Result, record: bool,
                       validators: Validators | None) -> None:
        """A fetched item settled (here or in a fetch process)."""
        if record:
            self.record(result, validators)
        await self.settle(key, result)

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
            await self.jobs.put(None)
        except asyncio.CancelledError:
            if not self.stopping:  # stop() sends the fetchers home itself
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
                        await self.jobs.put((next(self.keys), planned))
                if settled:
                    await self.settle_many(settled, now)
        finally:
            self.sink(InputDone(count))

    def record(self, result: Result, validators: Validators | None = None) -> None:
        """Journal how an item settled (its file, its validators); batched by the state."""
        state = self.state
        if state is None or result.path is None:
            return
        state.record(result.url, result.path, result.status.value,
                     http_status=result.http_status, size=result.bytes, sha256=result.sha256,
                     validators=validators, complete=result.status is Status.OK)

    def journal(self, method: str, args: tuple[Any, ...]) -> None:
        """A fetch process's write to the `.part` records (this process is the journal's
        only writer). Best effort, as there: a journal that cannot be written only costs
        a resume."""
        if self.state is not None and method in _PART_WRITES:
            with contextlib.suppress(StateError):
                getattr(self.state, method)(*args)

    def part_records(self, pairs: Iterable[tuple[str, str]]) -> dict[str, PartRecord]:
        """What the journal holds of these (path, url) `.part` files, for a cluster's
        workers, which cannot read it: {path: (url, validators, ranges)}."""
        state = self.state
        records: dict[str, PartRecord] = {}
        if state is None:
            return records
        with contextlib.suppress(StateError):
            for path, url in pairs:
                owner = state.part_owner(path)
                if owner is not None:
                    records[path] = (owner, state.part_validators(path, owner),
                                     state.part_ranges(path, owner) if owner == url else None)
        return records

    def claim(self, url: str, name: str, line: str) -> str:
        """The path for a name a response gave (--content-disposition)."""
        return self.planner.claims.claim(url, name, line)[0]

    async def name(self, url: str, name: str, line: str) -> str:
        return self.claim(url, name, line)

    async def fetch(self) -> None:
        """Fetch everything the feeder plans: in this process, or in fetch processes
        (--processes N), or (auto) here at once, and in fetch processes once the list
        proves long and they are ready: they take over what has not begun here."""
        config = self.config
        if config.dask is not None:
            from .cluster import Cluster

            cluster = Cluster(self, config.dask, events=wants_transfers(self.sink))
            self.fetchers.append(cluster)
            await cluster.run()
            return
        count = config.processes
        auto = count is None
        if count is None:
            count = auto_processes(config, usable_cores())
        count = min(count, most_processes(config))
        if count == 1:
            self._chose(1)
            await self._fetch_here(None)
            return
        pool = Pool(self, count, events=wants_transfers(self.sink))
        self.fetchers.append(pool)
        if auto:
            left, ended = await self._fetch_here(pool)
            if pool.starting is None:
                return  # the list was short: all done here
        else:
            self._chose(count)
            pool.starting = asyncio.create_task(pool.start())
            left, ended = [], False
        await pool.run(left, ended)

    def _chose(self, count: int) -> None:
        self.sink(FetchProcesses(count))

    async def _fetch_here(self, pool: Pool | None) -> tuple[list[Keyed], bool]:
        """Fetch in this process until the input ends, or (auto, with a `pool`) until the
        list proves long and the pool has started: then the items not begun here are
        returned for the pool, once every item begun here has settled (so the two never
        exceed the limits per host together). Returns them, and whether the input ended."""
        # aiohttp is imported here, not at the top: with fetch processes, this process
        # needs it only for what it fetches while they start.
        from .context import Context
        from .session import make_session
        from .workers import Workers

        config = self.config
        async with make_session(config) as session:
            dirs = Dirs(self.root_fd)
            try:
                context = Context.for_run(config, session, self.root_fd, self.name,
                                          self.sink, self.state, self.cookies, dirs)
                workers = Workers(context, self.finished, on_halt=self.halt)
                self.fetchers.append(workers)
                tasks = workers.start()
                ended = await self._pass_on(workers.queue, pool)
                left: list[Keyed] = []
                while not (ended or self.stopping or workers.queue.empty()):
                    item = workers.queue.get_nowait()  # not begun here: the pool's
                    if item is not None:
                        left.append(item)
                if not self.stopping:
                    await workers.end()
                await asyncio.gather(*tasks)
                self.fetchers.remove(workers)
                return left, ended
            finally:
                dirs.close()

    async def _pass_on(self, queue: asyncio.Queue[Keyed | None], pool: Pool | None) -> bool:
        """What the feeder plans, to this process's workers, until the input ends (True)
        or `pool` is ready to take over (False). The pool is started when enough items
        to fetch come within AUTO_WINDOW s of the first (auto's rule, processes.py)."""
        jobs = self.jobs
        enough = auto_min_items(is_prepared())
        deciding = pool is not None  # until the list shows whether it is long
        seen = 0
        deadline = 0.0
        getting: asyncio.Task[Keyed | None] | None = None
        try:
            while not self.stopping:
                if pool is not None and pool.starting is not None and pool.starting.done():
                    pool.starting.result()  # raises what kept the processes from starting
                    return False
                if not jobs.empty():  # no task per item while the feeder keeps up
                    item = jobs.get_nowait()
                elif pool is None or pool.starting is None:
                    item = await jobs.get()
                else:  # wait for an item or for the pool, whichever comes first
                    getting = asyncio.ensure_future(jobs.get())
                    await asyncio.wait({getting, pool.starting},
                                       return_when=asyncio.FIRST_COMPLETED)
                    if not getting.done():
                        getting.cancel()
                        getting = None
                        continue
                    item, getting = getting.result(), None
                if item is None:
                    if deciding:
                        self._chose(1)
                    return True
                if deciding:
                    assert pool is not None
                    seen += 1
                    now = time.monotonic()
                    if seen == 1:
                        deadline = now + AUTO_WINDOW
                    if now > deadline:  # the list comes slowly: one process it is
                        deciding = False
                        self._chose(1)
                    elif seen >= enough:
                        deciding = False
                        self._chose(pool.count)
                        pool.starting = asyncio.create_task(pool.start())
                await queue.put(item)
            return True
        finally:
            if getting is not None:
                getting.cancel()

    async def finish(self, tasks: list[asyncio.Task[None]]) -> None:
        try:
            await asyncio.gather(*tasks)
        except BaseException as exc:
            await self.results.put(exc)
        else:
            await self.results.put(_DONE)


_PART_WRITES = frozenset({"remember_part", "remember_ranges", "forget_part"})


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
    unreadable, state unusable, writes failing item after item, no fetch process left).

    Setting `stop` (say, from a signal handler) ends the run early: nothing new starts,
    items in flight settle as `interrupted` with their `.part` kept, then the
    generator ends.
    """
    config = config or Config()
    cookies = load_cookies(config.cookies) if config.cookies is not None else None
    if config.ca_bundle is not None or config.cert is not None:
        from .session import tls_context

        tls_context(config)  # a bad --ca-bundle or --cert: a usage error before anything
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
        run = _Run(config, sink, root_fd=root_fd, claims=Claims(store), state=state,
                   cookies=cookies)
        resources.callback(run.planner.close)
        run.feeder = asyncio.create_task(run.feed(items))
        tasks.append(run.feeder)
        tasks.append(asyncio.create_task(run.fetch()))
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


def download_all(
    items: Items, config: Config | None = None, *, sink: EventSink = discard
) -> list[Result]:
    """Blocking wrapper: run `download` on a new event loop and return every Result."""

    async def collect() -> list[Result]:
        return [result async for result in download(items, config, sink=sink)]

    from .loop import run

    return run(collect())
